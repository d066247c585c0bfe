"""A run: method x benchmark x concepts x evaluators -> results.json, samples/*.jsonl, leaderboard.md.

Each concept is a unit (fit, then predict) whose outputs are written atomically under
`<output-dir>/concepts/<concept>/` with a key: the hash of everything that determines them. A rerun
with the same key reuses them (`--resume`, the default), so a crash loses at most the unit in flight.
"""
from __future__ import annotations

import datetime
import inspect
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import unifybench
from unifybench import distributed, environment as env
from unifybench.data.schema import Benchmark, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.progress import Progress, maybe_task
from unifybench.registry import BENCHMARKS, EVALUATORS, get_runnable
from unifybench.stats import bootstrap_ci
from unifybench.store import canonical_hash, file_sha256, read_jsonl, write_json, write_jsonl

SCHEMA_VERSION = 1
TINY_NOTICE = ("These numbers come from RANDOM TINY MODELS (the embedded --preset tiny default): "
               "they test the pipeline and say nothing about any method.")


@dataclass
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
    tiny: bool = False
    progress: bool | None = None                  # None: when stderr is a terminal
    judge_base_url: str | None = None             # OpenAI-compatible server for judge metrics
    judge_model: str | None = None
    judge_enabled: bool = True                    # --judge none switches judge metrics off


def root_env_var(name: str) -> str:
    """The environment variable that may hold benchmark `name`'s data folder: UNIFYBENCH_<NAME>_ROOT."""
    return "UNIFYBENCH_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_ROOT"


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
    source = "--data-root"
    if not data_root and os.environ.get(var):
        data_root, source = os.environ[var], var
    if not data_root:
        raise UserError(f"benchmark {name!r} needs its data folder: pass --data-root PATH or set {var}")
    if not Path(data_root).exists():
        raise UserError(f"data root {data_root} (from {source}) does not exist")
    return cls(data_root)


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
                    spec: RunSpec | None = None, skip: frozenset[str] = frozenset()) -> list:
    """The named evaluators, or every one that fits `tasks`.

    Judge evaluators join the default list when a judge server is given, and also under `--judge none`
    so that they show up as switched off; each is checked before any work starts.
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
    if spec is not None:
        ctx = _eval_context(spec, Path(spec.output_dir))
        for ev in evaluators:
            if ev.needs_service and hasattr(ev, "check"):
                ev.check(ctx)  # a missing --judge-base-url fails now, not after hours of training
    return evaluators


def run(spec: RunSpec) -> dict:
    """Train, predict and score; returns the results dict also written to results.json."""
    method_cls = get_runnable(spec.method)      # names first: a typo fails before any work
    benchmark = make_benchmark(spec.benchmark, spec.data_root)
    concepts = select_concepts(benchmark, spec.concepts)
    ctx = _method_context(spec)
    method = method_cls(ctx, spec.preset, spec.overrides)
    evaluators = make_evaluators(spec.evaluators, spec.evaluator_presets, method.tasks, spec,
                                 method.not_scored_by)
    _check_images(benchmark)
    from unifybench.forgetting import check_forgetting, run_forgetting
    check_forgetting(evaluators)  # missing MMLU/POPE/MMBench data fails now, not after the fits
    wanted = frozenset().union(*(e.tasks for e in evaluators)) & method.tasks if evaluators else frozenset()
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    if spec.tiny and spec.device == "cpu":
        # Tiny models are all per-op overhead: extra threads only add synchronisation (measured 3x slower).
        import torch
        torch.set_num_threads(1)
    rank, world = distributed.init(spec)
    if world > 1:
        ctx.device = spec.device = distributed.rank_device(spec.device)
    with Progress(spec.progress if rank == 0 else False) as progress:
        ctx.progress = progress
        method.setup()
        model_hashes = {role: {"path": str(p), "sha256": file_sha256(p, spec.cache_dir)}
                        for role, p in sorted(method.model_files().items())}
        data_hash = canonical_hash([(_rel_name(p, benchmark), file_sha256(p)) for p in benchmark.data_files()])
        # A work queue over the output folder: every rank claims the next unfinished concept, so no rank
        # idles while units remain. Units are seeded by concept name: who runs one never changes it.
        from unifybench import workqueue
        if rank == 0:
            workqueue.write_launch(out, workqueue.new_launch_id())
        distributed.barrier()
        queue = workqueue.WorkQueue(out, workqueue.read_launch(out), rank)
        host = os.uname().nodename
        with maybe_task(progress, "concepts", len(concepts)) as advance:
            for concept in concepts:
                items = [i for i in benchmark.items(concept) if i.task in wanted]
                key = canonical_hash({"method": method.describe(), "models": model_hashes, "data": data_hash,
                                      "seed": spec.seed, "items": [i.id for i in items],
                                      "version": unifybench.__version__})
                if _unit_finished(out, concept, key, spec) or not queue.claim(concept.name):
                    advance()
                    continue
                t0 = time.perf_counter()
                _run_unit(method, benchmark, concept, items, out, key, spec,
                          {"rank": rank, "world_size": world, "device": spec.device, "host": host,
                           "launch": queue.launch, "t0": t0})
                advance()
        distributed.barrier()
        if rank != 0:
            distributed.finish()
            return {}
        # Rank 0 reads every unit back from disk, in concept order: the same with 1 rank or many.
        predictions = {c.name: [Prediction.from_json(r) for r in read_jsonl(out / "concepts" / c.name / "predictions.jsonl")]
                       for c in concepts}
        results = score(benchmark, concepts, predictions, evaluators, out, spec, progress)
        forgetting = run_forgetting(method, concepts, evaluators, out, spec)
    distributed.finish()

    doc = {
        "schema_version": SCHEMA_VERSION,
        "unifybench_version": unifybench.__version__,
        "git_hash": env.git_hash(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tiny": spec.tiny,
        **({"notice": TINY_NOTICE} if spec.tiny else {}),
        "environment": env.environment(spec.device, spec.dtype),
        "config": {"method": method.describe(), "benchmark": benchmark.name, "data_root": spec.data_root,
                   "concepts": [c.name for c in concepts], "seed": spec.seed, "device": spec.device,
                   "dtype": spec.dtype, "evaluators": {e.name: e.describe() for e in evaluators}},
        "models": model_hashes,
        "execution": _execution(out, concepts, world),
        "evaluator_environment": {e.name: e.environment() for e in evaluators if e.environment()},
        "results": {benchmark.name: results},
        **({"forgetting": forgetting} if forgetting else {}),
    }
    write_json(out / "results.json", doc)
    from unifybench.report import write_run_table
    write_run_table(doc, out / "leaderboard.md")
    return doc


def _check_images(benchmark: Benchmark) -> None:
    """Open every image before any work starts: a bad file stops the run with its name, not hours in."""
    problems = benchmark.validate() if hasattr(benchmark, "validate") else []
    if problems:
        more = f" (and {len(problems) - 1} more problems; see `unifybench validate`)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)


def _eval_context(spec: RunSpec, run_dir: Path):
    from unifybench.evaluators.base import EvalContext
    return EvalContext(run_dir=run_dir, device=spec.device, dtype=spec.dtype, cache_dir=Path(spec.cache_dir),
                       models=dict(spec.models), tiny=spec.tiny, seed=spec.seed,
                       judge_base_url=spec.judge_base_url, judge_model=spec.judge_model,
                       judge_enabled=spec.judge_enabled)


def _method_context(spec: RunSpec):
    from unifybench.methods.base import RunContext
    return RunContext(device=spec.device, dtype=spec.dtype, seed=spec.seed, cache_dir=Path(spec.cache_dir),
                      tiny=spec.tiny, models=dict(spec.models))


def _rel_name(path: Path, benchmark: Benchmark) -> str:
    """A data file's name relative to the benchmark root (two concepts' info.json must not collide)."""
    root = getattr(benchmark, "root", None)
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve())) if root else str(path)
    except ValueError:
        return str(path)


def _finished(marker: Path, key: str) -> bool:
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def _unit_finished(out: Path, concept: Concept, key: str, spec: RunSpec) -> bool:
    cdir = out / "concepts" / concept.name
    return spec.resume and _finished(cdir / "unit.json", key) and (cdir / "predictions.jsonl").exists()


def _execution(out: Path, concepts: list[Concept], world: int) -> dict:
    """Where and how long each unit ran (from its marker): world size, rank, device, host, wall seconds."""
    units = {}
    for c in concepts:
        try:
            marker = json.loads((out / "concepts" / c.name / "unit.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        units[c.name] = {k: marker[k] for k in ("rank", "world_size", "device", "host", "seconds", "launch")
                         if k in marker}
    return {"world_size": world, "units": units}


def _run_unit(method, benchmark, concept: Concept, items: list[Item], out: Path, key: str,
              spec: RunSpec, run_info: dict | None = None) -> None:
    """Fit, then predict, one concept; each stage is skipped when it finished with the same key.

    A stage's marker is written last, after its outputs, so a crash inside a stage redoes only it.
    """
    cdir = out / "concepts" / concept.name
    fit_done, predict_done = cdir / "fit.json", cdir / "unit.json"
    if spec.resume and _finished(predict_done, key) and (cdir / "predictions.jsonl").exists():
        return
    cdir.mkdir(parents=True, exist_ok=True)
    if spec.resume and _finished(fit_done, key):
        art = json.loads(fit_done.read_text())["artifact"]
        artifact = out / art if art else None
    else:
        env.seed_everything(env.derive_seed(spec.seed, "fit", concept.name))
        artifact = method.fit(concept, benchmark, cdir)
        write_json(fit_done, {"key": key, "concept": concept.name,
                              "artifact": str(artifact.relative_to(out)) if artifact else None})
    method.load_artifact(concept, artifact)
    env.seed_everything(env.derive_seed(spec.seed, "predict", concept.name))
    preds = [_relative(p, out) for p in method.predict(concept, items, cdir)]
    write_jsonl(cdir / "predictions.jsonl", [p.to_json() for p in preds])
    info = dict(run_info or {})
    if "t0" in info:
        info["seconds"] = round(time.perf_counter() - info.pop("t0"), 3)
    write_json(predict_done, {"key": key, "concept": concept.name, **info})


def _relative(p: Prediction, out: Path) -> Prediction:
    """Image paths in predictions are stored relative to the run folder, so runs can be moved."""
    p.images = [str(Path(i).resolve().relative_to(out.resolve())) if Path(i).is_absolute() else i
                for i in p.images]
    return p


def score(benchmark: Benchmark, concepts: list[Concept], predictions: dict[str, list[Prediction]],
          evaluators: list, out: Path, spec: RunSpec, progress: Progress | None = None,
          run_dir: Path | None = None) -> dict:
    """Score predictions with each evaluator; writes out/samples/<evaluator>.jsonl, returns the results.

    Image paths in predictions are relative to `run_dir` (default: `out`)."""
    from unifybench.evaluators.base import aggregate
    ctx = _eval_context(spec, run_dir or out)
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
        extra = getattr(ev, "extra_aggregates", None)
        if extra is not None:
            result.update(extra(by_concept))
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
