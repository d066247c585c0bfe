"""`unifybench eval`: score a predictions JSONL written by any model, without running a method."""
from __future__ import annotations

from pathlib import Path

from unifybench.data.schema import Item, Prediction
from unifybench.errors import DataError, UserError
from unifybench.progress import Progress
from unifybench.report import write_run_table
from unifybench.runspec import RunSpec, make_benchmark, make_evaluators, results_document, select_concepts
from unifybench.scoring import score
from unifybench.store import read_jsonl, write_json


def load_predictions(paths: list[Path], items_by_id: dict[str, Item]) -> list[Prediction]:
    """Predictions from JSONL files in either form, merged by item id.

    * our own form (what `run` writes): `{id, concept, task, prompt, text | images | error}`;
    * bring-your-own form: text answers `{"item_id", "answer"}` and an image manifest
      `{"item_id", "path"}` (one line per image); concept and task come from the benchmark's items.
    Image paths are relative to the file's folder unless absolute. A second answer for one item (in one
    file or across files) is refused: the last one silently winning would change a score.
    """
    merged: dict[str, Prediction] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise UserError(f"predictions file {path} does not exist")
        base = path.resolve().parent
        for n, row in enumerate(read_jsonl(path), 1):
            item_id = row.get("item_id", row.get("id"))
            if not isinstance(item_id, str):
                raise DataError(path, f"line {n} has no string 'item_id'", field="item_id")
            item = items_by_id.get(item_id)
            if item is None:
                raise DataError(path, f"line {n}: no item {item_id!r} in this benchmark "
                                "(see `unifybench items`)", field="item_id")
            pred = merged.setdefault(item_id, Prediction(item.id, item.concept, item.task, item.prompt))
            if "answer" in row or "text" in row:
                text = row.get("answer", row.get("text"))
                if not isinstance(text, str):
                    raise DataError(path, f"line {n}: the answer is not a string", field="answer")
                if pred.text is not None:
                    raise DataError(path, f"line {n}: a second answer for item {item_id!r} (ids must be "
                                    "unique)", field="item_id")
                pred.text = text
            elif "path" in row or "images" in row:
                images = [row["path"]] if "path" in row else row["images"]
                if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
                    raise DataError(path, f"line {n}: image paths must be strings", field="path")
                pred.images += [i if Path(i).is_absolute() else str(base / i) for i in images]
            elif "error" in row:
                pred.error = str(row["error"])
            else:
                raise DataError(path, f"line {n} has neither 'answer' nor 'path'", field="answer")
    return list(merged.values())


def evaluate_predictions(spec: RunSpec, paths: list[Path]) -> dict:
    benchmark = make_benchmark(spec.benchmark, spec.data_root)
    concepts = select_concepts(benchmark, spec.concepts)
    items_by_id = {i.id: i for c in concepts for i in benchmark.items(c)}
    preds = load_predictions([Path(p) for p in paths], items_by_id)
    tasks = frozenset(p.task for p in preds)
    evaluators = make_evaluators(spec.evaluators, spec.evaluator_presets, tasks, spec, concepts=concepts)
    by_concept: dict[str, list[Prediction]] = {}
    for p in preds:
        by_concept.setdefault(p.concept, []).append(p)
    out = Path(spec.output_dir)
    # The tasks the file answers are the ones asked: an item of such a task without a line is missing.
    asked = {c.name: {i.id for i in benchmark.items(c) if i.task in tasks} for c in concepts}
    with Progress(spec.progress) as progress:  # image paths are absolute by now
        results = score(benchmark, concepts, by_concept, evaluators, out, spec, progress, asked=asked)
    method = {"name": "predictions", "preset": None, "config": {"files": [str(p) for p in paths]}}
    doc = results_document(spec, method, benchmark, concepts, evaluators, results)
    write_json(out / "results.json", doc)
    write_run_table(doc, out / "leaderboard.md")
    return doc
