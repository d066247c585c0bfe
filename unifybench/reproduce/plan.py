"""From a table spec to a plan: which rows run, with which runnable, preset, benchmark and evaluators.

A spec row's ``match`` list names the (method, preset) pairs whose results belong in the row. The run for
the row is the first pair that names the paper's protocol (a preset that is not a tiny one; no preset
means ``paper``). Under ``--preset tiny`` the row runs on the tiny random models instead: a tiny preset the
row names itself (``tiny``, ``tiny-phi``) is taken as is; otherwise the method's ``tiny`` preset with the
row's own preset applied over it as settings (``stage1`` -> ``stages=1`` on the tiny models), so an
ablation row stays that ablation. Every run goes on its row by name (the table is told the row), never by
guessing from the results file's preset.

One benchmark per run, and a run per (row, benchmark): each metric column is produced by the run on its
benchmark (tiny: the mini; else the first full benchmark the column reads, its own list or the spec's;
a column that names none reads the spec's default: its first full benchmark, else the first column's).
A row whose columns read one benchmark is one run, named by the row; a row whose columns read several
(UniCTokens Table 2: Yo'LLaVA and MC-LLaVA) is one run per benchmark, named ``row@benchmark``, each in
its own folder, each a line of the table. Under the tiny preset a column that does not read the mini is
listed as not run, with why. Evaluators: every metric column on the run's benchmark that the runnable
can answer (its tasks, minus ``not_scored_by``) brings its evaluator with the column's first accepted
preset (``default`` is the evaluator's default). Two columns asking one evaluator for presets with no
common choice are a spec error. Judge evaluators need ``--judge-base-url``; API rows need
``--api-base-url``; without them they are listed as skipped with why.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from unifybench.errors import UserError
from unifybench.tables import Spec, load_spec

TINY_BENCHMARK = "unifybench-mini"


@dataclass
class PlannedRun:
    row: str                              # spec row id (also the run folder's name under runs/)
    label: str
    method: str
    preset: str
    overrides: dict[str, Any]
    benchmark: str
    evaluators: list[str]
    evaluator_presets: dict[str, str]     # only the non-default ones
    tiny: bool
    api: bool = False                     # the runnable calls an OpenAI-compatible server
    skipped_evaluators: dict[str, str] = field(default_factory=dict)   # name -> why
    run: str = ""                         # run id = folder under runs/: the row, or row@benchmark
    trains_as: str = ""                   # an earlier run with the same runnable, preset, settings, benchmark
                                          # and tasks: its finished concept units (training + answers) are reused

    def __post_init__(self):
        self.run = self.run or self.row

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "PlannedRun":
        return cls(**d)


@dataclass
class Plan:
    spec: Spec
    tiny: bool
    runs: list[PlannedRun]                # a row's runs are adjacent, in the order of its benchmarks
    reported_only: dict[str, str]         # row id -> why
    skipped: dict[str, str]               # row id -> why (implemented, but cannot run here as asked)

    def run(self, run_id: str) -> PlannedRun:
        for r in self.runs:
            if r.run == run_id:
                return r
        raise UserError(f"{run_id!r} is not a run of this plan")

    def runs_of(self, row: str) -> list[PlannedRun]:
        return [r for r in self.runs if r.row == row]


def is_tiny_preset(preset: str | None) -> bool:
    return bool(preset) and (preset == "tiny" or preset.startswith("tiny-"))


def _registered(name: str):
    from unifybench.registry import BASELINES, METHODS
    for reg in (METHODS, BASELINES):
        if name in reg:
            return reg.get(name)
    return None


def _paper_entry(match: list[dict]) -> dict | None:
    for m in match:
        if not is_tiny_preset(m.get("preset")):
            return m
    return None


def _choose(cls, match: list[dict], tiny: bool) -> tuple[str, dict[str, Any]]:
    """(preset, settings over it) of the run for a row whose entries name `cls`."""
    mine = [m for m in match if m["method"] == cls.name]
    paper = _paper_entry(mine)
    if not tiny:
        return (paper or {}).get("preset") or "paper", {}
    for m in mine:
        if is_tiny_preset(m.get("preset")):
            return m["preset"], {}
    want = (paper or {}).get("preset") or "paper"
    if "tiny" not in cls.presets:   # a runnable without models (the random row) runs as it is
        if want == "paper":
            return "paper", {}
        raise UserError(f"{cls.name!r} has no tiny preset for its row preset {want!r}")
    if want == "paper":
        return "tiny", {}
    if want not in cls.presets:
        raise UserError(f"{cls.name!r} has no preset {want!r} (row match)")
    return "tiny", dict(cls.presets[want])


def _default_benchmark(spec: Spec) -> str:
    """The benchmark of a column that names none (and of the spec's forgetting columns)."""
    for b in spec.benchmarks or []:
        if b != TINY_BENCHMARK:
            return b
    for c in spec.columns:
        if c.benchmarks:
            return c.benchmarks[0]
    return "unifybench"


def column_benchmark(spec: Spec, col, tiny: bool) -> tuple[str | None, str]:
    """(the benchmark whose run produces this metric column, or None; why None)."""
    reads = col.benchmarks or spec.benchmarks
    if tiny:
        if reads is None or TINY_BENCHMARK in reads:
            return TINY_BENCHMARK, ""
        return None, f"the column reads {'/'.join(reads)}; the tiny preset runs only {TINY_BENCHMARK}"
    if reads is None:
        return _default_benchmark(spec), ""
    return next((b for b in reads if b != TINY_BENCHMARK), reads[0]), ""


def _evaluators(spec: Spec, cls, judge: bool, benchmark: str, tiny: bool
                ) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(evaluators, their non-default presets, {evaluator [column]: why not}) of the run on `benchmark`."""
    from unifybench.registry import EVALUATORS
    names: list[str] = []
    accepted: dict[str, list[str] | None] = {}
    skipped: dict[str, str] = {}
    for col in spec.columns:
        if col.kind != "metric":
            continue
        ev = col.evaluator
        ev_cls = EVALUATORS.get(ev)
        bench, why = column_benchmark(spec, col, tiny)
        if bench is None:   # no run of this plan produces the column: say so
            skipped[f"{ev} [{col.id}]"] = why
            continue
        if bench != benchmark:   # the row's run on that benchmark produces it
            continue
        forgetting = col.source == "forgetting"
        if not forgetting and (not (ev_cls.tasks & cls.tasks) or ev in cls.not_scored_by):
            continue
        if ev_cls.needs_service and not judge:
            skipped[ev] = "needs a judge server (--judge-base-url)"
            continue
        if ev not in names:
            names.append(ev)
            accepted[ev] = None if col.preset is None else list(col.preset)
        elif col.preset is not None:
            prev = accepted[ev]
            both = list(col.preset) if prev is None else [p for p in prev if p in col.preset]
            if not both:
                raise UserError(f"spec {spec.name!r}: columns ask {ev} for presets {prev} and {col.preset}, "
                                "which no single run can give")
            accepted[ev] = both
    presets = {ev: acc[0] for ev, acc in accepted.items() if acc and acc[0] != "default"}
    return names, presets, skipped


def plan_benchmarks(spec: Spec, tiny: bool) -> list[str]:
    """Every benchmark some metric column of the spec is produced on, in column order."""
    out: list[str] = []
    for col in spec.columns:
        bench = column_benchmark(spec, col, tiny)[0] if col.kind == "metric" else None
        if bench is not None and bench not in out:
            out.append(bench)
    return out


def build_plan(spec_name: str, tiny: bool, rows: list[str] | None = None, api_base_url: str | None = None,
               judge_base_url: str | None = None) -> Plan:
    spec = load_spec(spec_name)
    if rows:
        for r in rows:
            spec.row(r)   # unknown row -> UserError
    plan = Plan(spec, tiny, [], {}, {})
    for row in spec.rows:
        if rows and row.id not in rows:
            continue
        if not row.match:
            plan.reported_only[row.id] = "no implementation in the suite"
            continue
        entry = _paper_entry(row.match) or row.match[0]
        cls = _registered(entry["method"])
        if cls is None:
            plan.reported_only[row.id] = f"{entry['method']!r} is not a registered method or baseline"
            continue
        preset, overrides = _choose(cls, row.match, tiny)
        cls.build_config(preset, overrides)      # a preset or setting the runnable lacks fails here
        api = cls.calls_api
        if api:
            if not api_base_url:
                plan.skipped[row.id] = "calls an OpenAI-compatible server: pass --api-base-url URL"
                continue
            overrides = {**overrides, "base_url": api_base_url}
        runs, why_not = [], {}
        for bench in plan_benchmarks(spec, tiny):
            names, presets, skipped = _evaluators(spec, cls, bool(judge_base_url), bench, tiny)
            why_not.update(skipped)
            if names:
                runs.append(PlannedRun(row=row.id, label=row.label, method=cls.name, preset=preset,
                                       overrides=overrides, benchmark=bench, evaluators=names,
                                       evaluator_presets=presets, tiny=tiny, api=api, skipped_evaluators=skipped))
        if not runs:
            plan.skipped[row.id] = "none of the table's evaluators can score it here: " + (
                "; ".join(f"{k} {v}" for k, v in why_not.items()) or "no column fits its tasks")
            continue
        if len(runs) > 1:
            for r in runs:
                r.run = f"{row.id}@{r.benchmark}"
        plan.runs.extend(runs)
    _share_training(plan)
    return plan


def _share_training(plan: Plan) -> None:
    """Rows that differ only in what is scored (Yo'LLaVA's main row and its hard-negative row are one
    configuration) train and answer once: the later run reuses the earlier one's concept units, whose resume
    key (method config, models, data, seed, items asked) is the same; only scoring is its own."""
    from unifybench.registry import EVALUATORS
    first: dict[str, str] = {}
    for r in plan.runs:
        tasks = sorted(set().union(*(EVALUATORS.get(e).tasks for e in r.evaluators)) & _registered(r.method).tasks)
        identity = repr((r.method, r.preset, sorted(r.overrides.items()), r.benchmark, tasks))
        source = first.setdefault(identity, r.run)
        r.trains_as = "" if source == r.run else source
