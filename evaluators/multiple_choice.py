"""Multiple choice with circular evaluation (Yo'LLaVA visual and text QA, MMBench-style items).

**How option orders are represented.** A benchmark loader turns each question into one :class:`Item` per
option order with :func:`circular_items`: rotation ``k`` shifts the option texts by ``k`` places (the
letters stay A, B, ...; ``answer`` follows its text), the id is ``"<base id>@<k>"`` and ``meta`` holds
``("base_id", <base id>)``, ``("rotation", "<k>")`` and ``("n_rotations", "<N>")``. Rotation 0 is the order
in the source file. A model answers every order as a separate item.

**Parsing** (``parser="letter_or_text"``, the default): markdown emphasis (``**B**``, ``*B*``, backticks) and
leading heading, quote and list markers (``### B``, ``> B``, ``- B``) are dropped; then the reply's option
letter, read at the start of the reply ("B", "B.", "(B)", "B) cat", "Answer: B", "The answer is B", "The
answer is option B", hedged: "I think B", "My answer is B"; a bare "A" followed by a word is the article
unless that word is option A's text), else the option text: the whole reply equal to one option's text, or
exactly one option's text contained as a whole phrase (case-insensitive; an option whose every match lies
inside a longer matching option's match does not count). A reply naming two options ("B or C", "B/C", "B
and C", "a dog or a cat") is **ambiguous**: unparsed, and counted apart as ``n_ambiguous``. Anything
unparsed is scored wrong and counted in ``n_unparsed``.

**Score.** Each order is scored 0/1. With ``circular=True`` a question counts as correct only if every one
of its orders is correct; a question with a failed order (a model error) or with orders missing is left
out (``n_incomplete``); the runner gives an asked order without an answer a wrong score (``score_missing``)
unless ``--missing exclude``. Per concept the mean over questions, then the mean over concepts
(``aggregation="concept_mean"``); ``aggregation="pooled"``: correct questions / all questions, over every
concept at once (the per-concept values stay beside it).

Beside the value: ``const_a_accuracy``, the same number for an answerer that always picks the first
option ("A"), on the same items; ``per_order_accuracy`` and ``const_a_per_order_accuracy`` (every order
scored on its own); ``n_unparsed`` (of which ``n_ambiguous``), ``n_questions``, ``n_incomplete``. Yo'LLaVA's
text QA has the answer at "A" for 396 of its 400 questions, so without rotations a constant "A" would score
0.99.

Preset ``yochameleon``: the rule of the Yo'Chameleon Chameleon QA baselines (``baselines/chameleon-qa.py``):
correct iff the correct option's text, lower-cased, occurs as a substring of the lower-cased reply (an answer
naming both options counts as correct), on the orders as given (rotation 0 only), no circular evaluation,
and pooled: the script counts correct answers over all questions of all concepts and divides by the total.

Preset ``unictokens``: UniCTokens' ``eval/eval_p_mmu.py`` rule for its "choice" types, ``gt in pred``: correct
iff the correct option's text occurs in the reply (case-sensitive substring), on the orders as given (rotation
0 only), the mean over concepts: the single-order accuracy of UniCTokens Table 2's Yo'LLaVA "VQA Acc" / "QA
Acc" (a coin flip scores 0.5 on A/B). Its test-data files are not published; the ground truth is taken to be
the option text. Beside it, under ``beside_default``, the default preset's figure on the same answers (letter
or text, circular over every order; a coin flip scores 0.25 on A/B), with its own ``by_kind``: our stricter
number, never the paper's.

Presets ``mc-llava`` / ``mc-llava-single``: MC-LLaVA eval.py's rule: the reply must equal the letter exactly
(``parser="exact"``: "A." or "a" is wrong), no rotations; ``-single`` scores the single-concept items only
(``si_sq`` visual choice and ``s`` text-only choice; ``by_kind`` splits them).
"""
from __future__ import annotations

import re
from typing import Any

from unifybench.data.schema import MC, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.data.option_orders import circular_items, order_info  # noqa: F401  (circular_items: see the module doc)
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore, aggregate

PARSERS = ("letter_or_text", "text_substring", "gt_in_pred", "exact")


# ------------------------------------------------------------------------------------------- parsing

_HEDGE = (r"(?:(?:i\s+(?:think|believe|guess|would\s+say|'d\s+say|choose|pick|go\s+with)"
          r"|my\s+(?:final\s+)?(?:answer|choice|guess)\s+is)\s*[:：]?\s*)?")            # "I think B"
_PREFIX = (_HEDGE + r"(?:(?:the\s+)?(?:correct\s+|right\s+|best\s+|final\s+)?(?:answer|option|choice)"
           r"(?:\s+is)?\s*[:：]?\s*)?(?:(?:option|choice|letter)\s+)?")
_LETTER = re.compile(rf"^\s*(?P<prefix>{_PREFIX})(?P<open>[(\[]?)(?P<letter>[A-Za-z])(?P<close>[)\]]?)"
                     r"(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_EDGE = ".,;:!?\"'`*()[]{} \t\n"
_MARKUP = re.compile(r"[*`]+")                     # **B**, *B*, `B`: emphasis and code marks
_LEAD = re.compile(r"^[\s#>\-+•]+")                 # "### B", "> B", "- B": heading, quote, list markers
_SECOND = re.compile(r"^\s*[)\].:]?\s*(?:or|and|&|/|,)\s*(?:option\s+)?[(\[]?(?P<letter>[A-Za-z])(?![A-Za-z0-9])",
                     re.IGNORECASE)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip().strip(_EDGE).strip()


def unmarked(reply: str) -> str:
    """The reply without markdown emphasis and without leading heading, quote and list markers."""
    return _LEAD.sub("", _MARKUP.sub("", reply))


def parse_letter(reply: str, options: tuple[tuple[str, str], ...]) -> str | None:
    """The option letter the reply starts with, or None (see the module doc for the accepted forms).

    A reply that starts with two option letters ("B or C", "B/C", "B and C") names no single option: None
    (the caller counts it as ambiguous, see :func:`is_ambiguous`)."""
    m = _LETTER.match(unmarked(reply))
    if not m:
        return None
    letter, rest, prefix = m.group("letter"), m.group("rest"), bool(m.group("prefix"))
    opened, closed = bool(m.group("open")), bool(m.group("close"))
    by_upper = {lt.upper(): lt for lt, _ in options}
    if letter.upper() not in by_upper or (opened and not closed) or rest[:1].isalnum():
        return None                                    # not an option, "(B cat", "Ant", "B1"
    found = by_upper[letter.upper()]
    second = _SECOND.match(rest)
    if second and second.group("letter").upper() in by_upper and (letter.isupper() or prefix or closed):
        return None                                    # "B or C", "(B)/(C)": two options named
    tail = rest.strip()
    if closed or not tail.strip(_EDGE):
        return found                                   # "(B)", "B)", "[B] cat", "B", "B.", "b"
    if rest[0] in ".:,;" and (letter.isupper() or prefix):
        return found                                   # "B. cat", "B: cat", "answer: b. cat"
    if letter.isupper() and (prefix or letter not in ("A", "I")):
        return found                                   # "The answer is B because", "B is right"
    text = dict(options)[found]
    if (letter.isupper() or prefix) and text and _norm(tail) == _norm(text):
        return found                                   # "A Dog" where option A is "Dog"
    return None                                        # "A cat sits here": the article


def is_ambiguous(reply: str, options: tuple[tuple[str, str], ...]) -> bool:
    """True when the reply starts with two different option letters joined by or/and/slash/comma."""
    m = _LETTER.match(unmarked(reply))
    if not m or m.group("rest")[:1].isalnum():
        return False
    by_upper = {lt.upper() for lt, _ in options}
    second = _SECOND.match(m.group("rest"))
    return bool(second and m.group("letter").upper() in by_upper and second.group("letter").upper() in by_upper
                and second.group("letter").upper() != m.group("letter").upper()
                and (m.group("letter").isupper() or m.group("prefix") or m.group("close")))


def text_hits(reply: str, options: tuple[tuple[str, str], ...]) -> list[str]:
    """The options whose text is the whole reply, else those contained in it as a whole phrase (an option
    whose every match lies inside a longer option's match does not count)."""
    norm = _norm(unmarked(reply))
    exact = [lt for lt, text in options if _norm(text) and _norm(text) == norm]
    if len(exact) == 1:
        return exact
    spans: dict[str, list[tuple[int, int]]] = {}
    for lt, text in options:
        t = _norm(text)
        if t:
            found = [(m.start(), m.end()) for m in re.finditer(rf"(?<!\w){re.escape(t)}(?!\w)", norm)]
            if found:
                spans[lt] = found
    def covered(lt: str) -> bool:   # every match of lt lies inside a longer match of another option
        return all(any(o != lt and os <= s and e <= oe and (oe - os) > (e - s)
                       for o, oss in spans.items() for os, oe in oss) for s, e in spans[lt])
    return [lt for lt in spans if not covered(lt)]


def parse_text(reply: str, options: tuple[tuple[str, str], ...]) -> str | None:
    """The one option whose text is the whole reply or is contained in it as a whole phrase, else None."""
    hits = text_hits(reply, options)
    return hits[0] if len(hits) == 1 else None


def parse_choice(reply: str, options: tuple[tuple[str, str], ...]) -> tuple[str | None, str | None]:
    """(letter, how): how is "letter" or "text"; (None, "ambiguous") when the reply names two or more
    options ("B or C", "a dog or a cat"); (None, None) when it names none."""
    letter = parse_letter(reply, options)
    if letter is not None:
        return letter, "letter"
    if is_ambiguous(reply, options):
        return None, "ambiguous"
    hits = text_hits(reply, options)
    if len(hits) == 1:
        return hits[0], "text"
    return (None, "ambiguous") if len(hits) > 1 else (None, None)


# ----------------------------------------------------------------------------------------- evaluator

class MultipleChoice(Evaluator):
    name = "mc"
    version = "1"
    tasks = frozenset({MC})
    defaults: dict[str, Any] = {
        "parser": "letter_or_text",        # how a reply is read: letter_or_text | text_substring | gt_in_pred | exact
        "circular": True,                  # a question is right only if every option order is right
        "aggregation": "concept_mean",     # "concept_mean" over concepts | "pooled" over all questions
        "beside_default": False,           # also report the default preset's figure on the same answers
    }
    presets = {"default": {},
               "yochameleon": {"parser": "text_substring", "circular": False, "aggregation": "pooled"},
               "unictokens": {"parser": "gt_in_pred", "circular": False, "beside_default": True},
               "mc-llava": {"parser": "exact", "circular": False},
               "mc-llava-single": {"parser": "exact", "circular": False, "types": ["si_sq", "s"]}}

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        if self.params["parser"] not in PARSERS:
            raise UserError(f"mc: parser must be one of {', '.join(PARSERS)}, got {self.params['parser']!r}")
        self._beside: dict[str, list[SampleScore]] = {}
        if self.params["aggregation"] not in ("concept_mean", "pooled"):
            raise UserError(f"mc: aggregation must be 'concept_mean' or 'pooled', got {self.params['aggregation']!r}")

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        out = []
        for item in items:
            base, rotation, n_rot = order_info(item)
            if not self.params["circular"] and rotation != 0:
                continue                                # non-circular: the order as given only
            letters = [lt for lt, _ in item.options]
            detail = {"base_id": base, "rotation": rotation, "n_rotations": n_rot, "gold": item.answer,
                      "first_option": letters[0] if letters else None}
            if dict(item.meta).get("kind"):   # e.g. Yo'LLaVA's visual_qa / text_qa: reported apart (by_kind)
                detail["kind"] = dict(item.meta)["kind"]
            pred = predictions.get(item.id)
            reason = ("no prediction" if pred is None else f"model error: {pred.error}" if pred.error is not None
                      else "no text answer" if pred.text is None
                      else "item has no options" if not item.options
                      else "item's answer is not an option letter" if item.answer not in letters else None)
            if reason:
                out.append(SampleScore(item.id, concept.name, None, failed=reason, detail=detail))
                continue
            if self.params["parser"] == "letter_or_text":
                parsed, how = parse_choice(pred.text, item.options)
                correct = parsed == item.answer
            elif self.params["parser"] == "gt_in_pred":      # case-sensitive, as `gt in pred`
                named = [lt for lt, text in item.options if text and text in pred.text]
                parsed, how = ("".join(named) or None), ("gt_in_pred" if named else None)
                correct = bool(dict(item.options)[item.answer]) and dict(item.options)[item.answer] in pred.text
            elif self.params["parser"] == "exact":
                parsed, how = (pred.text, "exact") if pred.text in letters else (None, None)
                correct = pred.text == item.answer
            else:
                low = pred.text.lower()
                named = [lt for lt, text in item.options if text and text.lower() in low]
                parsed, how = ("".join(named) or None), ("text_substring" if named else None)
                correct = dict(item.options)[item.answer].lower() in low
            detail.update(parsed=parsed, parsed_by=how)
            out.append(SampleScore(item.id, concept.name, 1.0 if correct else 0.0, detail=detail))
        if self.params["beside_default"]:   # our circular figure on the same answers, reported beside
            self._beside[concept.name] = MultipleChoice().score(concept, items, predictions, ctx)
        return out

    def score_missing(self, concept: Concept, items: list[Item], ctx: EvalContext) -> list[SampleScore]:
        """A missing order is a wrong order (its question then is wrong under circular scoring)."""
        out = []
        for item in items:
            base, rotation, n_rot = order_info(item)
            if not self.params["circular"] and rotation != 0:
                continue
            letters = [lt for lt, _ in item.options]
            detail = {"base_id": base, "rotation": rotation, "n_rotations": n_rot, "gold": item.answer,
                      "first_option": letters[0] if letters else None, "parsed": None, "missing": True}
            if dict(item.meta).get("kind"):
                detail["kind"] = dict(item.meta)["kind"]
            out.append(SampleScore(item.id, concept.name, 0.0, detail=detail))
        if self.params["beside_default"]:
            self._beside.setdefault(concept.name, []).extend(MultipleChoice().score_missing(concept, items, ctx))
        return out

    # ---- aggregation

    def _questions(self, scores: list[SampleScore]) -> tuple[list[list[SampleScore]], int]:
        """Complete questions (every order present and scored) and the number left out."""
        groups: dict[str, list[SampleScore]] = {}
        for s in scores:
            groups.setdefault(s.detail.get("base_id", s.id), []).append(s)
        complete, incomplete = [], 0
        for group in groups.values():
            n_rot = group[0].detail.get("n_rotations")
            expected = n_rot if (self.params["circular"] and n_rot) else 1
            if any(s.failed is not None for s in group) or len({s.detail.get("rotation") for s in group}) < expected:
                incomplete += 1
            else:
                complete.append(group)
        return complete, incomplete

    def _value(self, scores: list[SampleScore], const_a: bool) -> float | None:
        def right(s: SampleScore) -> bool:
            return s.detail.get("gold") == s.detail.get("first_option") if const_a else s.score == 1.0
        complete, _ = self._questions(scores)
        if not complete:
            return None
        return sum(all(right(s) for s in g) for g in complete) / len(complete)

    def concept_value(self, scores: list[SampleScore]) -> float | None:
        return self._value(scores, const_a=False)

    def benchmark_value(self, per_concept: dict[str, float | None],
                        scores_by_concept: dict[str, list[SampleScore]]) -> float | None:
        if self.params["aggregation"] == "concept_mean":
            return super().benchmark_value(per_concept, scores_by_concept)
        return self._value([s for c in sorted(scores_by_concept) for s in scores_by_concept[c]], const_a=False)

    def extra_aggregates(self, scores_by_concept: dict[str, list[SampleScore]]) -> dict[str, Any]:
        def mean(values):
            values = [v for v in values if v is not None]
            return sum(values) / len(values) if values else None

        def per_order(scores, const_a):
            ok = [s for s in scores if s.failed is None]
            if not ok:
                return None
            if const_a:
                return sum(s.detail.get("gold") == s.detail.get("first_option") for s in ok) / len(ok)
            return sum(s.score for s in ok) / len(ok)

        concepts = sorted(scores_by_concept)
        kinds = sorted({s.detail["kind"] for c in concepts for s in scores_by_concept[c] if s.detail.get("kind")})
        by_kind = {}
        for kind in kinds:   # the same aggregate over each kind's questions (Yo'LLaVA: visual vs text-only A/B)
            sub = {c: [s for s in scores_by_concept[c] if s.detail.get("kind") == kind] for c in concepts}
            by_kind[kind] = aggregate({c: v for c, v in sub.items() if v}, self)
        n_questions = n_incomplete = 0
        for c in concepts:
            complete, incomplete = self._questions(scores_by_concept[c])
            n_questions += len(complete)
            n_incomplete += incomplete
        return {
            "const_a_accuracy": (mean(self._value(scores_by_concept[c], const_a=True) for c in concepts)
                                 if self.params["aggregation"] == "concept_mean" else
                                 self._value([s for c in concepts for s in scores_by_concept[c]], const_a=True)),
            "per_order_accuracy": mean(per_order(scores_by_concept[c], False) for c in concepts),
            "const_a_per_order_accuracy": mean(per_order(scores_by_concept[c], True) for c in concepts),
            "n_unparsed": sum(1 for c in concepts for s in scores_by_concept[c]
                              if s.failed is None and s.detail.get("parsed") is None and not s.detail.get("missing")),
            "n_ambiguous": sum(1 for c in concepts for s in scores_by_concept[c]
                               if s.failed is None and s.detail.get("parsed_by") == "ambiguous"),
            "n_questions": n_questions,
            "n_incomplete": n_incomplete,
            "circular": bool(self.params["circular"]),
            **({"by_kind": by_kind} if by_kind else {}),
            **({"beside_default": self._beside_result(concepts)} if self.params["beside_default"] else {}),
        }

    def _beside_result(self, concepts: list[str]) -> dict[str, Any]:
        """The default preset's aggregate (letter or text, circular) of the concepts scored here."""
        ours = MultipleChoice()
        sub = {c: self._beside[c] for c in concepts if self._beside.get(c)}
        res = aggregate(sub, ours) if sub else {"value": None}
        return {"preset": "default", **res, **(ours.extra_aggregates(sub) if sub else {})}
