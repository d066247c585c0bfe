"""Scoring: each evaluator over a run's predictions -> per-metric results and samples/<evaluator>.jsonl.

Shared by `run` (runner.py) and `eval` (evaluate.py). Text answers are stripped as the runner's decoding
strips them; an asked item without a prediction scores as a wrong answer and is counted in `n_missing`
(`--missing exclude`: left out of every denominator, only counted); see `score`.
"""
from __future__ import annotations

from pathlib import Path

from unifybench.data.schema import Benchmark, Concept, Prediction
from unifybench.errors import UserError
from unifybench.progress import Progress, maybe_task
from unifybench.runspec import RunSpec, eval_context
from unifybench.stats import bootstrap_ci
from unifybench.store import write_jsonl


MISSING = ("wrong", "exclude")


def score(benchmark: Benchmark, concepts: list[Concept], predictions: dict[str, list[Prediction]],
          evaluators: list, out: Path, spec: RunSpec, progress: Progress | None = None,
          run_dir: Path | None = None, asked: dict[str, set[str]] | None = None) -> dict:
    """Score predictions with each evaluator; writes out/samples/<evaluator>.jsonl, returns the results.

    Image paths in predictions are relative to `run_dir` (default: `out`). Every text answer is stripped
    first (:func:`decoded_text`), as the runner's own decoding does, so `eval` of bring-your-own answers
    scores what `run` would. `asked` (concept -> item ids; None: every item) is what the method was set to
    answer: an asked item without a prediction is **missing** and, under ``spec.missing == "wrong"`` (the
    default), scored as a wrong answer (`Evaluator.score_missing`) and counted in ``n_missing``; under
    ``"exclude"`` (the old behaviour, only on request) it is left out of every denominator and only counted.
    Items outside `asked` (a recorded `gen_prompts_limit`) are counted in ``n_not_asked``, never scored."""
    from unifybench.evaluators.base import aggregate
    if spec.missing not in MISSING:
        raise UserError(f"--missing must be one of {', '.join(MISSING)}, got {spec.missing!r}")
    ctx = eval_context(spec, run_dir or out)
    results = {}
    for ev in evaluators:
        by_concept = {}
        rows = []
        n_missing = n_not_asked = 0
        task_of: dict[str, str] = {}
        with maybe_task(progress, f"scoring {ev.name}", len(concepts)) as advance:
            for concept in concepts:
                items = [i for i in benchmark.items(concept) if i.task in ev.tasks and ev.selects(i)]
                preds = {p.id: decoded_text(p) for p in predictions.get(concept.name, []) if p.task in ev.tasks}
                if asked is not None:
                    scope = asked.get(concept.name, set())
                    n_not_asked += sum(1 for i in items if i.id not in scope and i.id not in preds)
                    items = [i for i in items if i.id in scope or i.id in preds]
                missing = [i for i in items if i.id not in preds]
                n_missing += len(missing)
                items = [i for i in items if i.id in preds]
                scores = ev.score(concept, items, preds, ctx) if items else []
                if missing and spec.missing == "wrong":
                    scores = scores + ev.score_missing(concept, missing, ctx)
                if not scores:  # e.g. face similarity on a non-person concept: not a null concept value
                    advance()
                    continue
                by_concept[concept.name] = scores
                task_of.update({i.id: i.task for i in items + missing})
                rows.extend(_sample_row(s, preds, spec.tiny) for s in scores)
                advance()
        counts = {"n_missing": n_missing, "missing": spec.missing,
                  **({"n_not_asked": n_not_asked} if n_not_asked else {})}
        if not by_concept:
            off = ev.needs_service and not spec.judge_enabled
            results[ev.name] = {"value": None, "n": 0, "n_failed": 0, **counts, "per_concept": {},
                                "preset": ev.preset, **({"off": True} if off else {}),
                                "note": "switched off (--judge none)" if off else "no scorable samples"}
            continue
        result = aggregate(by_concept, ev)
        result.update(ev.extra_aggregates(by_concept))
        result["ci95"] = bootstrap_ci(result["per_concept"], seed=spec.seed)
        if len(ev.tasks) > 1:  # e.g. BLEU over VQA and text QA: the papers report them apart
            result["by_task"] = _by_task(by_concept, task_of, ev)
        result.update(counts)
        result["preset"] = ev.preset
        results[ev.name] = result
        write_jsonl(out / "samples" / f"{ev.name}.jsonl", rows)
    return results


def decoded_text(p: Prediction) -> Prediction:
    """The prediction with its text stripped of surrounding whitespace, as every runner decoding leaves it
    (`tokenizer.decode(...).strip()`): a padded bring-your-own answer scores what the same answer from `run`
    scores (character BLEU of " Red. " against "Red." is not 1 unstripped)."""
    if p.text is None or p.text == p.text.strip():
        return p
    import dataclasses
    return dataclasses.replace(p, text=p.text.strip())


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
