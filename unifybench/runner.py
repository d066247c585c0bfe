"""A run: method x benchmark x concepts x evaluators -> results.json, samples/*.jsonl, leaderboard.md.

Each concept is a unit (fit, then predict) whose outputs are written atomically under
`<output-dir>/concepts/<concept>/` with a key: the hash of everything that determines them. A rerun
with the same key reuses them (`--resume`, the default), so a crash loses at most the unit in flight.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path

from unifybench import distributed, environment as env, workqueue
from unifybench.version import __version__
from unifybench.data.schema import Benchmark, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.forgetting import check_forgetting, run_forgetting
from unifybench.progress import Progress, maybe_task
from unifybench.registry import get_runnable
from unifybench.report import write_run_table
from unifybench.runlock import run_lock
from unifybench.runspec import (RunSpec, limit_items, make_benchmark, make_evaluators, method_context, results_document,
                                select_concepts)
from unifybench.scoring import score
from unifybench.store import canonical_hash, file_sha256, read_jsonl, write_json, write_jsonl


def resolve_method(spec: RunSpec, ctx):
    """The run's method: a registered name, a Method subclass (a user's own), or a Method instance."""
    from unifybench.methods.base import Method
    m = spec.method
    if isinstance(m, Method):
        m.ctx.progress = ctx.progress
        return m
    if isinstance(m, type) and issubclass(m, Method):
        return m(ctx, spec.preset, spec.overrides)
    if not isinstance(m, str):
        raise UserError(f"method must be a registered name, a Method subclass or a Method instance, not {m!r}")
    return get_runnable(m)(ctx, spec.preset, spec.overrides)


def run(spec: RunSpec) -> dict:
    """Train, predict and score; returns the results dict also written to results.json."""
    clock = StageClock(spec)
    if isinstance(spec.method, str):
        get_runnable(spec.method)      # names first: a typo fails before any work
    benchmark = make_benchmark(spec.benchmark, spec.data_root)
    concepts = select_concepts(benchmark, spec.concepts)
    rank, world = distributed.init(spec)
    if world > 1:
        spec = replace(spec, device=distributed.rank_device(spec.device))
    progress = Progress(spec.progress if rank == 0 else False)
    method = resolve_method(spec, method_context(spec, progress))
    evaluators = make_evaluators(spec.evaluators, spec.evaluator_presets, method.tasks, spec,
                                 method.not_scored_by)
    _check_images(benchmark)
    check_forgetting(evaluators)  # missing MMLU/POPE/MMBench data fails now, not after the fits
    wanted = frozenset().union(*(e.tasks for e in evaluators)) & method.tasks if evaluators else frozenset()
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock.quiet = rank != 0 or progress.enabled
    if spec.tiny:
        clock.say(TINY_WHAT)
    with run_lock(out) if rank == 0 else contextlib.nullcontext():
        return _run_locked(spec, method, benchmark, concepts, evaluators, wanted, out, rank, world, progress, clock)


def _run_locked(spec, method, benchmark, concepts, evaluators, wanted, out, rank, world, progress, clock) -> dict:
    if spec.tiny and spec.device == "cpu":
        # Tiny models are all per-op overhead: extra threads only add synchronisation (measured 3x slower).
        import torch
        torch.set_num_threads(1)
    unit_times: dict[str, dict] = {}
    with progress:
        method.setup()
        model_hashes = {role: {"path": str(p), "sha256": file_sha256(p, spec.cache_dir)}
                        for role, p in sorted(method.model_files().items())}
        data_hash = canonical_hash([(_rel_name(p, benchmark), file_sha256(p)) for p in benchmark.data_files()])
        clock.stage("setup")
        items_of = {c.name: limit_items([i for i in benchmark.items(c) if i.task in wanted], spec.limit)
                    for c in concepts}
        keys = {c.name: canonical_hash({"method": method.describe(), "models": model_hashes, "data": data_hash,
                                        "seed": spec.seed, "items": [i.id for i in items_of[c.name]],
                                        "version": __version__})
                for c in concepts}
        # A work queue over the output folder: every rank claims the next unfinished concept, so no rank
        # idles while units remain. Units are seeded by concept name: who runs one never changes it.
        if rank == 0:
            workqueue.write_launch(out, workqueue.new_launch_id())
        distributed.barrier()
        queue = workqueue.WorkQueue(out, workqueue.read_launch(out), rank)
        with maybe_task(progress, "concepts", len(concepts), keep=True) as advance:
            for n, concept in enumerate(concepts, 1):
                key = keys[concept.name]
                if _unit_finished(out, concept, key, spec) or not queue.claim(concept.name):
                    advance()
                    continue
                t0 = time.perf_counter()
                unit_times[concept.name] = _run_unit(
                    method, benchmark, concept, items_of[concept.name], out, key, spec,
                    {"rank": rank, "world_size": world, "device": spec.device, "host": queue.host,
                     "launch": queue.launch, "t0": t0})
                clock.concept(concept.name, n, len(concepts), unit_times[concept.name])
                advance()
        clock.stage("concepts")
        distributed.barrier()
        if rank != 0:
            distributed.finish()
            return {}
        # Rank 0 reads every unit back from disk, in concept order: the same with 1 rank or many. A unit
        # whose key is not this run's (another configuration wrote it meanwhile) is never scored.
        for c in concepts:
            if not _finished(out / "concepts" / c.name / "unit.json", keys[c.name]):
                raise UserError(f"{out / 'concepts' / c.name / 'unit.json'}: written by another configuration, "
                                "not this run's; rerun into a fresh --output-dir")
        predictions = {c.name: [Prediction.from_json(r) for r in read_jsonl(out / "concepts" / c.name / "predictions.jsonl")]
                       for c in concepts}
        asked = {c.name: {i.id for i in method.asked(items_of[c.name])} for c in concepts}
        results = score(benchmark, concepts, predictions, evaluators, out, spec, progress, asked=asked)
        clock.stage("scoring")
        forgetting = run_forgetting(method, concepts, evaluators, out, spec)
        if forgetting:
            clock.stage("forgetting")
    distributed.finish()

    timing = {"stages_s": clock.stages, "concepts_s": unit_times, "total_s": clock.total()}
    doc = results_document(spec, method.describe(), benchmark, concepts, evaluators, results, model_hashes,
                           forgetting, timing)
    doc["execution"] = _execution(out, concepts, world)   # where and how long each unit ran
    write_json(out / "results.json", doc)
    write_run_table(doc, out / "leaderboard.md")
    return doc


TINY_WHAT = ("tiny preset: random tiny models on the bundled mini benchmark. This checks that every stage runs "
             "(training, answering, image generation, scoring, files written, resume); the numbers mean nothing.")


class StageClock:
    """Wall time per stage (and the run's total), and the plain progress lines of a run whose stderr is
    not a terminal (CI, nohup, Slurm): one line per finished stage and concept, elapsed and ETA."""

    def __init__(self, spec: RunSpec):
        import time
        self._now = time.perf_counter
        self._start = self._last = self._now()
        self._concepts_start = None
        self.stages: dict[str, float] = {}
        self.quiet = False
        from unifybench.options import method_label
        self.label = method_label(spec.method)

    def say(self, line: str) -> None:
        import sys
        print(f"unifybench: {line}", file=sys.stderr, flush=True)

    def total(self) -> float:
        return round(self._now() - self._start, 3)

    def stage(self, name: str) -> None:
        now = self._now()
        self.stages[name] = round(now - self._last, 3)
        self._last = now
        if not self.quiet:
            self.say(f"{self.label}: {name} done in {_hms(self.stages[name])} (elapsed {_hms(now - self._start)})")

    def concept(self, name: str, n: int, total: int, times: dict) -> None:
        now = self._now()
        if self._concepts_start is None:
            self._concepts_start = self._last
        eta = (now - self._concepts_start) / n * (total - n)
        if not self.quiet:
            how = ("reused" if times.get("reused")
                   else f"fit {_hms(times.get('fit_s', 0))}, predict {_hms(times.get('predict_s', 0))}")
            self.say(f"{self.label}: concept {n}/{total} {name} done ({how}); elapsed {_hms(now - self._start)}, "
                     f"ETA {_hms(eta)} for the concepts")


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _check_images(benchmark: Benchmark) -> None:
    """Open every image before any work starts: a bad file stops the run with its name, not hours in."""
    problems = benchmark.validate()
    if problems:
        more = f" (and {len(problems) - 1} more problems; see `unifybench validate`)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)


def _rel_name(path: Path, benchmark: Benchmark) -> str:
    """A data file's name relative to the benchmark root (two concepts' info.json must not collide)."""
    root = benchmark.root
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
              spec: RunSpec, run_info: dict | None = None) -> dict:
    """Fit, then predict, one concept; each stage is skipped when it finished with the same key.

    A stage's marker is written last, after its outputs, so a crash inside a stage redoes only it.
    """
    import time
    from unifybench.trainlog import open_log
    cdir = out / "concepts" / concept.name
    fit_done, predict_done = cdir / "fit.json", cdir / "unit.json"
    if spec.resume and _finished(predict_done, key) and (cdir / "predictions.jsonl").exists():
        return {"reused": True}
    cdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fit_reused = spec.resume and _finished(fit_done, key)
    if fit_reused:
        art = json.loads(fit_done.read_text())["artifact"]
        artifact = out / art if art else None
    else:
        env.seed_everything(env.derive_seed(spec.seed, "fit", concept.name))
        with open_log(cdir / "train_log.jsonl", concept.name, spec.loggers, out, out.name):
            artifact = method.fit(concept, benchmark, cdir)
        write_json(fit_done, {"key": key, "concept": concept.name,
                              "artifact": str(artifact.relative_to(out)) if artifact else None})
    t1 = time.perf_counter()
    method.load_artifact(concept, artifact)
    env.seed_everything(env.derive_seed(spec.seed, "predict", concept.name))
    preds = [_relative(p, out) for p in method.predict(concept, items, cdir)]
    write_jsonl(cdir / "predictions.jsonl", [p.to_json() for p in preds])
    info = dict(run_info or {})
    if "t0" in info:
        info["seconds"] = round(time.perf_counter() - info.pop("t0"), 3)
    write_json(predict_done, {"key": key, "concept": concept.name, **info})
    return {"fit_s": round(t1 - t0, 3), "predict_s": round(time.perf_counter() - t1, 3),
            **({"fit_reused": True} if fit_reused else {})}


def _relative(p: Prediction, out: Path) -> Prediction:
    """Image paths in predictions are stored relative to the run folder, so runs can be moved."""
    p.images = [str(Path(i).resolve().relative_to(out.resolve())) if Path(i).is_absolute() else i
                for i in p.images]
    return p
