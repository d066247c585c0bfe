"""MMBench: circular groups (built or given as index copies), rule extraction, judge only for the rest,
failures counted and never guessed."""
import re

import pytest

from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.forgetting import mmbench as mmb
from unifybench.evaluators.forgetting.mmbench import MMBench, circular_groups, load_tsv, prompt_text
from unifybench.judge import JudgeResult

from forgetting_fixture import MMB_QUESTIONS, write_mmbench  # noqa: E402

GOLD = {q: opts["ABCD".index(ans)] for _, q, _, opts, ans, _ in MMB_QUESTIONS}


def options_in(text):
    return dict(re.findall(r"^([A-D])\. (.*)$", text, re.M))


def scripted(monkeypatch, reply_for):
    """answer_text replaced by `reply_for(question, options, rotation_call_no)`; records the prompts."""
    seen = []

    def fake(backbone, prefix_ids, parts, max_new_tokens, skip=None):
        image, text = parts[:2]
        q = next(q for q in GOLD if q in text)
        opts = options_in(text)
        seen.append((q, opts, prefix_ids))
        return reply_for(q, opts, sum(1 for s in seen if s[0] == q) - 1)
    monkeypatch.setattr(mmb, "answer_text", fake)
    return seen


def right_letter(q, opts):
    return next(lt for lt, t in opts.items() if t == GOLD[q])


@pytest.mark.parametrize("copies", [False, True])
def test_groups_cover_every_rotation_with_the_answer_following_its_text(tmp_path, copies):
    rows = load_tsv(write_mmbench(tmp_path / "d.tsv", copies=copies))
    groups = circular_groups(rows)
    assert sorted(groups) == [0, 1, 2]
    for qid, group in groups.items():
        n_opt = len(group[0]["options"])
        assert [o["rotation"] for o in group] == list(range(n_opt))
        assert len({o["options"] for o in group}) == n_opt            # every order distinct
        for o in group:
            assert dict(o["options"])[o["answer"]] == GOLD[o["question"]]
        firsts = {o["options"][0][1] for o in group}                   # each option comes first once
        assert firsts == {t for _, t in group[0]["options"]}
    assert {len(g) for g in circular_groups(rows, circular=False).values()} == {1}


def test_prompt_layout(tmp_path):
    rows = load_tsv(write_mmbench(tmp_path / "d.tsv"))
    text = prompt_text(circular_groups(rows)[1][0])
    assert text == ("\nThink of pets.\nWhich animal barks?\nA. cat\nB. dog\nC. fish\n"
                    "Answer with the option's letter from the given choices directly.")


def test_image_reference_rows_resolve(tmp_path):
    rows = load_tsv(write_mmbench(tmp_path / "d.tsv"))
    assert rows[-1]["image"] == rows[0]["image"] and len(rows[0]["image"]) > 64


@pytest.mark.parametrize("copies", [False, True])
def test_one_wrong_rotation_fails_the_question(tmp_path, monkeypatch, copies):
    def reply(q, opts, k):
        if q == "Which animal barks?" and k == 2:              # wrong in one order of three
            return next(lt for lt, t in opts.items() if t != GOLD[q])
        if q == "How many sides has a triangle?":
            return f"The answer is {GOLD[q]}"                 # by option text, no letter
        return right_letter(q, opts) + "."
    seen = scripted(monkeypatch, reply)
    ev = MMBench(data=str(write_mmbench(tmp_path / "d.tsv", copies=copies)))
    res = ev.evaluate_model(object(), None, EvalContext(run_dir=tmp_path, judge_enabled=False))
    assert len(seen) == 4 + 3 + 2 and res["n_orders"] == 9
    assert res["value"] == pytest.approx(2 / 3) and res["n"] == 3 and res["n_failed"] == 0
    assert res["per_order_accuracy"] == pytest.approx(8 / 9)
    assert res["n_unparsed"] == 0 and res["n_rule"] == 9 and res["n_judged"] == 0
    assert res["per_category"] == {"animals": 0.0, "color": 1.0, "math": 1.0}
    assert ev.report_metrics(res) == {"circular accuracy": res["value"]}


def test_unparsed_counted_never_guessed_and_judge_only_for_the_rest(tmp_path, monkeypatch):
    def reply(q, opts, k):
        if q == "What colour is the square?":
            return "I am not sure."                            # no rule can read it
        return right_letter(q, opts)
    scripted(monkeypatch, reply)
    path = write_mmbench(tmp_path / "d.tsv")
    # No judge: the 4 unreadable orders are wrong and counted; every other group still scores.
    for _ in range(3):   # the same every time: nothing random
        res = MMBench(data=str(path)).evaluate_model(object(), None, EvalContext(run_dir=tmp_path))
        assert res["value"] == pytest.approx(2 / 3) and res["n_unparsed"] == 4 and res["judge"] == "not configured"
    off = MMBench(data=str(path)).evaluate_model(object(), None, EvalContext(run_dir=tmp_path, judge_enabled=False))
    assert off["judge"] == "off" and off["n_unparsed"] == 4

    class StubJudge:
        def __init__(self):
            self.asked = []

        def ask(self, messages, prompt_version, parse, label=None):
            self.asked.append(messages[1]["content"])
            opts = options_in(messages[1]["content"])
            if len(self.asked) == 1:
                return JudgeResult(error="timeout")            # one judge failure: counted, wrong
            if len(self.asked) == 2:
                return JudgeResult(value=parse("Z"), reply="Z")
            return JudgeResult(value=parse(next(lt for lt, t in opts.items() if t == "red")), reply="x")

        def stats(self):
            return {"model": "stub", "calls": len(self.asked), "cache_hits": 0, "failures": 1}

    ev = MMBench(data=str(path))
    ev._client = stub = StubJudge()
    ctx = EvalContext(run_dir=tmp_path, judge_base_url="http://127.0.0.1:9", judge_model="stub")
    res = ev.evaluate_model(object(), None, ctx)
    assert len(stub.asked) == 4                                # only the unreadable replies went to the judge
    assert all("I am not sure." in a for a in stub.asked)
    assert res["n_judged"] == 2 and res["n_judge_failed"] == 1 and res["n_unparsed"] == 2
    assert res["value"] == pytest.approx(2 / 3)                 # the colour question still fails as a group
    assert res["per_order_accuracy"] == pytest.approx(7 / 9)


def test_model_error_fails_the_question(tmp_path, monkeypatch):
    scripted(monkeypatch, lambda q, opts, k: right_letter(q, opts))
    path = tmp_path / "d.tsv"
    write_mmbench(path, image_ref=False)
    text = path.read_text().splitlines()
    cols = text[0].split("\t")
    cells = text[1].split("\t")
    cells[cols.index("image")] = "bm90IGFuIGltYWdl" * 8         # base64 of text, not an image
    path.write_text("\n".join([text[0], "\t".join(cells), *text[2:]]) + "\n")
    res = MMBench(data=str(path)).evaluate_model(object(), None, EvalContext(run_dir=tmp_path))
    assert res["n_failed"] == 1 and res["n"] == 2 and res["value"] == 1.0


def test_missing_data_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("UNIFYBENCH_MMBENCH_ROOT", raising=False)
    with pytest.raises(UserError, match="UNIFYBENCH_MMBENCH_ROOT"):
        MMBench().data_files()
    monkeypatch.setenv("UNIFYBENCH_MMBENCH_ROOT", str(tmp_path))
    with pytest.raises(UserError, match="mmbench_dev_20230712.tsv"):
        MMBench().data_files()
    write_mmbench(tmp_path / "mmbench_dev_20230712.tsv")
    assert MMBench().data_files() == [tmp_path / "mmbench_dev_20230712.tsv"]


from unifybench.models.contract import Backbone  # noqa: E402


class RecordingBackbone(Backbone):
    """Chameleon-shaped ids (one id per character, 3 image codes), built by Chameleon's own chat adapter;
    records what generate_text gets."""
    bos_id, boi_id, eoi_id, eot_id, eos_id = 1, 2, 3, 4, 5

    def __init__(self, reply_ids):
        self.calls = []
        self.reply_ids = reply_ids
        self.tokenizer = self

    def chat_ids(self, prefix_ids, parts):
        from unifybench.models.chameleon.chat import chat_ids
        return chat_ids(self, prefix_ids, parts)

    def encode_text(self, text):
        return [1000 + ord(c) for c in text]

    def encode_images(self, images):
        import torch
        return [torch.tensor([7, 8, 9])]

    def generate_text(self, ids, max_new_tokens):
        self.calls.append((ids[0].tolist(), max_new_tokens))
        return self.reply_ids[:max_new_tokens]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(t - 1000) for t in ids)


@pytest.mark.parametrize("preset", ["default", "yochameleon"])
def test_yochameleon_preset_prompt_ids_and_one_token(tmp_path, preset):
    """The ids written out by hand from the reference script: `<s>` image "\\n " text `<eot>` `<eot>`, 1 token."""
    path = write_mmbench(tmp_path / "d.tsv")
    bb = RecordingBackbone([1000 + ord(c) for c in "B because"])
    res = MMBench(preset=preset, data=str(path), circular=False).evaluate_model(bb, None, EvalContext(run_dir=tmp_path))
    question = ("Think of pets.\nWhich animal barks?\nA. cat\nB. dog\nC. fish\n"
                "Answer with the option's letter from the given choices directly.")
    lead, eots, budget = ("\n ", [4, 4], 1) if preset == "yochameleon" else ("\n", [4], 10)
    want = [1, 2, 7, 8, 9, 3] + [1000 + ord(c) for c in lead + question] + eots
    ids, max_new = next(c for c in bb.calls if c[0][6:] == want[6:])
    assert ids == want and max_new == budget
    assert {n for _, n in bb.calls} == {budget}
    barks = next(s for s in res["samples"] if s["qid"] == 1)
    assert barks["answer"] == ("B" if preset == "yochameleon" else "B because") and barks["correct"]
