"""`unifybench eval`: score a predictions JSONL written by any model, without running a method."""
from __future__ import annotations

import datetime
from pathlib import Path

import unifybench
from unifybench import environment as env
from unifybench.data.schema import TASKS, Prediction
from unifybench.errors import DataError, UserError
from unifybench.progress import Progress
from unifybench.report import write_run_table
from unifybench.runner import SCHEMA_VERSION, TINY_NOTICE, RunSpec, make_benchmark, make_evaluators, score, select_concepts
from unifybench.store import read_jsonl, write_json


def load_predictions(path: Path) -> list[Prediction]:
    if not path.exists():
        raise UserError(f"predictions file {path} does not exist")
    preds = []
    for n, row in enumerate(read_jsonl(path), 1):
        for key in ("id", "concept", "task"):
            if not isinstance(row.get(key), str):
                raise DataError(path, f"line {n} has no string {key!r}", field=key)
        if row["task"] not in TASKS:
            raise DataError(path, f"line {n}: unknown task {row['task']!r} (known: {', '.join(TASKS)})", field="task")
        if "text" not in row and "images" not in row and "error" not in row:
            raise DataError(path, f"line {n} has neither 'text' nor 'images'", field="text")
        preds.append(Prediction.from_json(row))
    return preds


def evaluate_predictions(spec: RunSpec, path: Path) -> dict:
    benchmark = make_benchmark(spec.benchmark, spec.data_root)
    concepts = select_concepts(benchmark, spec.concepts)
    preds = load_predictions(Path(path))
    tasks = frozenset(p.task for p in preds)
    evaluators = make_evaluators(spec.evaluators, spec.evaluator_presets, tasks,
                                 spec.judge_enabled and bool(spec.judge_base_url))
    by_concept: dict[str, list[Prediction]] = {}
    for p in preds:
        by_concept.setdefault(p.concept, []).append(p)
    # Image paths in the file are relative to the file's folder.
    spec.output_dir = Path(spec.output_dir)
    run_dir = Path(path).resolve().parent
    with Progress(spec.progress) as progress:
        results = score(benchmark, concepts, by_concept, evaluators, spec.output_dir, spec, progress, run_dir)
    doc = {"schema_version": SCHEMA_VERSION, "unifybench_version": unifybench.__version__,
           "git_hash": env.git_hash(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "tiny": spec.tiny, **({"notice": TINY_NOTICE} if spec.tiny else {}),
           "environment": env.environment(spec.device, spec.dtype),
           "config": {"method": {"name": "predictions", "preset": str(path), "config": {}},
                      "benchmark": benchmark.name, "data_root": spec.data_root,
                      "concepts": [c.name for c in concepts], "seed": spec.seed, "device": spec.device,
                      "dtype": spec.dtype, "evaluators": {e.name: e.describe() for e in evaluators}},
           "models": {}, "results": {benchmark.name: results}}
    write_json(spec.output_dir / "results.json", doc)
    write_run_table(doc, spec.output_dir / "leaderboard.md")
    return doc
