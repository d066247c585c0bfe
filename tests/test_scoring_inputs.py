"""What the scorer does with its inputs before any metric: answers stripped as the runner's decoding strips
them (run and eval alike), and asked items without a prediction scored as wrong unless told otherwise."""
from __future__ import annotations

import json

import pytest

from unifybench.cli import main
from unifybench.data.schema import GEN, MC, REC, TEXT_QA, Benchmark, Concept, Item, Prediction
from unifybench.data.unifybench import UnifyBenchMini
from unifybench.evaluators.bleu import Bleu
from unifybench.evaluators.face import FaceSimilarity
from unifybench.evaluators.judge_qa import JudgeQA
from unifybench.evaluators.multiple_choice import MultipleChoice, circular_items
from unifybench.evaluators.recognition import Recognition
from unifybench.runner import RunSpec, score

BO = Concept(name="bo", category="pet", class_noun="dog")


class Bench(Benchmark):
    name = "t"

    def __init__(self, items):
        self._items = items

    def concepts(self):
        return [BO]

    def items(self, concept):
        return list(self._items)


def run(items, preds, evaluator, tmp_path, missing="wrong", asked=None):
    spec = RunSpec(method="predictions", output_dir=tmp_path, judge_enabled=False, missing=missing)
    return score(Bench(items), [BO], {"bo": preds}, [evaluator], tmp_path, spec, asked=asked)[evaluator.name]


def test_padded_answers_are_stripped_before_every_text_metric(tmp_path):
    q = Item("t/bo/text_qa/0", "bo", TEXT_QA, "Colour?", answer="Red.")
    r = Item("t/bo/rec/0", "bo", REC, "Is <sks> here?", label=True)
    preds = [Prediction(q.id, "bo", TEXT_QA, q.prompt, text="  Red.\n"), Prediction(r.id, "bo", REC, "", text=" Yes")]
    # the same answer the runner's decoding would give: "Red." against "Red." is BLEU 1 (hand value)
    assert run([q], preds, Bleu(preset="unictokens"), tmp_path)["value"] == pytest.approx(1.0)
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    unstripped = sentence_bleu([list("Red.")], list("  Red.\n"), weights=(0.7, 0.3),
                               smoothing_function=SmoothingFunction().method1)
    assert unstripped < 0.9                                       # what an unstripped answer would score
    assert run([r], preds, Recognition(), tmp_path)["value"] == 1.0


def test_padded_bring_your_own_answer_scores_as_in_run(tmp_path, capsys):
    item = next(i for c in UnifyBenchMini().concepts() for i in UnifyBenchMini().items(c) if i.task == "text_qa")
    (tmp_path / "a.jsonl").write_text(json.dumps({"item_id": item.id, "answer": f"   {item.answer}  "}) + "\n")
    code = main(["eval", "--benchmark", "unifybench-mini", "--predictions", str(tmp_path / "a.jsonl"),
                 "--evaluators", "bleu", "--eval-preset", "bleu=unictokens", "--concepts", item.concept,
                 "--output-dir", str(tmp_path / "out"), "--no-progress", "--missing", "exclude"])
    assert code == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "out" / "results.json").read_text())["results"]["unifybench-mini"]["bleu"]
    assert res["value"] == pytest.approx(1.0) and res["missing"] == "exclude"


def rec_items():
    return [Item(f"t/bo/rec/{k}", "bo", REC, "?", label=label) for k, label in enumerate([True, True, False, False])]


def test_a_skipped_item_counts_as_wrong_by_default_and_is_reported(tmp_path):
    items = rec_items()
    preds = [Prediction(items[0].id, "bo", REC, "", text="Yes"),          # the hard positive 1 is skipped
             Prediction(items[2].id, "bo", REC, "", text="No"), Prediction(items[3].id, "bo", REC, "", text="No")]
    wrong = run(items, preds, Recognition(), tmp_path)
    # by hand: positive recall 1/2 (the skipped one is not recalled), negative recall 2/2 -> 0.75
    assert wrong["value"] == pytest.approx(0.75) and wrong["n_missing"] == 1 and wrong["missing"] == "wrong"
    assert wrong["positive_recall"] == pytest.approx(0.5) and wrong["n_unparsed"] == 0
    rows = [json.loads(x) for x in (tmp_path / "samples" / "recognition.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows if r.get("missing")] == [items[1].id]
    old = run(items, preds, Recognition(), tmp_path, missing="exclude")   # the old behaviour, on request
    assert old["value"] == 1.0 and old["n_missing"] == 1


def test_missing_orders_mc_similarity_and_scope(tmp_path):
    base = Item("t/bo/mc/0", "bo", MC, "?", options=(("A", "Dog"), ("B", "Cat")), answer="A")
    orders = circular_items(base)
    preds = [Prediction(orders[0].id, "bo", MC, "", text="A")]               # order 1 never answered
    assert run(orders, preds, MultipleChoice(), tmp_path)["value"] == 0.0       # the question is wrong
    assert run(orders, preds, MultipleChoice(), tmp_path, missing="exclude")["value"] is None
    gens = [Item(f"t/bo/gen/{k}", "bo", GEN, "a photo of <sks>", n_images=1) for k in range(3)]
    # items outside what the method was set to answer (a recorded gen_prompts_limit) are never scored
    res = run(gens, [], Bleu(), tmp_path, asked={"bo": {gens[0].id}})
    assert res["value"] is None and res["n_missing"] == 0 and "n_not_asked" not in res   # bleu has no gen items
    face = FaceSimilarity()
    res = run(gens, [], face, tmp_path, asked={"bo": {gens[0].id}})
    assert res["n"] == 0 and res["n_missing"] == 1 and res["n_not_asked"] == 2   # a pet: face scores nothing
    judge = run([Item("t/bo/text_qa/0", "bo", TEXT_QA, "?", answer="x")], [], JudgeQA(), tmp_path)
    assert judge.get("off") is True and judge["value"] is None                # --judge none: nothing scored


def test_method_asked_follows_gen_prompts_limit():
    from unifybench.methods.base import RunContext
    from unifybench.registry import get_runnable
    method = get_runnable("yochameleon")(RunContext(tiny=True), "tiny")
    items = [Item(f"t/bo/gen/{k}", "bo", GEN, "p") for k in range(3)] + [Item("t/bo/rec/0", "bo", REC, "?", label=True)]
    assert [i.id for i in method.asked(items)] == ["t/bo/gen/0", "t/bo/rec/0"]      # tiny: one prompt per task
    assert len(get_runnable("yochameleon")(RunContext(), "paper").asked(items)) == 4
