"""MC-LLaVA's scoring as presets, each against a hand computation on crafted answers: exact Yes/No with
weighted recall, exact letters, character BLEU (0.7, 0.3), caption recall; the -single presets keep the
single-concept portion only (through the runner's scoring, as a run uses them)."""
import math
from pathlib import Path

import pytest

from unifybench.data.schema import CAPTION, MC, REC, VQA, Concept, Item, Prediction
from unifybench.evaluators.base import EvalContext
from unifybench.registry import EVALUATORS

C = Concept(name="Ann", category="object", class_noun="object")
CTX = EvalContext(run_dir=Path("."))


def run(name, preset, items, answers):
    ev = EVALUATORS.get(name)(preset=preset)
    preds = {i.id: Prediction(i.id, i.concept, i.task, text=a) for i, a in zip(items, answers)}
    chosen = [i for i in items if ev.selects(i)]
    scores = ev.score(C, chosen, preds, CTX)
    return ev, scores, ev.concept_value(scores)


def rec(k, label, type_="si_sq"):
    return Item(id=f"r{k}", concept="Ann", task=REC, label=label, meta=(("type", type_),))


def test_recognition_exact_weighted_recall():
    items = [rec(0, True), rec(1, True), rec(2, True), rec(3, False), rec(4, False), rec(5, True, "mi_sq")]
    answers = ["Yes", "Yes.", "yes", "No", "No, it is not.", "No"]
    _, scores, value = run("recognition", "mc-llava", items, answers)
    # exact equality: positives 1/4 right (only "Yes"; the mi_sq "No" is wrong), negatives 1/2
    assert [s.score for s in scores] == [1, 0, 0, 1, 0, 0]
    assert value == pytest.approx((1 / 4 + 1 / 2) / 2)
    _, scores, value = run("recognition", "mc-llava-single", items, answers)
    assert len(scores) == 5 and value == pytest.approx((1 / 3 + 1 / 2) / 2)
    # the lenient default reads "Yes." and "No, it is not." as answers: a different number
    _, _, lenient = run("recognition", None, items, answers)
    assert lenient == pytest.approx((3 / 4 + 2 / 2) / 2)


def mc(k, answer, type_, kind):
    return Item(id=f"m{k}", concept="Ann", task=MC, answer=answer, options=(("A", "x"), ("B", "y")),
                meta=(("type", type_), ("kind", kind)))


def test_choice_exact_letter():
    items = [mc(0, "A", "si_sq", "choice"), mc(1, "B", "si_sq", "choice"), mc(2, "A", "s", "text"),
             mc(3, "B", "s", "text"), mc(4, "A", "mi_sq", "grounding")]
    answers = ["A", "B.", "A", "x", "A"]
    ev, scores, value = run("mc", "mc-llava", items, answers)
    assert [s.score for s in scores] == [1, 0, 1, 0, 1] and value == pytest.approx(3 / 5)
    ev, scores, value = run("mc", "mc-llava-single", items, answers)
    assert len(scores) == 4 and value == pytest.approx(2 / 4)
    by_kind = ev.extra_aggregates({"Ann": scores})["by_kind"]
    assert by_kind["text"]["value"] == pytest.approx(1 / 2) and by_kind["choice"]["value"] == pytest.approx(1 / 2)


def test_char_bleu_hand_value():
    items = [Item(id="v0", concept="Ann", task=VQA, answer="abd", meta=(("type", "si_sq"),)),
             Item(id="v1", concept="Ann", task=VQA, answer="abc", meta=(("type", "mi_mq"),))]
    # "abc" vs "abd": unigram precision 2/3, bigram ("ab","bc" vs "ab","bd") 1/2, same length: BP = 1
    hand = math.exp(0.7 * math.log(2 / 3) + 0.3 * math.log(1 / 2))
    _, scores, value = run("bleu", "mc-llava", items, ["abc", "abc"])
    assert scores[0].score == pytest.approx(hand) and scores[1].score == pytest.approx(1.0)
    _, scores, value = run("bleu", "mc-llava-single", items, ["abc", "abc"])
    assert len(scores) == 1 and value == pytest.approx(hand)


def test_caption_recall():
    def cap(k, type_, names):
        return Item(id=f"c{k}", concept="Ann", task=CAPTION, meta=(("type", type_), ("names", names)))
    items = [cap(0, "si", "Ann"), cap(1, "si", "Ann"), cap(2, "mi", "Ann,Ben,Yuki"), cap(3, "mi", "Ann,Yuki")]
    answers = ["<Ann> stands by a car.", "Ann stands by a car.",    # si needs the identifier <Ann>
               "<Ann> and Ben talk.", "Two people, yuki and someone."]  # case-sensitive: "yuki" does not count
    _, scores, value = run("caption", "mc-llava", items, answers)
    assert [s.score for s in scores] == pytest.approx([1, 0, 2 / 3, 0])
    assert value == pytest.approx((1 + 0 + 2 / 3 + 0) / 4)
    # the placeholder echoed by a method counts as the concept's identifier
    _, scores, _ = run("caption", None, items[:1], ["<sks> smiles."])
    assert scores[0].score == 1


def test_failed_caption_is_counted_not_scored():
    item = Item(id="c", concept="Ann", task=CAPTION, meta=(("type", "si"), ("names", "Ann")))
    ev = EVALUATORS.get("caption")()
    s = ev.score(C, [item], {"c": Prediction("c", "Ann", CAPTION, error="oom")}, CTX)[0]
    assert s.score is None and s.failed == "model error: oom"
