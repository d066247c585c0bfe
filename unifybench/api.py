"""The Python API: `unifybench.run(...)` and `unifybench.evaluate(...)`, the `lm_eval.simple_evaluate` habit.

Both take the CLI's options as keyword arguments (the flag names with `_`: ``eval_preset``, ``output_dir``,
``set`` for ``--set``; lists or dicts where a flag repeats) and go through the same
:func:`unifybench.options.build_spec` as the command line: same defaults, same checks, same tiny flag,
same files written. ``method`` may be a registered name, a :class:`~unifybench.methods.base.Method`
subclass (a method under development, not registered) or an instance of one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from unifybench.resultsfile import ResultsFile


class Results(ResultsFile):
    """A run's results.json as an object: `doc` (the dict), `output_dir`, and the readers of
    `ResultsFile` (`tiny`, `partial`, `metrics`, ...), plus lookup by evaluator."""

    def __init__(self, doc: dict, output_dir: Path):
        super().__init__(path=Path(output_dir) / "results.json", doc=doc)

    @property
    def output_dir(self) -> Path:
        return self.run_dir

    def __getitem__(self, evaluator: str) -> dict:
        """One evaluator's result (`value`, `n`, `n_failed`, `per_concept`, ...), from the first benchmark."""
        for _, ev, res in self.metrics():
            if ev == evaluator:
                return res
        raise KeyError(evaluator)

    def value(self, evaluator: str) -> float | None:
        return self[evaluator]["value"]

    def table(self) -> str:
        """The Markdown table the CLI prints."""
        from unifybench.report import run_table
        return run_table(self.doc)

    def __repr__(self) -> str:
        vals = ", ".join(f"{ev}={res.get('value')}" for _, ev, res in self.metrics())
        return f"Results({self.output_dir}: {vals})"


def run(method: Any, benchmark: str = "unifybench-mini", preset: str | None = None, **options: Any) -> Results:
    """Train `method` on every concept, predict, score: `unifybench run` as a function. Every weight, data
    folder and service the run needs is located first; all missing ones raise one UserError before any
    work (see `check`)."""
    from unifybench.options import build_spec
    from unifybench.runner import run as run_spec
    spec = build_spec("run", {"method": method, "benchmark": benchmark, "preset": preset, **options})
    return Results(run_spec(spec), spec.output_dir)


def check(method: Any, benchmark: str = "unifybench-mini", preset: str | None = None, **options: Any):
    """`unifybench run --check` as a function: the run's :class:`unifybench.preflight.Plan` (`ready`,
    `missing`, `found`, `text()`), every need located; nothing is trained, loaded or written."""
    from unifybench.options import build_spec
    from unifybench.preflight import prepare
    return prepare(build_spec("run", {"method": method, "benchmark": benchmark, "preset": preset, **options}))


def evaluate(predictions: Any, benchmark: str = "unifybench-mini", evaluators: Any = None, **options: Any) -> Results:
    """Score predictions files (JSONL, see `unifybench eval`): `unifybench eval` as a function."""
    from unifybench.evaluate import evaluate_predictions
    from unifybench.options import build_spec
    spec = build_spec("eval", {"predictions": predictions, "benchmark": benchmark, "evaluators": evaluators,
                               **options})
    return Results(evaluate_predictions(spec, [Path(p) for p in spec.run_config["predictions"]]), spec.output_dir)
