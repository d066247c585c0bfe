"""A run: method x benchmark x concepts x evaluators -> results.json, samples/*.jsonl, leaderboard.md.

Each concept is a unit (fit, then predict) whose outputs are written atomically under
`<output-dir>/concepts/<concept>/` with a key: the hash of everything that determines them, by content,
code included (`unifybench.resume`). A rerun with the same key reuses them (`--resume`, the default, and
says how many on stderr), so a crash loses at most the unit in flight. Nothing starts before every need of
every stage is located (`unifybench.preflight`).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import replace
from pathlib import Path

from unifybench import distributed, environment as env, resume, workqueue
from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.forgetting import run_forgetting
from unifybench.preflight import prepare
from unifybench.progress import Progress, maybe_task
from unifybench.report import write_run_table
from unifybench.runlock import run_lock
from unifybench.runspec import RunSpec, limit_items, results_document
from unifybench.scoring import score
from unifybench.store import file_sha256, read_jsonl, write_json, write_jsonl


def run(spec: RunSpec) -> dict:
    """Train, predict and score; returns the results dict also written to results.json.

    Everything every stage will need (weights, data folders, services) is located first
    (`unifybench.preflight`): a missing piece fails before the output folder is touched, all of them named
    in one line."""
    clock = StageClock(spec)
    rank, world = distributed.init(spec)
    if world > 1:
        spec = replace(spec, device=distributed.rank_device(spec.device))
    progress = Progress(spec.progress if rank == 0 else False)
    plan = prepare(spec, progress)
    plan.require()
    method, benchmark, concepts, evaluators = plan.method, plan.benchmark, plan.concepts, plan.evaluators
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock.quiet = rank != 0 or progress.enabled
    if spec.tiny:
        clock.say(TINY_WHAT)
    with run_lock(out) if rank == 0 else contextlib.nullcontext():
        return _run_locked(spec, method, benchmark, concepts, evaluators, plan.wanted, out, rank, world, progress,
                           clock)


def _run_locked(spec, method, benchmark, concepts, evaluators, wanted, out, rank, world, progress, clock) -> dict:
    if spec.tiny and spec.device == "cpu":
        # Tiny models are all per-op overhead: extra threads only add synchronisation (measured 3x slower).
        import torch
        torch.set_num_threads(1)
    unit_times: dict[str, dict] = {}
    with progress:
        method.setup()
        files = method.model_files()
        model_hashes = {role: {"path": str(p), "sha256": file_sha256(p, spec.cache_dir)}
                        for role, p in sorted(files.items())}   # recorded; the key takes content only
        dirty = env.source_dirty()
        if dirty and rank == 0:
            clock.say("WARNING: the unifybench source has uncommitted changes (git status): these results "
                      "cannot be reproduced from a commit; recorded as dirty: true in results.json")
        key_parts = resume.parts(method.describe(), resume.data_hash(benchmark), spec.seed,
                                 resume.code_fingerprint(method), resume.weights_hash(files, spec.cache_dir))
        clock.stage("setup")
        items_of = {c.name: limit_items([i for i in benchmark.items(c) if i.task in wanted], spec.limit)
                    for c in concepts}
        ids_of = {c.name: [i.id for i in items_of[c.name]] for c in concepts}
        keys = {c.name: resume.unit_key(key_parts, ids_of[c.name]) for c in concepts}
        reuse = _reuse(out, concepts, keys, key_parts, ids_of, spec)
        if rank == 0 and spec.resume:
            clock.say(reuse["line"])
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
                     "launch": queue.launch, "t0": t0,
                     "parts": {**key_parts, "items": resume.items_hash(ids_of[concept.name])}})
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
    doc["resume"] = {k: v for k, v in reuse.items() if k != "line"}
    doc["source_fingerprint"] = key_parts["code"]
    doc["dirty"] = bool(dirty)
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


def _reuse(out: Path, concepts: list[Concept], keys: dict, key_parts: dict, ids_of: dict, spec: RunSpec) -> dict:
    """What this run reuses from `out` (counted before any unit runs): the count, where from, the run's key,
    and the finished units it redoes because a part of their key changed (which part, from their marker)."""
    reused = [c.name for c in concepts if _unit_finished(out, c, keys[c.name], spec)]
    redone: dict[str, list[str]] = {}
    for c in concepts:
        doc = resume.marker(out, c.name) if spec.resume and c.name not in reused else None
        if doc is not None and doc.get("key") != keys[c.name]:
            redone[c.name] = resume.changed(doc, key_parts, ids_of[c.name])
    key = resume.run_key(key_parts)
    line = f"resume: reused {len(reused)} of {len(concepts)} concepts from {out / 'concepts'} (key {key[:12]})"
    if redone:
        why = sorted({n for names in redone.values() for n in names})
        line += (f"; {len(redone)} finished under another key ({resume.describe_changes(why)} changed) "
                 f"{'is' if len(redone) == 1 else 'are'} redone")
    return {"enabled": spec.resume, "reused": len(reused), "concepts": len(concepts),
            "from": str(out / "concepts"), "key": key, "redone": redone, "line": line}


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
