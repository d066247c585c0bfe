"""Scoring: each evaluator over a run's predictions -> per-metric results and samples/<evaluator>.jsonl.

Shared by `run` (runner.py) and `eval` (evaluate.py). An item of an evaluator's tasks without a
prediction is counted in `n_missing`, never scored as 0.
"""
from __future__ import annotations

from pathlib import Path

from unifybench.data.schema import Benchmark, Concept, Prediction
from unifybench.progress import Progress, maybe_task
from unifybench.runspec import RunSpec, eval_context
from unifybench.stats import bootstrap_ci
from unifybench.store import write_jsonl


def score(benchmark: Benchmark, concepts: list[Concept], predictions: dict[str, list[Prediction]],
          evaluators: list, out: Path, spec: RunSpec, progress: Progress | None = None,
          run_dir: Path | None = None) -> dict:
    """Score predictions with each evaluator; writes out/samples/<evaluator>.jsonl, returns the results.

    Image paths in predictions are relative to `run_dir` (default: `out`)."""
    from unifybench.evaluators.base import aggregate
    ctx = eval_context(spec, run_dir or out)
    results = {}
    for ev in evaluators:
        by_concept = {}
        rows = []
        n_missing = 0  # items of this evaluator's tasks without a prediction (never scored as 0)
        task_of: dict[str, str] = {}
        with maybe_task(progress, f"scoring {ev.name}", len(concepts)) as advance:
            for concept in concepts:
                items = [i for i in benchmark.items(concept) if i.task in ev.tasks]
                preds = {p.id: p for p in predictions.get(concept.name, []) if p.task in ev.tasks}
                n_missing += sum(1 for i in items if i.id not in preds)
                items = [i for i in items if i.id in preds]
                if not items:
                    advance()
                    continue
                scores = ev.score(concept, items, preds, ctx)
                if not scores:  # e.g. face similarity on a non-person concept: not a null concept value
                    advance()
                    continue
                by_concept[concept.name] = scores
                task_of.update({i.id: i.task for i in items})
                rows.extend(_sample_row(s, preds, spec.tiny) for s in scores)
                advance()
        if not by_concept:
            off = ev.needs_service and not spec.judge_enabled
            results[ev.name] = {"value": None, "n": 0, "n_failed": 0, "n_missing": n_missing, "per_concept": {},
                                "preset": ev.preset, **({"off": True} if off else {}),
                                "note": "switched off (--judge none)" if off else "no scorable samples"}
            continue
        result = aggregate(by_concept, ev)
        result.update(ev.extra_aggregates(by_concept))
        result["ci95"] = bootstrap_ci(result["per_concept"], seed=spec.seed)
        if len(ev.tasks) > 1:  # e.g. BLEU over VQA and text QA: the papers report them apart
            result["by_task"] = _by_task(by_concept, task_of, ev)
        result["n_missing"] = n_missing
        result["preset"] = ev.preset
        results[ev.name] = result
        write_jsonl(out / "samples" / f"{ev.name}.jsonl", rows)
    return results


def _by_task(by_concept: dict, task_of: dict[str, str], ev) -> dict:
    """The same aggregate over each task's samples alone."""
    from unifybench.evaluators.base import aggregate
    out = {}
    for task in sorted(set(task_of.values())):
        sub = {c: [s for s in scores if task_of.get(s.id.split("#")[0]) == task] for c, scores in by_concept.items()}
        sub = {c: v for c, v in sub.items() if v}
        if sub:
            out[task] = aggregate(sub, ev)
    return out


def _sample_row(s, preds: dict[str, Prediction], tiny: bool) -> dict:
    pred = preds.get(s.id.split("#")[0])
    row = {"id": s.id, "concept": s.concept}
    if pred is not None:
        row["task"] = pred.task
        row["prompt"] = pred.prompt
        if pred.text is not None:
            row["answer"] = pred.text
        if "#" in s.id and pred.images:
            row["image"] = pred.images[int(s.id.split("#")[1])]
        elif pred.images:
            row["images"] = pred.images
    row.update(s.to_json())
    if tiny:
        row["tiny_model"] = True
    return row
