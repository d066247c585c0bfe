"""The evaluator interface: score items one concept at a time, then aggregate over concepts.

Like torchmetrics' update/compute split: `score` turns predictions into per-sample scores (kept in the
samples log), `concept_value` reduces one concept's samples, and `aggregate` (shared by all) reduces
concepts. A sample that could not be scored carries `failed` with the reason; it is counted in
`n_failed` and never turned into a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError


@dataclass
class SampleScore:
    id: str                     # item id, or "<item id>#<k>" for the k-th image of an item
    concept: str
    score: float | None         # None when failed
    failed: str | None = None   # reason, when the sample could not be scored
    detail: dict[str, Any] = field(default_factory=dict)   # parsed answer, label, ...

    def to_json(self) -> dict:
        d = {"id": self.id, "concept": self.concept, "score": self.score}
        if self.failed is not None:
            d["failed"] = self.failed
        d.update(self.detail)
        return d


@dataclass
class EvalContext:
    """What an evaluator may use besides the predictions."""

    run_dir: Path                  # image paths in predictions are relative to this
    device: str = "cpu"
    dtype: str = "float32"
    cache_dir: Path | None = None  # embedding caches, tiny model cache
    models: dict[str, str] = field(default_factory=dict)   # e.g. {"clip": "/path/to/ckpt"}
    tiny: bool = False             # use the tiny random models (the embedded default)
    seed: int = 0
    judge_base_url: str | None = None   # OpenAI-compatible server; the key comes from the environment
    judge_model: str | None = None
    judge_enabled: bool = True          # False: `--judge none`, judge metrics are reported as off


class Evaluator:
    name: str = ""
    kind: str = "items"                        # "items": scores predictions; "model": a forgetting evaluator
    version: str = "1"
    tasks: frozenset[str] = frozenset()        # item tasks this evaluator scores
    higher_is_better: bool = True
    needs_service: bool = False                # True: calls a judge server (off unless one is given)
    presets: dict[str, dict[str, Any]] = {}    # named parameter sets; "default" is the paper's
    defaults: dict[str, Any] = {}
    missing_score: float = 0.0                 # what an asked item without a prediction scores (see score_missing)

    def __init__(self, preset: str | None = None, **params: Any):
        if preset is not None and preset not in self.presets:
            raise UserError(f"evaluator {self.name!r} has no preset {preset!r} "
                            f"(known: {', '.join(sorted(self.presets)) or 'none'})")
        self.preset = preset or "default"
        merged = dict(self.defaults)
        merged.update(self.presets.get(self.preset, {}))
        unknown = set(params) - set(merged) - {"types"}
        if unknown:
            raise UserError(f"evaluator {self.name!r} has no parameter {sorted(unknown)[0]!r} "
                            f"(known: {', '.join(sorted(merged))})")
        merged.update(params)
        self.params = merged

    def describe(self) -> dict[str, Any]:
        """Recorded in results.json so a number always says how it was made."""
        return {"version": self.version, "preset": self.preset, "params": self.params,
                "higher_is_better": self.higher_is_better}

    def selects(self, item: Item) -> bool:
        """Whether this evaluator scores `item`: with param `types` (a preset's, e.g. MC-LLaVA's single-concept
        portion), only items whose meta "type" is one of them; otherwise every item of its tasks."""
        types = self.params.get("types")
        return not types or dict(item.meta).get("type") in types

    def environment(self) -> dict[str, Any]:
        """Runtime facts worth recording (e.g. onnxruntime providers actually applied)."""
        return {}

    def check(self, ctx: EvalContext) -> None:
        """For an evaluator that `needs_service`: raise a one-line `UserError` when the service cannot be
        used (e.g. no judge server given); a judge evaluator's `needs` calls it before any work starts."""

    def needs(self, ctx: EvalContext, concepts: list[Concept] | None) -> list:
        """Every weight, data folder and service scoring will load or call (`unifybench.needs.Need`s), checked
        before any work starts; `concepts`: the run's, or None when unknown. Default: nothing."""
        return []

    def for_tiny_run(self) -> None:
        """Adjust to the tiny preset before the run is checked (default: nothing; the forgetting evaluators
        switch to their bundled mini data when no data is given)."""

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        raise NotImplementedError

    def score_missing(self, concept: Concept, items: list[Item], ctx: EvalContext) -> list[SampleScore]:
        """Samples for asked items that have no prediction: each scores what a wrong answer scores here
        (`missing_score`: 0 for every metric of the suite: an unrecognised photo, a wrong option, BLEU and
        judge 0, a similarity of 0), marked `missing` in the samples log. An evaluator whose aggregation
        reads more of a sample (a label, an option order) fills that in."""
        return [SampleScore(i.id, concept.name, self.missing_score, detail={"missing": True}) for i in items]

    def extra_aggregates(self, scores_by_concept: dict[str, list[SampleScore]]) -> dict[str, Any]:
        """Keys added to the aggregate beside `value` (counts, breakdowns); none by default."""
        return {}

    def report_metrics(self, result: dict) -> dict[str, float | None]:
        """The numbers a table shows for one result (the forgetting tables): its value by default."""
        return {"value": result.get("value")}

    def concept_value(self, scores: list[SampleScore]) -> float | None:
        ok = [s.score for s in scores if s.failed is None]
        return sum(ok) / len(ok) if ok else None

    def benchmark_value(self, per_concept: dict[str, float | None],
                        scores_by_concept: dict[str, list[SampleScore]]) -> float | None:
        """The benchmark's number: the mean of the per-concept values (the papers' "average over concepts").
        An evaluator whose reference pools every sample instead overrides this."""
        valued = [v for v in per_concept.values() if v is not None]
        return sum(valued) / len(valued) if valued else None


def resolve_weights(param: str | None, ctx: EvalContext, role: str, missing: str) -> Path | str:
    """An evaluator's checkpoint, through the one weights resolver: the run's `--model ROLE=`, else its
    `backbone` param ("tiny", a folder, a cached hub id), else the tiny model in tiny runs; else `missing`."""
    from unifybench.models.weights import resolve
    return resolve(role, param, ctx, missing=missing)


def weights_need(param: str | None, ctx: EvalContext, role: str, missing: str, who: str):
    """`resolve_weights`'s checkpoint as a declared need (the same resolver, nothing loaded)."""
    from unifybench import needs
    return needs.weights(role, param, ctx, f"evaluator {who}", missing=missing)


def aggregate(scores_by_concept: dict[str, list[SampleScore]], evaluator: Evaluator) -> dict[str, Any]:
    """`{value, n, n_failed, per_concept}`: value is `evaluator.benchmark_value` (by default the mean of the
    per-concept values)."""
    per_concept: dict[str, float | None] = {}
    n = n_failed = 0
    for concept in sorted(scores_by_concept):
        scores = scores_by_concept[concept]
        n += sum(1 for s in scores if s.failed is None)
        n_failed += sum(1 for s in scores if s.failed is not None)
        per_concept[concept] = evaluator.concept_value(scores)
    return {"value": evaluator.benchmark_value(per_concept, scores_by_concept), "n": n, "n_failed": n_failed,
            "per_concept": per_concept}
