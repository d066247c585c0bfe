"""Before the first fit: everything a run will need is found, or every missing piece is named in one line.

`prepare(spec)` makes what a run is made of (benchmark, concepts, method, evaluators), checks the
benchmark's files, and locates every weight, data folder and service that a stage declares
(`Method.needs`, `Evaluator.needs`: method backbones, retrieval CLIP, each evaluator's CLIP/DINO/face
weights, the forgetting data, the judge server), loading, building and downloading nothing, and writing
nothing. `Plan.require()` raises one UserError naming each missing thing with the flag or environment
variable that supplies it, so a mistake costs seconds, not the hours of training before scoring.
`unifybench run --check` (`--dry-run`) prints `Plan.text()` instead: the whole plan, what resume would
reuse, and exits 0 (ready) or 2 (something missing).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unifybench.data.schema import Benchmark, Concept
from unifybench.errors import UserError
from unifybench.needs import find_all, problem_line
from unifybench.registry import get_runnable
from unifybench.runspec import (RunSpec, eval_context, limit_items, make_benchmark, make_evaluators, method_context,
                                select_concepts)


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


@dataclass
class Plan:
    """What a run is made of and where each thing it needs was found (`found`: (what, where)) or why not
    (`missing`: (what, the one-line problem with its flag or variable))."""

    spec: RunSpec
    method: Method
    benchmark: Benchmark | None
    concepts: list[Concept]
    evaluators: list
    wanted: frozenset[str]
    found: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.missing

    def require(self) -> None:
        """One UserError naming every missing piece (see `unifybench.needs.problem_line`)."""
        if self.missing:
            raise UserError(problem_line(self.missing))

    def text(self) -> str:
        """The plan as `run --check` prints it."""
        from unifybench.options import method_label
        spec, out = self.spec, Path(self.spec.output_dir)
        lines = ["unifybench run --check: nothing is trained, loaded or written"]
        lines.append(f"method      {method_label(spec.method)} (preset {self.method.preset})")
        if self.benchmark is not None:
            names = ", ".join(c.name for c in self.concepts)
            lines.append(f"benchmark   {self.benchmark.name}: {len(self.concepts)} concepts ({names})")
        else:
            lines.append(f"benchmark   {spec.benchmark}: its data folder is missing")
        stages = ["setup", f"fit + predict x {len(self.concepts)} concepts"]
        if any(e.kind != "model" for e in self.evaluators):
            stages.append("scoring")
        if any(e.kind == "model" for e in self.evaluators):
            stages.append("forgetting")
        lines.append(f"stages      {', '.join(stages)}")
        evs = ", ".join(f"{e.name} ({e.preset})" for e in self.evaluators) or "none"
        lines.append(f"evaluators  {evs}")
        lines.append("needs")
        for what, where in self.found:
            lines.append(f"  ok       {what}: {where}")
        for what, why in self.missing:
            lines.append(f"  MISSING  {what}: {why}")
        if not self.found and not self.missing:
            lines.append("  nothing to load")
        state = "exists" if out.is_dir() else "will be created"
        lines.append(f"output      {out} ({state})")
        lines.append(f"resume      {self.resume_text()}")
        lines.append("ready: everything is present" if self.ready else
                     f"NOT ready: {len(self.missing)} missing")
        return "\n".join(lines)

    def resume_text(self) -> str:
        """What resume would reuse: finished units whose key parts (all but the weights, which are hashed
        when loaded) match this run's."""
        from unifybench import resume
        if not self.spec.resume:
            return "off (--no-resume): every concept is trained"
        out = Path(self.spec.output_dir)
        finished = {c.name: resume.marker(out, c.name) for c in self.concepts}
        finished = {k: v for k, v in finished.items() if v is not None
                    and (out / "concepts" / k / "predictions.jsonl").exists()}
        if not finished or self.benchmark is None:
            return f"nothing to reuse in {out / 'concepts'}"
        parts = resume.parts(self.method.describe(), resume.data_hash(self.benchmark), self.spec.seed,
                             resume.code_fingerprint(self.method), None)
        same, other = [], {}
        for c in self.concepts:
            if c.name in finished:
                ids = [i.id for i in limit_items([i for i in self.benchmark.items(c) if i.task in self.wanted],
                                                 self.spec.limit)]
                diff = resume.changed(finished[c.name], parts, ids)
                (other.__setitem__(c.name, diff) if diff else same.append(c.name))
        text = (f"{len(finished)} of {len(self.concepts)} concepts finished in {out / 'concepts'}; "
                f"{len(same)} would be reused if their weights' content is unchanged (checked when loaded)")
        if other:
            why = sorted({n for d in other.values() for n in d})
            text += f"; {len(other)} would be redone ({resume.describe_changes(why)} changed)"
        return text


def prepare(spec: RunSpec, progress: Any = None) -> Plan:
    """The run's pieces and every need located (see the module docstring); raises at once only for a
    mistake in the request itself (an unknown method, setting, preset or concept)."""
    if isinstance(spec.method, str):
        get_runnable(spec.method)      # names first: a typo fails before any work
    missing: list[tuple[str, str]] = []
    try:
        benchmark = make_benchmark(spec.benchmark, spec.data_root)
    except UserError as e:
        benchmark = None
        missing.append((f"benchmark {spec.benchmark}: data", str(e)))
    concepts = select_concepts(benchmark, spec.concepts) if benchmark is not None else []
    known = concepts if benchmark is not None else None
    method = resolve_method(spec, method_context(spec, progress))
    evaluators = make_evaluators(spec.evaluators, spec.evaluator_presets, method.tasks, spec, method.not_scored_by,
                                 check=False)
    wanted = frozenset().union(*(e.tasks for e in evaluators)) & method.tasks if evaluators else frozenset()
    if benchmark is not None:
        problems = benchmark.validate()   # every image opened: a bad file stops the run with its name
        if problems:
            more = f" (and {len(problems) - 1} more; see `unifybench validate`)" if len(problems) > 1 else ""
            missing.append((f"benchmark {benchmark.name}: files", problems[0] + more))
    ctx = eval_context(spec, Path(spec.output_dir))
    needs = list(method.needs(known)) + [n for ev in evaluators for n in ev.needs(ctx, known)]
    found, absent = find_all(needs)
    return Plan(spec, method, benchmark, concepts, evaluators, wanted, found, missing + absent)
