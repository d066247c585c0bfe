"""Issue 15.4: every judge reply that cannot be read is one failed sample, counted; a torn cache line
never swallows the next good reply."""
from __future__ import annotations

import json

import pytest
from judge_server import FakeJudge

from unifybench.data.schema import TEXT_QA, Benchmark, Concept, Item, Prediction
from unifybench.evaluators.judge_qa import JudgeQA
from unifybench.judge import JudgeCache, JudgeClient, JudgeRequest, parse_score
from unifybench.runspec import RunSpec
from unifybench.scoring import score


MODEL, SEED = "fake-judge", 7
# No test here waits out a hang: a generous timeout keeps a loaded CI machine from turning a slow reply into a retry.
FAST = {"timeout": 10, "backoff": 0.01, "max_retries": 2, "workers": 4}
BO = Concept(name="bo", category="pet", class_noun="dog")


class Bench(Benchmark):
    name = "judge-test"

    def __init__(self, items, concepts):
        self._items, self._concepts = items, concepts

    def concepts(self):
        return self._concepts

    def items(self, concept):
        return self._items.get(concept.name, [])


def qa(concept, key, question, answer):
    return Item(id=f"t/{concept}/{TEXT_QA}/{key}", concept=concept, task=TEXT_QA, prompt=question, answer=answer)


def pred(item, text):
    return Prediction(item.id, item.concept, item.task, item.prompt, text=text)


def run_score(bench, preds, evaluator, out, cache, base_url):
    spec = RunSpec(method="predictions", output_dir=out, cache_dir=cache, seed=SEED, judge_base_url=base_url,
                   judge_model=MODEL)
    results = score(bench, bench.concepts(), preds, [evaluator], out, spec)
    return results[evaluator.name], {"evaluator_environment": {evaluator.name: evaluator.environment()}}


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("UNIFYBENCH_JUDGE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_unreadable_replies_are_failed_samples_and_never_cached(tmp_path):
    cases = [("nonjson", "FAULT:nonjson"), ("nochoices", "FAULT:nochoices"), ("garbage", "FAULT:garbage"),
             ("good", "plain")]
    items = [qa("bo", k, f"Where is <sks>? {fault}", "Home.") for k, fault in cases]
    bench = Bench({"bo": items}, [BO])
    preds = {"bo": [pred(i, text="home") for i in items]}
    with FakeJudge(model=MODEL, seed=SEED) as judge:
        res, doc = run_score(bench, preds, JudgeQA(**FAST), tmp_path / "run", tmp_path / "cache", judge.base_url)
        n_first = judge.n_requests
    assert n_first == 4                                     # none of the unreadable replies is retried
    assert res["n"] == 1 and res["n_failed"] == 3 and res["value"] == 1.0
    rows = {r["id"].split("/")[-1]: r for r in map(json.loads, (tmp_path / "run" / "samples" / "judge_qa.jsonl")
                                                   .read_text().splitlines())}
    assert "unreadable judge reply" in rows["nonjson"]["failed"]
    assert "no choices" in rows["nochoices"]["failed"]
    assert "unparsable" in rows["garbage"]["failed"]
    assert all(rows[k]["score"] is None for k in ("nonjson", "nochoices", "garbage"))
    stats = doc["evaluator_environment"]["judge_qa"]["judge"]
    assert stats["failures"] == 3 and stats["calls"] == 4
    cached = (tmp_path / "cache" / "judge" / "replies.jsonl").read_text().splitlines()
    assert len(cached) == 1 and json.loads(cached[0])["value"] == 1.0


def test_a_server_that_only_sends_html_trips_the_breaker(tmp_path):
    with FakeJudge(model=MODEL, cycle=["nonjson"]) as judge:
        client = JudgeClient(judge.base_url, MODEL, cache_dir=tmp_path, timeout=1, backoff=0.01,
                             max_consecutive_failures=3)
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        assert not client.ask(msgs, "qa-v1", parse_score).ok
        assert not client.ask(msgs, "qa-v1", parse_score).ok
        from unifybench.judge import JudgeUnavailable
        with pytest.raises(JudgeUnavailable, match="3 requests in a row"):
            client.ask(msgs, "qa-v1", parse_score)


def test_append_after_a_torn_line_starts_a_clean_line(tmp_path):
    path = tmp_path / "replies.jsonl"
    JudgeCache(path).put({"key": "a", "reply": "1", "value": 1.0})
    with open(path, "a") as f:
        f.write('{"key": "b", "rep')                       # killed mid-append
    cache = JudgeCache(path)
    cache.put({"key": "c", "reply": "0", "value": 0.0})    # the next good reply
    again = JudgeCache(path)
    assert again.get("c") == {"key": "c", "reply": "0", "value": 0.0}
    assert again.get("a")["value"] == 1.0 and again.skipped_lines == 1 and len(again) == 2
    assert path.read_text().endswith('"value": 0.0}\n')


def test_identical_requests_in_a_parallel_batch_are_paid_once(tmp_path):
    """Four threads, a slow judge, the same request three times (two images with the same bytes): one call,
    the copies get its score marked cached, and no more calls on a second batch."""
    msgs = lambda text: [{"role": "system", "content": "s"},  # noqa: E731
                         {"role": "user", "content": f"Reference answer: {text}\nCandidate answer: {text}"}]
    reqs = [JudgeRequest(msgs(t), "qa-v1", parse_score, label=str(n)) for n, t in enumerate(["a", "b", "a", "a"])]
    with FakeJudge(model=MODEL, reply_delay=0.3) as judge:
        client = JudgeClient(judge.base_url, MODEL, cache_dir=tmp_path, timeout=5, backoff=0.01)
        res = client.ask_many(reqs, workers=4)
        assert judge.n_requests == 2
        assert [r.value for r in res] == [1.0] * 4 and [r.cached for r in res] == [False, False, True, True]
        assert client.stats()["calls"] == 2 and client.stats()["cache_hits"] == 2
        assert all(r.cached for r in client.ask_many(reqs, workers=4)) and judge.n_requests == 2
