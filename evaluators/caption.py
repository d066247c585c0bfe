"""Caption recall: how many of the concepts in an image a caption names (MC-LLaVA's caption score).

Each caption item's ``meta`` "type" and "names" come from the benchmark (``mc-llava``): a single-concept
image (``si``) scores 1 when the caption contains the concept's identifier ``<name>`` (its placeholder, if
the model echoed it, counts as that), else 0; a multi-concept image (``mi``) scores the fraction of the
concepts present (``position.json`` non-null) whose *bare* name occurs in the caption, as substrings,
case-sensitive, as MC-LLaVA eval.py (``analyze_caption``) does. Per concept the mean over its items (the
reference's total is the same mean over one scenario's items), then the mean over concepts. A model
error is a failed sample; an item without names cannot be scored (failed, counted).
"""
from __future__ import annotations

from typing import Any

from unifybench.data.schema import CAPTION, Concept, Item, Prediction
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore
from unifybench.evaluators.judge_qa import concept_text


class CaptionRecall(Evaluator):
    name = "caption"
    description = "Caption recall (MC-LLaVA): the concepts in the image that the caption names"
    version = "1"
    tasks = frozenset({CAPTION})
    defaults: dict[str, Any] = {
        "single_as": "<{name}>",   # what a single-concept caption must contain ({name}: the concept)
        "multi_as": "{name}",      # what a multi-concept caption must contain per concept present
    }
    presets = {"default": {}, "mc-llava": {}}

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        out = []
        for item in items:
            meta = dict(item.meta)
            names = [n for n in meta.get("names", "").split(",") if n]
            kind = meta.get("type", "si" if len(names) == 1 else "mi")
            pred = predictions.get(item.id)
            reason = ("no prediction" if pred is None else f"model error: {pred.error}" if pred.error is not None
                      else "no text answer" if pred.text is None
                      else "item names no concept to look for" if not names else None)
            detail = {"type": kind, "names": names}
            if reason:
                out.append(SampleScore(item.id, concept.name, None, failed=reason, detail=detail))
                continue
            text = concept_text(pred.text, concept, "<{name}>")
            form = self.params["single_as"] if kind == "si" else self.params["multi_as"]
            found = [n for n in names if form.format(name=n) in text]
            value = float(bool(found)) if kind == "si" else len(found) / len(names)
            detail["found"] = found
            out.append(SampleScore(item.id, concept.name, value, detail=detail))
        return out
