"""The LLM judge over real HTTP against a fake OpenAI-compatible server on 127.0.0.1 that injects faults.

Checked: retries on 500 / 429 / timeouts; unparsable and failed replies are counted in n_failed and never
scored; the cache holds only good replies and a second run makes no call for them; one fresh
conversation per request with temperature 0 and the run's seed; the API key appears in no output, cache
file, log or error message; `--judge none` is reported as off.
"""
from __future__ import annotations

import json
import logging
import socket
import uuid
from pathlib import Path

import pytest
from PIL import Image

from judge_server import FakeJudge  # noqa: E402

from unifybench.data.schema import KNOWLEDGE_GEN, TEXT_QA, VQA, Benchmark, Concept, Item, Prediction  # noqa: E402
from unifybench.errors import UserError  # noqa: E402
from unifybench.evaluators.base import EvalContext  # noqa: E402
from unifybench.evaluators.judge_qa import JudgeQA  # noqa: E402
from unifybench.evaluators.knowledge import KnowledgeT2I  # noqa: E402
from unifybench.judge import JudgeCache, JudgeClient, JudgeUnavailable, parse_score, request_key  # noqa: E402
from unifybench.runspec import RunSpec  # noqa: E402
from unifybench.scoring import score  # noqa: E402
from unifybench.store import write_json  # noqa: E402

MODEL = "fake-judge"
SEED = 7
FAST = {"timeout": 0.5, "backoff": 0.01, "max_retries": 2, "workers": 4}
BO = Concept(name="bo", category="pet", class_noun="dog")
MAM = Concept(name="mam", category="pet", class_noun="cat")


class Bench(Benchmark):
    name = "judge-test"

    def __init__(self, items: dict[str, list[Item]], concepts: list[Concept]):
        self._items, self._concepts = items, concepts

    def concepts(self):
        return self._concepts

    def items(self, concept):
        return self._items.get(concept.name, [])


@pytest.fixture
def key(monkeypatch):
    secret = f"sk-unifybench-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("UNIFYBENCH_JUDGE_API_KEY", secret)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return secret


def qa(concept: str, key: str, question: str, answer: str, task: str = TEXT_QA) -> Item:
    return Item(id=f"t/{concept}/{task}/{key}", concept=concept, task=task, prompt=question, answer=answer)


def pred(item: Item, text: str | None = None, error: str | None = None, images=()) -> Prediction:
    return Prediction(item.id, item.concept, item.task, item.prompt, text=text, error=error, images=list(images))


# (key, question, reference, answer, expected score or "failed")
QA_CASES = [
    ("exact", "What colour is <sks>'s collar?", "Red.", "red", 1.0),
    ("partial", "What does <sks> play with?", "A yellow rubber duckie.", "some yellow toy", 0.5),
    ("wrong", "What colour are <sks>'s eyes?", "Blue.", "Green.", 0.0),
    ("e500", "Where does <sks> sleep? FAULT:500x2", "On the sofa.", "on the sofa", 1.0),
    ("e429", "Who feeds <sks>? FAULT:429x1", "Anna.", "anna", 1.0),
    ("slow", "When does <sks> walk? FAULT:slowx1", "At dawn.", "at dawn", 1.0),
    ("garbage", "Is <sks> friendly? FAULT:garbage", "Yes.", "yes", "failed"),
    ("down", "How old is <sks>? FAULT:500", "Four.", "four", "failed"),
    ("leak", "What breed is <sks>? FAULT:echo-auth", "Shiba.", "shiba", "failed"),
    ("empty", "What is <sks>'s name?", "Bo.", "", 0.0),
    ("moderr", "Where was <sks> born?", "Hanoi.", None, "failed"),
]


def qa_setup():
    items = {"bo": [qa("bo", k, q, a, VQA if i % 2 else TEXT_QA) for i, (k, q, a, _, _) in enumerate(QA_CASES)],
             "mam": [qa("mam", "a", "What does <sks> eat?", "Fish."), qa("mam", "b", "Colour of <sks>?", "Grey.")]}
    preds = {"bo": [pred(it, text=ans) if ans is not None else pred(it, error="CUDA out of memory")
                    for it, (_, _, _, ans, _) in zip(items["bo"], QA_CASES)],
             "mam": [pred(items["mam"][0], text="fish"), pred(items["mam"][1], text="black")]}
    return Bench(items, [BO, MAM]), items, preds


def run_score(bench, preds, evaluator, out: Path, cache: Path, base_url: str | None, enabled: bool = True):
    spec = RunSpec(method="predictions", output_dir=out, cache_dir=cache, seed=SEED, judge_base_url=base_url,
                   judge_model=MODEL, judge_enabled=enabled)
    results = score(bench, bench.concepts(), preds, [evaluator], out, spec)
    doc = {"results": results, "evaluator_environment": {evaluator.name: evaluator.environment()},
           "config": {"evaluators": {evaluator.name: evaluator.describe()}}}
    write_json(out / "results.json", doc)
    return results.get(evaluator.name), doc


def all_text(*roots: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for r in roots for p in sorted(Path(r).rglob("*")) if p.is_file())


def test_parse_score():
    good = {"1": 1.0, "0": 0.0, "0.5": 0.5, " 1.0\n": 1.0, ".5": 0.5, "0.50": 0.5, "Score: 1": 1.0,
            "score:0": 0.0, "**1**": 1.0, "`0.5`": 0.5, "1.": 1.0}
    for reply, value in good.items():
        assert parse_score(reply) == value, reply
    for reply in ["", "yes", "0.7", "2", "10", "1/2", "Score: 1. The answer is right.", "0.5 or 1", "-1", None]:
        assert parse_score(reply) is None, reply


def test_qa_with_faults_counts_failures_caches_only_good_replies_and_never_leaks_the_key(
        tmp_path, key, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bench, items, preds = qa_setup()
    out, cache = tmp_path / "run", tmp_path / "cache"
    with FakeJudge(expected_key=key, model=MODEL, seed=SEED) as judge:
        res, doc = run_score(bench, preds, JudgeQA(**FAST), out, cache, judge.base_url)
        assert not judge.violations, judge.violations
        first_requests = judge.n_requests
        # bo: 9 items reach the server; 500x2 takes 3 attempts, 429x1 and slowx1 take 2, the permanent
        # 500 takes 1 + max_retries; mam: 2 items.
        assert first_requests == (9 - 4 + 3 + 2 + 2 + 3) + 2

        bo_scores = {row["id"].split("/")[-1]: row for row in map(json.loads, (out / "samples" / "judge_qa.jsonl").read_text().splitlines())
                     if row["concept"] == "bo"}
        for k, *_, expected in QA_CASES:
            row = bo_scores[k]
            if expected == "failed":
                assert row["score"] is None and row["failed"], k
            else:
                assert row["score"] == expected and "failed" not in row, k
        assert "unparsable" in bo_scores["garbage"]["failed"]
        assert "after 3 attempts" in bo_scores["down"]["failed"]
        assert bo_scores["moderr"]["failed"].startswith("model error")

        bo_value = (1 + 0.5 + 0 + 1 + 1 + 1 + 0) / 7
        mam_value = (1 + 0) / 2
        assert res["per_concept"] == {"bo": pytest.approx(bo_value), "mam": pytest.approx(mam_value)}
        assert res["value"] == pytest.approx((bo_value + mam_value) / 2)
        assert res["n"] == 9 and res["n_failed"] == 4
        stats = doc["evaluator_environment"]["judge_qa"]["judge"]
        assert stats["calls"] == 11 and stats["requests"] == first_requests and stats["cache_hits"] == 0
        assert stats["failures"] == 3 and stats["unparsable"] == 1 and stats["retries"] == first_requests - 11
        assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] == 9   # one per 200 reply
        assert stats["api_key_env"] == "UNIFYBENCH_JUDGE_API_KEY" and stats["model"] == MODEL
        assert res["judge"]["model"] == MODEL and res["judge"]["prompt_version"] == "qa-v1"

        # The cache holds exactly the good replies, each a score.
        records = [json.loads(line) for line in (cache / "judge" / "replies.jsonl").read_text().splitlines()]
        assert len(records) == 8 and all(r["value"] in (0.0, 0.5, 1.0) for r in records)
        assert {r["label"].split("/")[-1] for r in records} == {"exact", "partial", "wrong", "e500", "e429", "slow", "a", "b"}
        assert not any("mostly fine" in r["reply"] for r in records)

        # Second run, fresh evaluator and client: cached replies make no call; only the failures are retried.
        judge.reset_counts()
        res2, _ = run_score(bench, preds, JudgeQA(**FAST), tmp_path / "run2", cache, judge.base_url)
        asked = {json.dumps(r["messages"]) for r in judge.requests}
        assert len(asked) == 3 and judge.n_requests == 1 + 3 + 1          # garbage, down (3 tries), leak
        assert all(("FAULT:garbage" in a or "FAULT:500\\" in a or "FAULT:echo-auth" in a) for a in asked)
        assert res2["value"] == pytest.approx(res["value"]) and res2["n_failed"] == 4
        assert res2["judge"]["cache_hits"] == 8 and res2["judge"]["calls"] == 3

    # The key went to the server (it checked the header) but is nowhere in outputs, cache, logs or errors.
    assert "leak" in bo_scores and "***" in bo_scores["leak"]["failed"]
    captured = capsys.readouterr()
    for text in (all_text(out, tmp_path / "run2", cache), caplog.text, captured.out, captured.err, json.dumps(doc)):
        assert key not in text


def test_rerun_of_a_clean_run_makes_zero_calls(tmp_path, key):
    bench, items, preds = qa_setup()
    clean = {"bo": preds["bo"][:3], "mam": preds["mam"]}
    with FakeJudge(expected_key=key, model=MODEL, seed=SEED) as judge:
        res1, _ = run_score(bench, clean, JudgeQA(**FAST), tmp_path / "r1", tmp_path / "cache", judge.base_url)
        assert judge.n_requests == 5 and res1["n_failed"] == 0
        judge.reset_counts()
        res2, _ = run_score(bench, clean, JudgeQA(**FAST), tmp_path / "r2", tmp_path / "cache", judge.base_url)
        assert judge.n_requests == 0
    assert res2["value"] == res1["value"] and res2["per_concept"] == res1["per_concept"]
    assert res2["judge"]["calls"] == 0 and res2["judge"]["cache_hits"] == 5


def test_every_request_is_a_fresh_conversation_with_temperature_0_and_the_seed(tmp_path, key):
    bench, items, preds = qa_setup()
    clean = {"bo": preds["bo"][:3]}
    with FakeJudge(expected_key=key, model=MODEL, seed=SEED) as judge:
        run_score(bench, clean, JudgeQA(**{**FAST, "workers": 1}), tmp_path / "r", tmp_path / "cache", judge.base_url)
        assert not judge.violations
        bodies = list(judge.requests)
    assert len(bodies) == 3
    for body, case in zip(bodies, QA_CASES[:3]):
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["temperature"] == 0 and body["seed"] == SEED and body["model"] == MODEL
        user = body["messages"][1]["content"]
        assert "<sks>" not in user and "<bo>" in user                 # the concept as UnifyBench writes it
        assert f"Reference answer: {case[2]}" in user and f"Candidate answer: {case[3]}" in user
    assert bodies[0]["messages"][0] == bodies[2]["messages"][0]      # the same versioned system prompt


def test_judge_off_scores_nothing_and_says_so(tmp_path, key):
    bench, items, preds = qa_setup()
    with FakeJudge(expected_key=key, model=MODEL) as judge:
        ev = JudgeQA(**FAST)
        res, doc = run_score(bench, preds, ev, tmp_path / "r", tmp_path / "cache", judge.base_url, enabled=False)
        assert judge.n_requests == 0
    assert res["off"] is True and res["value"] is None and res["n"] == 0 and res["n_failed"] == 0
    assert ev.environment()["off"] is True
    assert not (tmp_path / "cache" / "judge").exists()


def test_missing_server_or_model_is_a_user_error(tmp_path):
    bench, items, preds = qa_setup()
    ctx = EvalContext(run_dir=tmp_path, cache_dir=tmp_path, judge_base_url=None, judge_model=MODEL)
    with pytest.raises(UserError, match="--judge-base-url"):
        JudgeQA().score(BO, items["bo"], {p.id: p for p in preds["bo"]}, ctx)
    ctx = EvalContext(run_dir=tmp_path, cache_dir=tmp_path, judge_base_url="http://127.0.0.1:9/v1", judge_model=None)
    with pytest.raises(UserError, match="--judge-model"):
        JudgeQA().score(BO, items["bo"], {p.id: p for p in preds["bo"]}, ctx)
    with pytest.raises(UserError, match="prompt version"):
        JudgeQA(prompt_version="qa-v0")


def test_unreachable_server_stops_the_run(tmp_path, key):
    with socket.socket() as s:             # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = JudgeClient(f"http://127.0.0.1:{port}/v1", MODEL, cache_dir=tmp_path, timeout=0.5, max_retries=1,
                         backoff=0.01, max_consecutive_failures=3)
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert not client.ask(msgs, "qa-v1", parse_score).ok
    assert not client.ask(msgs, "qa-v1", parse_score).ok
    with pytest.raises(JudgeUnavailable, match="3 requests in a row") as e:
        client.ask(msgs, "qa-v1", parse_score)
    assert key not in str(e.value)
    assert client.stats()["requests"] == 6 and client.stats()["failures"] == 3
    with pytest.raises(JudgeUnavailable):                     # stopped: no further request is even tried
        client.ask(msgs, "qa-v1", parse_score)
    assert client.stats()["requests"] == 6
    # Through the evaluator with a queue of 40 requests: it stops after a few, not after 40 x retries.
    bench, items, preds = qa_setup()
    many = [qa("bo", str(i), f"Question {i} about <sks>?", "Yes.") for i in range(40)]
    ev = JudgeQA(**{**FAST, "max_consecutive_failures": 3})
    ctx = EvalContext(run_dir=tmp_path, cache_dir=tmp_path, judge_base_url=f"http://127.0.0.1:{port}/v1",
                      judge_model=MODEL)
    with pytest.raises(JudgeUnavailable):
        ev.score(BO, many, {i.id: pred(i, text="yes") for i in many}, ctx)
    assert ev.environment()["judge"]["requests"] <= 3 * 8     # at most a few rounds of 4 workers


def test_wrong_key_stops_the_run_without_showing_the_key(tmp_path, key):
    with FakeJudge(expected_key="sk-the-right-one", model=MODEL) as judge:
        client = JudgeClient(judge.base_url, MODEL, cache_dir=tmp_path, timeout=2, backoff=0.01)
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        with pytest.raises(JudgeUnavailable, match="refused") as e:
            client.ask(msgs, "qa-v1", parse_score)
        assert judge.n_requests == 1                                   # a 401 is not retried
    assert key not in str(e.value) and key not in repr(e.value)


def test_cache_key_and_torn_log(tmp_path):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "x"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    other = json.loads(json.dumps(msgs))
    other[0]["content"][1]["image_url"]["url"] = "data:image/png;base64,AAAB"
    s = {"temperature": 0.0, "seed": 0, "max_tokens": 16}
    k = request_key("m", "v1", s, msgs)
    assert k == request_key("m", "v1", s, json.loads(json.dumps(msgs)))
    assert len({k, request_key("m2", "v1", s, msgs), request_key("m", "v2", s, msgs),
                request_key("m", "v1", {**s, "seed": 1}, msgs), request_key("m", "v1", s, other)}) == 5
    path = tmp_path / "replies.jsonl"
    JudgeCache(path).put({"key": "a", "reply": "1", "value": 1.0})
    with open(path, "a") as f:
        f.write('{"key": "b", "rep')                                   # a crash mid-line
    cache = JudgeCache(path)
    assert len(cache) == 1 and cache.get("a")["value"] == 1.0 and cache.skipped_lines == 1


def _image(path: Path, colour, fmt: str | None = None) -> str:
    Image.new("RGB", (16, 16), colour).save(path, format=fmt)
    return path.name


def test_t2i_score_with_images_facts_and_a_broken_file(tmp_path, key):
    run = tmp_path / "run"
    (run / "img").mkdir(parents=True)
    red = "img/" + _image(run / "img" / "red.png", (255, 0, 0))
    green = "img/" + _image(run / "img" / "green.jpg", (0, 255, 0))
    blue = "img/" + _image(run / "img" / "blue.png", (0, 0, 255))
    bmp = "img/" + _image(run / "img" / "red.bmp", (255, 0, 0), "BMP")
    (run / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    facts = ("<sks> wears a red scarf in winter.",)
    k0 = Item(id="t/bo/knowledge_gen/0", concept="bo", task=KNOWLEDGE_GEN, prompt="A photo of <sks> in winter.",
              facts=facts, n_images=3)
    k1 = Item(id="t/bo/knowledge_gen/1", concept="bo", task=KNOWLEDGE_GEN, prompt="<sks> at home.",
              facts=("<sks> sleeps on a blue cushion.", "<sks> has a bell."), n_images=2)
    bench = Bench({"bo": [k0, k1]}, [BO])
    preds = {"bo": [pred(k0, images=[red, green, "img/broken.png"]), pred(k1, images=[blue, bmp])]}
    with FakeJudge(expected_key=key, model=MODEL, seed=SEED) as judge:
        res, doc = run_score(bench, preds, KnowledgeT2I(**FAST), run, tmp_path / "cache", judge.base_url)
        assert not judge.violations and judge.n_requests == 4
        bodies = list(judge.requests)
        judge.reset_counts()
        res2, _ = run_score(bench, preds, KnowledgeT2I(**FAST), run, tmp_path / "cache", judge.base_url)
        assert judge.n_requests == 0 and res2["value"] == res["value"]
    # mean over each prompt's images, then over prompts: ((1 + 0.5) / 2 + (0 + 1) / 2) / 2
    assert res["value"] == pytest.approx(0.625) and res["per_concept"]["bo"] == pytest.approx(0.625)
    assert res["n"] == 4 and res["n_failed"] == 1
    rows = [json.loads(line) for line in (run / "samples" / "t2i_score.jsonl").read_text().splitlines()]
    broken = [r for r in rows if r.get("failed")]
    assert len(broken) == 1 and broken[0]["id"] == "t/bo/knowledge_gen/0#2" and "not readable" in broken[0]["failed"]
    texts = [next(p["text"] for p in b["messages"][1]["content"] if p["type"] == "text") for b in bodies]
    assert all("<bo> is a dog." in t and "<sks>" not in t for t in texts)
    assert any("- <bo> wears a red scarf in winter." in t and "A photo of <bo> in winter." in t for t in texts)
    assert any("- <bo> sleeps on a blue cushion.\n- <bo> has a bell." in t for t in texts)
    urls = [next(p["image_url"]["url"] for p in b["messages"][1]["content"] if p["type"] == "image_url")
            for b in bodies]
    assert sorted(u.split(";")[0] for u in urls) == ["data:image/jpeg", "data:image/png", "data:image/png",
                                                     "data:image/png"]   # the BMP went as PNG
    assert key not in all_text(run, tmp_path / "cache")


@pytest.mark.parametrize("reply,value", [("0.7", 0.7), ("1", 1.0), (" 0 ", 0.0), ("Score:: 0.5", 0.5),
                                         ("The answer is off. Score:: 1.0", 1.0), ("1.5", None), ("-0.2", None),
                                         ("Score: 1", None), ("one", None), ("", None)])
def test_unictokens_reading_of_a_reply(reply, value):
    """eval_p_mmu.py: float(reply.split("Score::")[-1].strip()) with 0 <= score <= 1 (values by hand)."""
    from unifybench.evaluators.judge_qa import parse_unit_float
    assert parse_unit_float(reply) == value


def test_t2i_unictokens_preset_sends_name_info_extra_info_and_four_images(tmp_path, key):
    run = tmp_path / "run"
    (run / "img").mkdir(parents=True)
    # two reds of different bytes: identical images would be one request (JudgeClient.ask_many)
    colours = [(255, 0, 0), (250, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 0), (255, 0, 0)]
    paths = ["img/" + _image(run / "img" / f"{k}.png", c) for k, c in enumerate(colours)]
    concept = Concept(name="bo", category="pet", class_noun="dog", info="<sks> is a shiba inu.",
                      extra_info=("<sks> wears a red scarf.", "<sks> has a bell."))
    item = Item(id="t/bo/knowledge_gen/0", concept="bo", task=KNOWLEDGE_GEN, prompt="<sks> in winter.",
                facts=concept.extra_info, n_images=6)
    bench = Bench({"bo": [item]}, [concept])
    with FakeJudge(expected_key=key, model=MODEL, seed=SEED) as judge:
        res, _ = run_score(bench, {"bo": [pred(item, images=paths)]}, KnowledgeT2I(preset="unictokens", **FAST),
                           run, tmp_path / "cache", judge.base_url)
        bodies = list(judge.requests)
    assert len(bodies) == 4                                   # four images of the prompt, one per request
    assert res["value"] == pytest.approx((1 + 1 + 0.5 + 0) / 4) and res["preset"] == "unictokens"
    text = next(p["text"] for p in bodies[0]["messages"][1]["content"] if p["type"] == "text")
    assert "name: <bo>\ninfo: <bo> is a shiba inu.\nextra_info: <bo> wears a red scarf. <bo> has a bell.\n" in text
    assert "<bo> in winter." in text and "<sks>" not in text
    assert sum(p["type"] == "image_url" for p in bodies[0]["messages"][1]["content"]) == 1
