"""BLEU against independent references: hand-computed values, and nltk / sacrebleu called directly."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from unifybench.data.schema import TEXT_QA, VQA, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, aggregate
from unifybench.evaluators.bleu import Bleu
from unifybench.registry import EVALUATORS

PAIRS = [
    ("A red collar with a bell.", "It has a red collar with a small bell."),
    ("Raspberry red.", "Raspberry red."),
    ("With a zipper.", "It closes with a zip."),
    ("On the green armchair in the living room.", "She sits on a green armchair."),
    ("A silver star-shaped keychain.", "a silver star keychain"),
    ("Yes.", "No."),
    ("Blue", "blue"),
    ("From a fallen, mossy tree trunk in a forest.", "It hangs from a mossy log in the woods."),
]


def char_bleu_by_hand(hyp: str, ref: str) -> float:
    """Char 1-/2-gram BLEU with weights (0.7, 0.3), method1 smoothing (0 matches -> 0.1 / count)."""
    if not hyp:
        return 0.0
    from collections import Counter
    ps = []
    for n in (1, 2):
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        match = sum(min(c, r[g]) for g, c in h.items())
        total = max(1, sum(h.values()))
        if n == 1 and match == 0:
            return 0.0
        ps.append((match if match else 0.1) / total)
    bp = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return bp * math.exp(0.7 * math.log(ps[0]) + 0.3 * math.log(ps[1]))


def test_unictokens_preset_hand_computed():
    b = Bleu(preset="unictokens")
    assert b.sentence("ab", "ab") == pytest.approx(1.0)
    # p1 = 2/3, p2 = 1/2, same length
    assert b.sentence("abc", "abd") == pytest.approx((2 / 3) ** 0.7 * 0.5 ** 0.3)
    # every n-gram matches, brevity penalty exp(1 - 4/2)
    assert b.sentence("ab", "abcd") == pytest.approx(math.exp(-1))
    # no bigram matches: method1 gives 0.1 / 1 for p2
    assert b.sentence("ax", "ab") == pytest.approx(0.5 ** 0.7 * 0.1 ** 0.3)
    # no lower-casing; spaces are tokens; an empty answer is 0
    assert b.sentence("AB", "ab") == 0.0
    assert b.sentence("a b", "a b") == pytest.approx(1.0)
    assert b.sentence("", "anything") == 0.0
    for hyp, ref in PAIRS:
        assert b.sentence(hyp, ref) == pytest.approx(char_bleu_by_hand(hyp, ref)), (hyp, ref)


def test_unictokens_preset_matches_nltk_directly():
    b = Bleu(preset="unictokens")
    for hyp, ref in PAIRS:
        expected = sentence_bleu([list(ref)], list(hyp), weights=(0.7, 0.3),
                                 smoothing_function=SmoothingFunction().method1)
        assert b.sentence(hyp, ref) == pytest.approx(expected, abs=1e-12), (hyp, ref)


def test_default_is_word_bleu4_matching_sacrebleu_on_a_0_1_scale():
    b = Bleu()
    assert b.params["tokenize"] == "13a" and b.params["scale"] == 1.0 and b.params["library"] == "sacrebleu"
    for hyp, ref in PAIRS:
        expected = sacrebleu.sentence_bleu(hyp, [ref], tokenize="13a").score / 100
        assert b.sentence(hyp, ref) == pytest.approx(expected, abs=1e-12), (hyp, ref)
    assert Bleu(scale=100).sentence(*PAIRS[0]) == pytest.approx(sacrebleu.sentence_bleu(*PAIRS[0][:1], [PAIRS[0][1]]).score)
    # hand: identical sentences -> 1; "the cat" vs "the cat sat": effective order 2, p1 = p2 = 1, BP = e^(1 - 3/2)
    assert b.sentence("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert b.sentence("the cat", "the cat sat") == pytest.approx(math.exp(-0.5))
    assert b.sentence("", "the cat") == 0.0
    # word BLEU is far below char BLEU on the same English pair
    assert b.sentence(*PAIRS[2]) < Bleu(preset="unictokens").sentence(*PAIRS[2])


def test_scoring_placeholder_failures_and_concept_means(tmp_path: Path):
    concepts = {"bo": Concept("bo", "pet", "dog"), "mam": Concept("mam", "pet", "cat")}
    items = {
        "bo": [Item("u/bo/vqa/0", "bo", VQA, "What is <sks> wearing?", answer="<sks> wears a red collar."),
               Item("u/bo/text_qa/0", "bo", TEXT_QA, "Where does <sks> sleep?", answer="On the sofa."),
               Item("u/bo/text_qa/1", "bo", TEXT_QA, "Who is <sks>?", answer="A dog."),
               Item("u/bo/text_qa/2", "bo", TEXT_QA, "Age of <sks>?", answer="Four.")],
        "mam": [Item("u/mam/text_qa/0", "mam", TEXT_QA, "Colour of <sks>?", answer="Grey.")],
    }
    texts = {"u/bo/vqa/0": "<bo> wears a red collar.", "u/bo/text_qa/0": "On the bed.", "u/bo/text_qa/1": "",
             "u/mam/text_qa/0": "Grey."}
    preds = {i.id: Prediction(i.id, i.concept, i.task, i.prompt, text=texts.get(i.id),
                              error=None if i.id in texts else "OOM") for c in items.values() for i in c}
    ctx = EvalContext(run_dir=tmp_path)
    for preset in ("default", "unictokens"):
        ev = Bleu(preset=preset)
        by_concept = {c: ev.score(concepts[c], items[c], preds, ctx) for c in items}
        bo = by_concept["bo"]
        assert bo[0].score == pytest.approx(1.0)          # <sks> in the reference is written <bo>
        assert bo[0].detail["reference"] == "<bo> wears a red collar."
        assert bo[2].score == 0.0 and bo[3].failed == "model error: OOM"
        res = aggregate(by_concept, ev)
        bo_mean = (1.0 + ev.sentence("On the bed.", "On the sofa.") + 0.0) / 3
        assert res["per_concept"] == {"bo": pytest.approx(bo_mean), "mam": pytest.approx(1.0)}
        assert res["value"] == pytest.approx((bo_mean + 1.0) / 2)
        assert res["n"] == 4 and res["n_failed"] == 1


def test_registered_and_validated():
    assert EVALUATORS.get("bleu") is Bleu and Bleu.tasks == {VQA, TEXT_QA}
    d = Bleu(preset="unictokens").describe()
    assert d["preset"] == "unictokens" and d["params"]["weights"] == [0.7, 0.3] and d["params"]["tokenize"] == "char"
    with pytest.raises(UserError):
        Bleu(preset="papers")
    with pytest.raises(UserError):
        Bleu(weights=[0.5, 0.5])                  # sacrebleu weighs orders uniformly
    with pytest.raises(UserError):
        Bleu(tokenize="words")
    with pytest.raises(UserError):
        Bleu(preset="unictokens", weights=[0.5, 0.3, 0.2])
    # nltk over 13a words with uniform 4-gram weights is also available and equals nltk called directly
    b = Bleu(library="nltk", smoothing="method1")
    hyp, ref = PAIRS[0]
    tok = sacrebleu.BLEU(tokenize="13a").tokenizer
    assert b.sentence(hyp, ref) == pytest.approx(sentence_bleu([tok(ref).split()], tok(hyp).split(),
                                                               smoothing_function=SmoothingFunction().method1))
