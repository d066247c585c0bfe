"""What a run *is*: the frozen run specification, the contexts derived from it, the factories that turn
its names into a benchmark, concepts and evaluators, and the one results document that `run` and `eval`
both write.

The run loop (runner.py), `eval` (evaluate.py), the forgetting stage and the HTML report import this
module; it imports none of them. A spec is never changed in place: `dataclasses.replace` derives another
(e.g. the rank's device under torchrun), and each context is built from a spec when needed.
"""
from __future__ import annotations

import datetime
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unifybench.version import __version__
from unifybench import environment as env
from unifybench.data.root import resolve_root, root_env_var
from unifybench.data.schema import Benchmark, Concept
from unifybench.errors import UserError
from unifybench.registry import BENCHMARKS, EVALUATORS

SCHEMA_VERSION = 1
TINY_NOTICE = ("These numbers come from RANDOM TINY MODELS (the embedded --preset tiny default): "
               "they test the pipeline and say nothing about any method.")

__all__ = ["SCHEMA_VERSION", "TINY_NOTICE", "RunSpec", "root_env_var", "make_benchmark", "select_concepts",
           "make_evaluators", "eval_context", "method_context", "results_document"]


@dataclass(frozen=True)
class RunSpec:
    method: str
    benchmark: str = "unifybench-mini"
    data_root: str | None = None
    evaluators: list[str] | None = None           # None: every local evaluator for the method's tasks
    evaluator_presets: dict[str, str] = field(default_factory=dict)
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    output_dir: Path = Path("runs/default")
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    concepts: list[str] | None = None
    models: dict[str, str] = field(default_factory=dict)
    resume: bool = True
    cache_dir: Path = Path.home() / ".cache" / "unifybench"
    progress: bool | None = None                  # None: when stderr is a terminal
    judge_base_url: str | None = None             # OpenAI-compatible server for judge metrics
    judge_model: str | None = None
    judge_enabled: bool = True                    # --judge none switches judge metrics off
    missing: str = "wrong"                        # an item without a prediction: "wrong" or "exclude" (old)
    limit: int = 0                                # > 0: at most this many items per task per concept (partial)
    loggers: list[str] = field(default_factory=list)   # --log tensorboard / wandb (train_log.jsonl always)
    run_config: dict[str, Any] | None = None      # the options as given (CLI, --config, API), recorded
    tiny: bool | None = None                      # None: derived from the preset (is_tiny), the one rule

    def __post_init__(self):
        if self.tiny is None:
            object.__setattr__(self, "tiny", is_tiny(self.preset))


def is_tiny(preset: str | None) -> bool:
    """The one rule: the `tiny` preset means random tiny models and the bundled mini data everywhere."""
    return preset == "tiny"


def make_benchmark(name: str, data_root: str | None) -> Benchmark:
    """Benchmark `name`, its data folder from `data_root` (--data-root), else from UNIFYBENCH_<NAME>_ROOT.

    A benchmark whose constructor takes a `root` without a default, or with default None, needs one of the
    two; a benchmark without a `root` parameter (the bundled mini) ignores both.
    """
    cls = BENCHMARKS.get(name)
    param = inspect.signature(cls.__init__).parameters.get("root")
    needs_root = param is not None and param.default in (inspect.Parameter.empty, None)
    if not needs_root:
        if data_root and not Path(data_root).exists():
            raise UserError(f"data root {data_root} does not exist")
        return cls()
    var = root_env_var(name)
    root = resolve_root(data_root, "--data-root", var,
                        f"benchmark {name!r} needs its data folder: pass --data-root PATH or set {var}", "data root")
    return cls(root)


def select_concepts(benchmark: Benchmark, names: list[str] | None) -> list[Concept]:
    concepts = benchmark.concepts()
    if not names:
        return concepts
    known = {c.name: c for c in concepts}
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"benchmark {benchmark.name!r} has no concept {missing[0]!r} "
                        f"(known: {', '.join(known)})")
    return [known[n] for n in names]


def make_evaluators(names: list[str] | None, presets: dict[str, str], tasks: frozenset[str],
                    spec: RunSpec | None = None, skip: frozenset[str] = frozenset(), check: bool = True,
                    concepts: list[Concept] | None = None) -> list:
    """The named evaluators, or every one that fits `tasks`.

    Judge evaluators join the default list when a judge server is given, and also under `--judge none`
    so that they show up as switched off. With a `spec` and `check` (`eval`), the needs (weights, judge
    server; `Evaluator.needs`) of every evaluator that scores predictions are located now and all missing
    ones raised in one line; `run` passes `check=False` and checks every evaluator's, the forgetting data
    included, together with the method's (`unifybench.preflight`).
    """
    judge_listed = spec is not None and (not spec.judge_enabled or bool(spec.judge_base_url))
    if names is None:
        names = [e.name for e in EVALUATORS.entries()
                 if e.name not in skip and EVALUATORS.get(e.name).tasks & tasks
                 and (judge_listed or not EVALUATORS.get(e.name).needs_service)]
    for name in presets:
        if name not in names:
            raise UserError(f"--eval-preset names {name!r}, which is not among the evaluators of this run")
    evaluators = [EVALUATORS.get(n)(preset=presets.get(n)) for n in names]
    if spec is not None and spec.tiny:
        for ev in evaluators:
            ev.for_tiny_run()
    if spec is not None and spec.limit:
        for ev in evaluators:   # the forgetting evaluators' own item cap, per split / subject group
            if "limit" in ev.params and not ev.params["limit"]:
                ev.params["limit"] = spec.limit
    if spec is not None and check:
        from unifybench.needs import find_all, problem_line
        ctx = eval_context(spec, Path(spec.output_dir))
        _, missing = find_all([n for ev in evaluators if ev.kind == "items" for n in ev.needs(ctx, concepts)])
        if missing:   # a missing --judge-base-url or --model clip= fails now, not after the first evaluator
            raise UserError(problem_line(missing))
    return evaluators


def eval_context(spec: RunSpec, run_dir: Path):
    """What evaluators see of the spec; image paths in predictions are relative to `run_dir`."""
    from unifybench.evaluators.base import EvalContext
    return EvalContext(run_dir=run_dir, device=spec.device, dtype=spec.dtype, cache_dir=Path(spec.cache_dir),
                       models=dict(spec.models), tiny=spec.tiny, seed=spec.seed,
                       judge_base_url=spec.judge_base_url, judge_model=spec.judge_model,
                       judge_enabled=spec.judge_enabled)


def method_context(spec: RunSpec, progress: Any = None):
    """What a method sees of the spec (and the run's progress display)."""
    from unifybench.methods.base import RunContext
    return RunContext(device=spec.device, dtype=spec.dtype, seed=spec.seed, cache_dir=Path(spec.cache_dir),
                      tiny=spec.tiny, models=dict(spec.models), progress=progress)


def limit_items(items: list, limit: int) -> list:
    """The first `limit` items of each task, in the benchmark's order (all of them when `limit` is 0)."""
    if limit <= 0:
        return list(items)
    seen: dict[str, int] = {}
    out = []
    for item in items:
        seen[item.task] = seen.get(item.task, 0) + 1
        if seen[item.task] <= limit:
            out.append(item)
    return out


def partial_note(spec: RunSpec) -> dict | None:
    """What results.json says of a `--limit` run (None for a full run): lm-eval's habit of marking it."""
    if not spec.limit:
        return None
    return {"limit": spec.limit, "reason": f"--limit {spec.limit}: at most {spec.limit} items per task per "
                                           f"concept (and per forgetting split); not comparable with full runs"}


def results_document(spec: RunSpec, method: dict, benchmark: Benchmark, concepts: list[Concept],
                     evaluators: list, results: dict, models: dict | None = None,
                     forgetting: dict | None = None, timing: dict | None = None) -> dict:
    """The results.json document of `run` and of `eval` (`method` is the method's `describe()`)."""
    partial = partial_note(spec)
    return {
        "schema_version": SCHEMA_VERSION,
        "unifybench_version": __version__,
        "git_hash": env.git_hash(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tiny": spec.tiny,
        **({"notice": TINY_NOTICE} if spec.tiny else {}),
        **({"partial": partial} if partial else {}),
        "environment": env.environment(spec.device, spec.dtype),
        "config": {"method": method, "benchmark": benchmark.name, "data_root": spec.data_root,
                   "concepts": [c.name for c in concepts], "seed": spec.seed, "device": spec.device,
                   "dtype": spec.dtype, "evaluators": {e.name: e.describe() for e in evaluators},
                   **({"limit": spec.limit} if spec.limit else {})},
        **({"run_config": spec.run_config} if spec.run_config is not None else {}),
        "models": models or {},
        "evaluator_environment": {e.name: e.environment() for e in evaluators if e.environment()},
        "results": {benchmark.name: results},
        **({"forgetting": forgetting} if forgetting else {}),
        **({"timing": timing} if timing else {}),
    }
