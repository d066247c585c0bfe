"""Multiple choice: parsing, option rotations, circular scoring and the constant-"A" answerer, by hand."""
from __future__ import annotations

from pathlib import Path

import pytest

from unifybench.data.schema import MC, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, aggregate
from unifybench.data.option_orders import circular_items
from unifybench.evaluators.multiple_choice import MultipleChoice, parse_choice
from unifybench.registry import EVALUATORS

AB = (("A", "Dog"), ("B", "Cat"))
ABCD = (("A", "Red"), ("B", "Green"), ("C", "Hot dog"), ("D", "Dog"))


@pytest.mark.parametrize("reply,expected", [
    ("B", "B"), ("B.", "B"), ("(B)", "B"), ("[B]", "B"), ("B)", "B"), ("b", "B"), ("Answer: B", "B"),
    ("answer: b", "B"), ("The answer is B because it meows.", "B"), ("Option B", "B"), ("B. Cat", "B"),
    ("B: Cat", "B"), ("B is right", "B"), ("  A", "A"), ("A Dog", "A"), ("A, surely", "A"),
    ("B. Dog", "B"),                                    # the letter wins over the text after it
    ("A cat.", "B"), ("a dog", "A"),                    # "A"/"a" followed by a word is the article
    ("Cat", "B"), ("cat.", "B"), ("It is a cat.", "B"), ("DOG", "A"),
    ("Both a dog and a cat", None), ("Bird", None), ("", None), ("C", None),
    ("Catalog", None),                                  # "cat" only inside another word
])
def test_parse_two_options(reply, expected):
    letter, how = parse_choice(reply, AB)
    assert letter == expected
    assert (how in (None, "ambiguous")) == (expected is None)


# Hand-read: what a person reading the reply takes as the chosen option (None: no single option).
@pytest.mark.parametrize("reply,expected,how", [
    ("**B**", "B", "letter"), ("*B*", "B", "letter"), ("Answer: **B**", "B", "letter"), ("- B", "B", "letter"),
    ("> B", "B", "letter"), ("### B", "B", "letter"), ("I think B", "B", "letter"),
    ("I think the answer is C.", "C", "letter"), ("My answer is: D", "D", "letter"),
    ("The answer is option B", "B", "letter"), ("`C`", "C", "letter"), ("**B.** Green", "B", "letter"),
    ("Answer:\n\n**A**", "A", "letter"), ("- **Green**", "B", "text"),
    ("B or C", None, "ambiguous"), ("B/C", None, "ambiguous"), ("B and D", None, "ambiguous"),
    ("(A) or (C)", None, "ambiguous"), ("**B** or **C**", None, "ambiguous"), ("I think B or C", None, "ambiguous"),
    ("red or green", None, "ambiguous"), ("I am not sure", None, None), ("E", None, None),
])
def test_parse_markdown_hedges_and_two_options_named(reply, expected, how):
    assert parse_choice(reply, ABCD) == (expected, how)


def test_ambiguous_replies_are_unparsed_wrong_and_counted(tmp_path):
    items = {"bo": [Item("y/bo/mc/0", "bo", MC, "?", options=ABCD, answer="B"),
                    Item("y/bo/mc/1", "bo", MC, "?", options=ABCD, answer="B"),
                    Item("y/bo/mc/2", "bo", MC, "?", options=ABCD, answer="B")]}
    res = _run(MultipleChoice(), items, {"y/bo/mc/0": "B or C", "y/bo/mc/1": "**B**", "y/bo/mc/2": "no idea"},
               tmp_path)
    assert res["value"] == pytest.approx(1 / 3) and res["n_unparsed"] == 2 and res["n_ambiguous"] == 1


@pytest.mark.parametrize("reply,expected", [
    ("hot dog", "C"), ("It looks like a hot dog to me", "C"),   # "dog" inside "hot dog" does not count
    ("a dog, not a hot dog", None), ("green", "B"), ("red and green", None), ("D", "D"), ("(c)", "C"),
])
def test_parse_nested_option_texts(reply, expected):
    assert parse_choice(reply, ABCD)[0] == expected


def test_circular_items_rotate_texts_and_follow_the_answer():
    base = Item("y/bo/mc/3", "bo", MC, "What is <sks>?", options=ABCD, answer="C", meta=(("source", "f.json"),))
    rots = circular_items(base)
    assert [r.id for r in rots] == [f"y/bo/mc/3@{k}" for k in range(4)]
    assert rots[0].options == ABCD and rots[0].answer == "C"
    assert [t for _, t in rots[1].options] == ["Green", "Hot dog", "Dog", "Red"] and rots[1].answer == "B"
    assert [t for _, t in rots[3].options] == ["Dog", "Red", "Green", "Hot dog"] and rots[3].answer == "D"
    for r in rots:
        assert [lt for lt, _ in r.options] == ["A", "B", "C", "D"]
        assert dict(r.options)[r.answer] == "Hot dog"
        meta = dict(r.meta)
        assert meta["base_id"] == base.id and meta["n_rotations"] == "4" and meta["source"] == "f.json"
    assert sorted(r.answer for r in rots) == ["A", "B", "C", "D"]    # the right answer visits every letter
    assert len(circular_items(Item("x", "bo", MC, options=AB, answer="A"), n_rotations=1)) == 1
    with pytest.raises(ValueError):
        circular_items(Item("x", "bo", MC, options=AB, answer="C"))


def _run(ev, concepts_items, replies, tmp_path):
    preds = {}
    for items in concepts_items.values():
        for it in items:
            r = replies.get(it.id)
            if r is not None:
                preds[it.id] = Prediction(it.id, it.concept, MC, it.prompt, text=r if r != "ERR" else None,
                                          error="OOM" if r == "ERR" else None)
    by_concept = {c: ev.score(Concept(c, "pet", "dog"), [i for i in items if i.id in preds], preds,
                              EvalContext(run_dir=Path(tmp_path)))
                  for c, items in concepts_items.items()}
    res = aggregate(by_concept, ev)
    res.update(ev.extra_aggregates(by_concept))
    return res


def _skewed(concept: str, n: int, n_b: int) -> list[Item]:
    """n two-option questions, the first n_b with the answer at B (like Yo'LLaVA's text QA: mostly A)."""
    items = []
    for q in range(n):
        base = Item(f"y/{concept}/mc/{q}", concept, MC, "Is <sks> a dog or a cat?",
                    options=(("A", "Dog"), ("B", "Cat")) if q >= n_b else (("A", "Cat"), ("B", "Dog")),
                    answer="A" if q >= n_b else "B")
        items += circular_items(base)
    return items


def test_circular_value_const_a_and_unparsed_by_hand(tmp_path):
    items = {"bo": _skewed("bo", 5, 1), "mam": _skewed("mam", 2, 0)}
    # The right text is "Dog" everywhere. bo: q0 right in both orders (letters), q1 right only in order 0,
    # q2 right in both (text answers), q3 unparsed in order 1, q4 right in both ("(A)" and "Dog").
    replies = {"y/bo/mc/0@0": "B", "y/bo/mc/0@1": "A.",
               "y/bo/mc/1@0": "A", "y/bo/mc/1@1": "A",
               "y/bo/mc/2@0": "dog", "y/bo/mc/2@1": "It is a dog.",
               "y/bo/mc/3@0": "A", "y/bo/mc/3@1": "I am not sure",
               "y/bo/mc/4@0": "(A)", "y/bo/mc/4@1": "Dog",
               # mam: q0 a constant "A" answerer; q1 right in both orders
               "y/mam/mc/0@0": "A", "y/mam/mc/0@1": "A",
               "y/mam/mc/1@0": "Answer: A", "y/mam/mc/1@1": "B"}
    res = _run(MultipleChoice(), items, replies, tmp_path)
    assert res["per_concept"] == {"bo": pytest.approx(3 / 5), "mam": pytest.approx(1 / 2)}
    assert res["value"] == pytest.approx((3 / 5 + 1 / 2) / 2)
    assert res["n"] == 14 and res["n_failed"] == 0 and res["n_unparsed"] == 1 and res["n_questions"] == 7
    # per order: bo 8 of 10 right, mam 3 of 4
    assert res["per_order_accuracy"] == pytest.approx((8 / 10 + 3 / 4) / 2)
    # constant "A": never right in every order of a rotated question; right in half the orders
    assert res["const_a_accuracy"] == 0.0
    assert res["const_a_per_order_accuracy"] == pytest.approx(0.5)


def test_failed_or_missing_orders_leave_the_question_out(tmp_path):
    items = {"bo": _skewed("bo", 3, 0)}
    replies = {"y/bo/mc/0@0": "A", "y/bo/mc/0@1": "B",         # right in both
               "y/bo/mc/1@0": "A", "y/bo/mc/1@1": "ERR",       # a model error in one order
               "y/bo/mc/2@0": "A"}                             # order 1 missing
    res = _run(MultipleChoice(), items, replies, tmp_path)
    assert res["value"] == 1.0 and res["n_questions"] == 1 and res["n_incomplete"] == 2
    assert res["n_failed"] == 1 and res["n"] == 4


def test_yochameleon_preset_text_substring_without_rotation(tmp_path):
    items = {"bo": _skewed("bo", 10, 1)}                        # 9 of 10 answers at A in the original order
    replies = {it.id: "A" for it in items["bo"]}                 # a constant "A" answerer ...
    res = _run(MultipleChoice(preset="yochameleon"), items, replies, tmp_path)
    # ... is scored by option text, so a bare letter is never right, and only rotation 0 is used
    assert res["value"] == 0.0 and res["n"] == 10 and res["n_unparsed"] == 10 and res["circular"] is False
    assert res["const_a_accuracy"] == pytest.approx(0.9)          # the skew a letter-based scorer would reward
    replies = {it.id: "a dog or a cat" for it in items["bo"]}    # naming both options counts as right
    assert _run(MultipleChoice(preset="yochameleon"), items, replies, tmp_path)["value"] == 1.0
    replies = {it.id: "hotdog" for it in items["bo"]}            # substring, not whole word
    assert _run(MultipleChoice(preset="yochameleon"), items, replies, tmp_path)["value"] == pytest.approx(1.0)


def test_non_circular_default_parser_and_const_a(tmp_path):
    items = {"bo": _skewed("bo", 10, 1)}
    replies = {it.id: "A" for it in items["bo"]}
    res = _run(MultipleChoice(circular=False), items, replies, tmp_path)
    assert res["value"] == pytest.approx(0.9) and res["const_a_accuracy"] == pytest.approx(0.9)
    res = _run(MultipleChoice(), items, replies, tmp_path)       # circular: the constant answerer gets 0
    assert res["value"] == 0.0 and res["const_a_accuracy"] == 0.0


def test_plain_items_without_rotations_are_their_own_question(tmp_path):
    items = {"bo": [Item("y/bo/mc/0", "bo", MC, "?", options=AB, answer="A"),
                    Item("y/bo/mc/1", "bo", MC, "?", options=AB, answer="B")]}
    res = _run(MultipleChoice(), items, {"y/bo/mc/0": "A", "y/bo/mc/1": "Dog"}, tmp_path)
    assert res["value"] == 0.5 and res["const_a_accuracy"] == 0.5 and res["n_questions"] == 2


def test_registered_and_validated():
    assert EVALUATORS.get("mc") is MultipleChoice and MultipleChoice.tasks == {MC}
    with pytest.raises(UserError):
        MultipleChoice(parser="regex")
    assert MultipleChoice(preset="yochameleon").describe()["params"] == {"parser": "text_substring",
                                                                         "circular": False, "aggregation": "pooled",
                                                                         "beside_default": False}


def test_by_kind_reports_visual_and_text_questions_apart(tmp_path):
    """Yo'LLaVA's visual and text-only A/B questions share the task `mc`; `by_kind` separates them."""
    def question(concept, q, kind):
        base = Item(f"y/{concept}/mc/{kind}{q}", concept, MC, "Is <sks> a dog or a cat?", options=AB, answer="A",
                    meta=(("kind", kind),))
        return circular_items(base)
    items = {"bo": question("bo", 0, "visual_qa") + question("bo", 1, "visual_qa") + question("bo", 2, "text_qa"),
             "mam": question("mam", 0, "text_qa")}
    replies = {}
    for its in items.values():
        for it in its:   # answer "Dog" (always right) except bo's visual question 1, order 1
            replies[it.id] = "Cat" if it.id == "y/bo/mc/visual_qa1@1" else "Dog"
    res = _run(MultipleChoice(), items, replies, tmp_path)
    visual, text = res["by_kind"]["visual_qa"], res["by_kind"]["text_qa"]
    assert visual["per_concept"] == {"bo": 0.5} and visual["value"] == 0.5 and visual["n"] == 4
    assert text["per_concept"] == {"bo": 1.0, "mam": 1.0} and text["value"] == 1.0 and text["n"] == 4
    assert res["value"] == pytest.approx((2 / 3 + 1.0) / 2)               # all of them: bo 2 of 3, mam 1 of 1
    plain = {c: [circular_items(Item(f"{c}/x", c, MC, "?", options=AB, answer="A"))[0]] for c in ("bo",)}
    assert "by_kind" not in _run(MultipleChoice(), plain, {"bo/x@0": "Dog"}, tmp_path)


def test_yochameleon_preset_pools_every_question(tmp_path):
    """chameleon-qa.py: correct / total over all questions of all concepts, not a mean of concept means."""
    items = {"bo": _skewed("bo", 4, 0), "mam": _skewed("mam", 3, 0)}     # the right text is "Dog" everywhere
    replies = {f"y/bo/mc/{q}@0": ("a dog" if q == 0 else "a cat") for q in range(4)}
    replies.update({f"y/mam/mc/{q}@0": "Dog!" for q in range(3)})
    pooled = _run(MultipleChoice(preset="yochameleon"), items, replies, tmp_path)
    assert pooled["value"] == pytest.approx(4 / 7)                        # 1 + 3 right of 4 + 3
    assert pooled["per_concept"] == {"bo": pytest.approx(1 / 4), "mam": 1.0}
    by_concept = _run(MultipleChoice(preset="yochameleon", aggregation="concept_mean"), items, replies, tmp_path)
    assert by_concept["value"] == pytest.approx((1 / 4 + 1) / 2)
    with pytest.raises(UserError):
        MultipleChoice(aggregation="median")


def test_unictokens_preset_gt_in_pred_single_order_with_our_circular_beside(tmp_path):
    """eval_p_mmu.py's `gt in pred` on rotation 0 (a coin flip scores 0.5 on A/B), our circular figure beside."""
    items = {"bo": _skewed("bo", 4, 0)}                        # "Dog" (A) is right in rotation 0
    # rotation 0 replies, by hand under `gt in pred`: right, wrong (case), right (both named), wrong
    replies = {"y/bo/mc/0@0": "Dog", "y/bo/mc/1@0": "dog", "y/bo/mc/2@0": "Dog or Cat", "y/bo/mc/3@0": "B",
               "y/bo/mc/0@1": "B", "y/bo/mc/1@1": "B", "y/bo/mc/2@1": "B", "y/bo/mc/3@1": "B"}
    res = _run(MultipleChoice(preset="unictokens"), items, replies, tmp_path)
    assert res["value"] == pytest.approx(2 / 4) and res["n"] == 4 and res["circular"] is False
    ours = res["beside_default"]
    # default parser, circular: q0 A(text Dog) then B(Dog at B) -> right; q1 "dog" -> A then B -> right;
    # q2 ambiguous -> wrong; q3 B at rotation 0 is Cat -> wrong
    assert ours["preset"] == "default" and ours["value"] == pytest.approx(2 / 4) and ours["circular"] is True
    assert ours["n"] == 8 and ours["n_ambiguous"] == 1
    coin = {it.id: "AB"[(k // 2) % 2] for k, it in enumerate(items["bo"])}   # A, B, A, B by question
    res = _run(MultipleChoice(preset="unictokens", parser="letter_or_text"), items, coin, tmp_path)
    assert res["value"] == pytest.approx(0.5) and res["beside_default"]["value"] == 0.0
