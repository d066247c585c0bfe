"""Recognition weighted recall against hand-computed values for each parser preset."""
from pathlib import Path

import pytest

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, aggregate
from unifybench.evaluators.recognition import Recognition, parse_strict
from unifybench.registry import EVALUATORS

# (concept, reply, label); None reply = the model failed (Prediction.error)
TABLE = [
    ("c1", "Yes, that's him.", True),
    ("c1", "eyes are visible", True),
    ("c1", "No.", True),
    ("c1", "YES", True),
    ("c1", "not sure", False),
    ("c1", "No, it isn't.", False),
    ("c1", "Yes", False),
    ("c1", "I don't know", False),
    ("c1", None, False),
    ("c2", "Yes", True),
    ("c2", "Maybe", True),
    ("c2", "  'no'", False),
    ("c2", "Yes.", False),
]

# Worked out by hand from TABLE (c1: 4 positives, 4 scored negatives; c2: 2 and 2).
# strict:      c1 pos {1,4}/4=.5  neg {6}/4=.25 -> .375 ; unparsed eyes/not/I
#              c2 pos 1/2        neg 1/2      -> .5   ; unparsed Maybe
# unictokens:  c1 pos {1,2,4}/4=.75 neg {5,6,8}/4=.75 -> .75 ; c2 .5/.5 -> .5 ; unparsed Maybe
# yochameleon: c1 pos {1,2}/4=.5 neg {5,6,8}/4=.75 -> .625 ; unparsed YES ; c2 .5 ; unparsed Maybe
EXPECTED = {
    "default": dict(value=(0.375 + 0.5) / 2, pos=(0.5 + 0.5) / 2, neg=(0.25 + 0.5) / 2, c1=0.375, c2=0.5,
                    n_unparsed=4),
    "unictokens": dict(value=(0.75 + 0.5) / 2, pos=(0.75 + 0.5) / 2, neg=(0.75 + 0.5) / 2, c1=0.75, c2=0.5,
                       n_unparsed=1),
    "yochameleon": dict(value=(0.625 + 0.5) / 2, pos=(0.5 + 0.5) / 2, neg=(0.75 + 0.5) / 2, c1=0.625, c2=0.5,
                        n_unparsed=2),
}


def _data():
    items, preds = {}, {}
    for k, (concept, reply, label) in enumerate(TABLE):
        iid = f"b/{concept}/rec/{k}"
        items.setdefault(concept, []).append(Item(id=iid, concept=concept, task="rec", label=label))
        preds[iid] = Prediction(id=iid, concept=concept, task="rec", text=reply,
                                error="CUDA out of memory" if reply is None else None)
    return items, preds


def _run(ev):
    items, preds = _data()
    ctx = EvalContext(run_dir=Path("."))
    by_concept = {c: ev.score(Concept(c, "pet", "dog"), its, preds, ctx) for c, its in items.items()}
    result = aggregate(by_concept, ev)
    result.update(ev.extra_aggregates(by_concept))
    return by_concept, result


@pytest.mark.parametrize("preset", ["default", "unictokens", "yochameleon"])
def test_weighted_recall_matches_hand_computation(preset):
    by_concept, r = _run(Recognition(preset=preset))
    exp = EXPECTED[preset]
    assert r["value"] == pytest.approx(exp["value"])
    assert r["per_concept"] == pytest.approx({"c1": exp["c1"], "c2": exp["c2"]})
    assert r["positive_recall"] == pytest.approx(exp["pos"])
    assert r["negative_recall"] == pytest.approx(exp["neg"])
    assert r["n_unparsed"] == exp["n_unparsed"]
    assert r["n"] == 12 and r["n_failed"] == 1
    failed = [s for s in by_concept["c1"] if s.failed]
    assert len(failed) == 1 and failed[0].score is None and "CUDA out of memory" in failed[0].failed
    assert r["per_concept_detail"]["c1"]["n_negative"] == 4   # the failed item is in no denominator


def test_pitfall_replies_per_parser():
    items, preds = _data()
    ctx = EvalContext(run_dir=Path("."))
    parsed = {}
    for preset in ("default", "unictokens", "yochameleon"):
        scores = Recognition(preset=preset).score(Concept("c1", "pet", "dog"), items["c1"], preds, ctx)
        parsed[preset] = {s.detail["answer"]: (s.detail["parsed"], s.score) for s in scores if not s.failed}
    # "eyes" is a yes for yochameleon (and unictokens), unparsed for the strict parser
    assert parsed["yochameleon"]["eyes are visible"] == ("yes", 1.0)
    assert parsed["unictokens"]["eyes are visible"] == ("yes", 1.0)
    assert parsed["default"]["eyes are visible"] == (None, 0.0)
    # "not sure" is a no for unictokens, unparsed (and wrong) for the strict parser
    assert parsed["unictokens"]["not sure"] == ("no", 1.0)
    assert parsed["default"]["not sure"] == (None, 0.0)
    # yochameleon's substring test is case-sensitive as coded: "YES" is not found
    assert parsed["yochameleon"]["YES"] == (None, 0.0)
    assert parsed["default"]["YES"] == ("yes", 1.0)


@pytest.mark.parametrize("text,expected", [
    ("Yes", "yes"), ("yes.", "yes"), ('  "Yes," it is', "yes"), ("...NO!", "no"), ("No, never", "no"),
    ("Yesterday", None), ("eyes", None), ("Nope", None), ("", None), ("I think yes", None), ("1 yes", None),
])
def test_strict_parser_reads_the_first_word(text, expected):
    assert parse_strict(text) == expected


def test_failures_and_one_sided_concepts():
    ev = Recognition()
    ctx = EvalContext(run_dir=Path("."))
    concept = Concept("c", "pet", "dog")
    its = [Item(id=f"i{k}", concept="c", task="rec", label=True) for k in range(3)]
    preds = {"i0": Prediction(id="i0", concept="c", task="rec", text="Yes"),
             "i1": Prediction(id="i1", concept="c", task="rec", text=None)}
    scores = ev.score(concept, its, preds, ctx)
    assert [s.failed is not None for s in scores] == [False, True, True]   # no text; no prediction
    assert ev.concept_value(scores) == 1.0      # only positives: the positive recall
    assert ev.concept_value(scores[1:]) is None  # nothing scored: no value, never 0


def test_params_and_registry():
    assert EVALUATORS.get("recognition") is Recognition
    assert Recognition(parser="unictokens").params["parser"] == "unictokens"
    with pytest.raises(UserError):
        Recognition(preset="nope")
    with pytest.raises(UserError):
        Recognition(parser="fuzzy")
