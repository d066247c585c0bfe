"""UnifyBench: benchmark and evaluation suite for personalized multimodal models.

`unifybench.run(method=..., benchmark=..., preset=..., **options)`, `unifybench.check(...)` (the same
options: the plan of that run, nothing trained or written) and `unifybench.evaluate(predictions=...,
benchmark=..., evaluators=...)` are the Python API (see unifybench.api); importing the package imports
nothing heavy.
"""
from unifybench.version import __version__  # noqa: F401


def run(method, benchmark: str = "unifybench-mini", preset: str | None = None, **options):
    """Train, predict and score, as `unifybench run` (see unifybench.api.run)."""
    from unifybench.api import run as _run
    return _run(method, benchmark, preset, **options)


def evaluate(predictions, benchmark: str = "unifybench-mini", evaluators=None, **options):
    """Score predictions files, as `unifybench eval` (see unifybench.api.evaluate)."""
    from unifybench.api import evaluate as _evaluate
    return _evaluate(predictions, benchmark, evaluators, **options)


def check(method, benchmark: str = "unifybench-mini", preset: str | None = None, **options):
    """The plan of a run, every need located, nothing trained or written, as `unifybench run --check`
    (see unifybench.api.check)."""
    from unifybench.api import check as _check
    return _check(method, benchmark, preset, **options)
