"""Recognition: "is <sks> in this photo?" scored as weighted recall (mean of positive and negative recall).

Per concept, positive recall = correct answers among images that show the concept (label True), negative
recall = correct answers among images that do not; the concept's value is their mean (sklearn's
`balanced_accuracy_score`; if a concept has items of one label only, that label's recall). The benchmark
value is the mean over concepts (UniCTokens "Rec. Weight", Yo'Chameleon `weighted_acc`).

Parsers (param `parser`):
  strict      (default) the first word of the reply, after leading whitespace, punctuation and quotes,
              case-insensitive: "yes" -> yes, "no" -> no, anything else is unparsed, and counted wrong.
  unictokens  UniCTokens eval_p_mmu.py: lower-case the reply; a negative item is correct iff "no" occurs
              anywhere ("not sure", "know", "nose" count), a positive iff "yes" occurs.
  yochameleon Yo'Chameleon yochameleon.py: yes if "Yes" or "yes" occurs anywhere ("eyes" counts),
              otherwise no if "No" or "no" occurs, otherwise unparsed (wrong). Case-sensitive as coded:
              "YES" is not found.
  exact       MC-LLaVA eval.py: the reply must equal "Yes" or "No" exactly (no strip, no lower-casing):
              "Yes." and "yes" are wrong.
Presets ``mc-llava`` (exact, every item) and ``mc-llava-single`` (exact, the single-concept items ``si_sq``
only: UniCTokens Table 2's MC-LLaVA-data Rec-Weight) score the mc-llava benchmark.
A prediction with `error` set is a failed sample (counted in n_failed), never a score.
"""
from __future__ import annotations

import re
from typing import Any

from unifybench.data.schema import REC, Concept, Item, Prediction
from unifybench.errors import UserError

from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore

PARSERS = ("strict", "unictokens", "yochameleon", "exact")
# Leading whitespace/punctuation/quotes, then the first run of letters or digits (Unicode-aware).
_FIRST_WORD = re.compile(r"[\W_]*([^\W_]+)")


def parse_strict(text: str) -> str | None:
    """'yes'/'no' when the reply's first word is yes/no (case-insensitive), else None."""
    m = _FIRST_WORD.match(text)
    if m is None:
        return None
    word = m.group(1).lower()
    return word if word in ("yes", "no") else None


def parse_yochameleon(text: str) -> str | None:
    if "Yes" in text or "yes" in text:
        return "yes"
    if "No" in text or "no" in text:
        return "no"
    return None


def judge(text: str, label: bool, parser: str) -> tuple[bool, str | None]:
    """(correct, parsed answer) for one reply under `parser`."""
    want = "yes" if label else "no"
    if parser == "unictokens":
        low = text.lower()
        has_yes, has_no = "yes" in low, "no" in low
        correct = has_yes if label else has_no
        if has_yes and has_no:
            parsed = want          # counts for either label under this rule
        elif has_yes:
            parsed = "yes"
        elif has_no:
            parsed = "no"
        else:
            parsed = None
        return correct, parsed
    if parser == "exact":
        parsed = {"Yes": "yes", "No": "no"}.get(text)
        return parsed == want, parsed
    parsed = parse_strict(text) if parser == "strict" else parse_yochameleon(text)
    return parsed == want, parsed


class Recognition(Evaluator):
    name = "recognition"
    version = "1"
    tasks = frozenset({REC})
    higher_is_better = True
    needs_service = False
    defaults: dict[str, Any] = {"parser": "strict"}
    presets = {
        "default": {"parser": "strict"},
        "unictokens": {"parser": "unictokens"},
        "yochameleon": {"parser": "yochameleon"},
        "mc-llava": {"parser": "exact"},
        "mc-llava-single": {"parser": "exact", "types": ["si_sq"]},
    }

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        if self.params["parser"] not in PARSERS:
            raise UserError(f"recognition: unknown parser {self.params['parser']!r} (known: {', '.join(PARSERS)})")

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        parser = self.params["parser"]
        out = []
        for item in items:
            if item.task not in self.tasks:
                continue
            pred = predictions.get(item.id)
            detail: dict[str, Any] = {"label": item.label}
            if item.label is None:
                out.append(SampleScore(item.id, concept.name, None, failed="item has no yes/no label", detail=detail))
            elif pred is None:
                out.append(SampleScore(item.id, concept.name, None, failed="no prediction", detail=detail))
            elif pred.error is not None:
                out.append(SampleScore(item.id, concept.name, None, failed=f"model error: {pred.error}",
                                       detail=detail))
            elif pred.text is None:
                out.append(SampleScore(item.id, concept.name, None, failed="prediction has no text", detail=detail))
            else:
                correct, parsed = judge(pred.text, bool(item.label), parser)
                detail.update(parsed=parsed, answer=pred.text)
                out.append(SampleScore(item.id, concept.name, 1.0 if correct else 0.0, detail=detail))
        return out

    def score_missing(self, concept: Concept, items: list[Item], ctx: EvalContext) -> list[SampleScore]:
        """A missing answer is wrong for its label: a positive not recalled, a negative not rejected."""
        return [SampleScore(i.id, concept.name, 0.0, detail={"label": i.label, "parsed": None, "missing": True})
                if i.label is not None else
                SampleScore(i.id, concept.name, None, failed="item has no yes/no label", detail={"label": None})
                for i in items if i.task in self.tasks]

    # --- reductions ---------------------------------------------------------------------------------
    @staticmethod
    def _recalls(scores: list[SampleScore]) -> dict[str, Any]:
        ok = [s for s in scores if s.failed is None]
        pos = [s.score for s in ok if s.detail.get("label") is True]
        neg = [s.score for s in ok if s.detail.get("label") is False]
        return {
            "positive_recall": sum(pos) / len(pos) if pos else None,
            "negative_recall": sum(neg) / len(neg) if neg else None,
            "n_positive": len(pos),
            "n_negative": len(neg),
            "n_unparsed": sum(1 for s in ok if s.detail.get("parsed") is None and not s.detail.get("missing")),
        }

    def concept_value(self, scores: list[SampleScore]) -> float | None:
        r = self._recalls(scores)
        present = [v for v in (r["positive_recall"], r["negative_recall"]) if v is not None]
        return sum(present) / len(present) if present else None

    def extra_aggregates(self, scores_by_concept: dict[str, list[SampleScore]]) -> dict[str, Any]:
        """Merged into the aggregate: positive/negative recall (means over concepts), n_unparsed (total)
        and per-concept details."""
        per = {c: self._recalls(scores_by_concept[c]) for c in sorted(scores_by_concept)}

        def mean_over_concepts(key: str) -> float | None:
            vals = [r[key] for r in per.values() if r[key] is not None]
            return sum(vals) / len(vals) if vals else None

        return {
            "positive_recall": mean_over_concepts("positive_recall"),
            "negative_recall": mean_over_concepts("negative_recall"),
            "n_unparsed": sum(r["n_unparsed"] for r in per.values()),
            "per_concept_detail": per,
        }
