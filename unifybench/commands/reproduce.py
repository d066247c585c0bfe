"""`unifybench reproduce SPEC [--preset tiny] [--suite-dir DIR] [--rows ...] [--launcher local|slurm] [--dry-run]`
and `unifybench reproduce --status DIR`: a whole paper table in one command (see unifybench.reproduce).

Cost. `--dry-run` prints every run (runnable, preset, benchmark, concepts, evaluators) and its GPU-hours:
measured seconds per concept of that row times its concepts times its GPUs. The seconds come from
SUITE/calibration.json, which `--calibrate` writes by running each row for one concept on this machine's
device (setup included, so the estimate errs high); a row with no measurement says so instead of guessing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from unifybench.errors import UserError


EXAMPLES = """examples:
  unifybench reproduce unictokens_table1 --preset tiny
  unifybench reproduce unictokens_table1 --dry-run
  unifybench reproduce yochameleon_supp_table1 --launcher slurm --partition gpu --gpus 1 --time 240
  unifybench reproduce --status runs/reproduce-unictokens_table1"""


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Plan, run and render a paper table: every implemented row of SPEC becomes a run in "
                     "SUITE/runs/<row> (a row whose columns read several benchmarks: one run per benchmark, "
                     "SUITE/runs/<row>@<benchmark>); the table (md/tex/csv), the plots and one HTML page land in SUITE. "
                     "Rerunning resumes; --status shows the rows' states.")
    p.add_argument("spec", nargs="?", help="table spec (see `unifybench table --list`)")
    p.add_argument("--preset", choices=["paper", "tiny"], default="paper",
                   help="tiny: every row on the random tiny models and the mini benchmark (numbers mean nothing)")
    p.add_argument("--suite-dir", type=Path, help="suite folder (default runs/reproduce-SPEC[-tiny])")
    p.add_argument("--rows", help="comma-separated row ids to run now (default: every implemented row)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: the rows in this process, one after another; slurm: one job per row through submitit")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost; run nothing")
    p.add_argument("--calibrate", action="store_true",
                   help="time each row on one concept here and store it in SUITE/calibration.json")
    p.add_argument("--status", type=Path, metavar="DIR", help="show the rows of the suite in DIR and exit")
    p.add_argument("--torchrun", type=int, default=0, metavar="N", help="local: run each row on N processes (torchrun)")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="local: N rows at once, each in its own worker process (0: one per CPU core, at most 4, "
                        "for a tiny plan on the CPU; else 1)")
    p.add_argument("--api-base-url", help="OpenAI-compatible server for the API rows (GPT-4o); without it they are skipped")
    p.add_argument("--judge-base-url", help="judge server for the LLM-judge columns; without it they are skipped")
    p.add_argument("--judge-model", help="the judge's model name on that server")
    p.add_argument("--data-root", action="append", default=[], metavar="[BENCHMARK=]PATH",
                   help="a benchmark's data folder (default: UNIFYBENCH_<NAME>_ROOT); BENCHMARK=PATH, repeated, "
                        "when the table reads several benchmarks")
    p.add_argument("--concepts", help="comma-separated concept names (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
    p.add_argument("--model", action="append", metavar="ROLE=PATH", default=[], help="local weights by role (repeatable)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "unifybench",
                   help="tiny models, features and judge replies")
    g = p.add_argument_group("slurm (flags, or the same names as top-level keys of --config FILE.yaml)")
    g.add_argument("--config", type=Path, metavar="FILE.yaml", help="YAML mapping of these options (flags win)")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--account", help="Slurm account")
    g.add_argument("--qos", help="Slurm QOS")
    g.add_argument("--gpus", type=int, help="GPUs per job (default 1 with --device cuda, else 0)")
    g.add_argument("--cpus", type=int, help="CPUs per job")
    g.add_argument("--mem", type=float, help="GB per job")
    g.add_argument("--time", type=int, help="minutes per job (default 60)")
    g.add_argument("--array", action="store_true", help="one job array over the rows instead of one job per row")
    g.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then write the table")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _config_values(args) -> dict:
    """Top-level keys of --config named like this command's flags (`-` or `_`); flags given win."""
    if not args.config:
        return {}
    import yaml
    try:
        doc = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"config file {args.config} does not exist") from None
    except yaml.YAMLError:
        raise UserError(f"config file {args.config}: not YAML") from None
    if not isinstance(doc, dict):
        raise UserError(f"config file {args.config}: expected a mapping of option: value")
    out = {str(k).lstrip("-").replace("-", "_"): v for k, v in doc.items()}
    unknown = sorted(set(out) - set(vars(args)))
    if unknown:
        raise UserError(f"config file {args.config}: unknown key {unknown[0]!r} for reproduce")
    return out


def _apply_config(args, parser_defaults: dict) -> None:
    for key, value in _config_values(args).items():
        if getattr(args, key) == parser_defaults.get(key):
            setattr(args, key, Path(value) if isinstance(parser_defaults.get(key), Path) else value)


def _csv(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] if v else None


def _data_roots(value, benchmarks: list[str]) -> dict[str, str]:
    """{benchmark: folder} from --data-root values (PATH or BENCHMARK=PATH; a config file may give a mapping).
    A bare PATH is the data of the plan's only benchmark: with several it would feed every one of them."""
    from unifybench.registry import BENCHMARKS
    if isinstance(value, dict):
        value = [f"{k}={v}" for k, v in value.items()]
    elif isinstance(value, str):
        value = [value]
    roots = {}
    for v in value or []:
        bench, sep, path = str(v).partition("=")
        if sep and bench in BENCHMARKS:
            if bench not in benchmarks:
                raise UserError(f"--data-root {v}: this plan reads no {bench!r} (it reads {', '.join(benchmarks)})")
            roots[bench] = path
        elif len(benchmarks) == 1:
            roots[benchmarks[0]] = str(v)
        else:
            raise UserError(f"--data-root {v}: the plan reads {', '.join(benchmarks)}; give BENCHMARK=PATH "
                            "for each")
    return roots


def _options(args, benchmarks: list[str]) -> dict:
    from unifybench.options import _key_values
    return {"seed": args.seed, "device": args.device, "dtype": args.dtype, "concepts": _csv(args.concepts),
            "data_roots": _data_roots(args.data_root, benchmarks), "models": _key_values(args.model, "model"),
            "cache_dir": str(args.cache_dir), "judge_base_url": args.judge_base_url, "judge_model": args.judge_model}


def _n_concepts(run, options) -> int | None:
    if options.get("concepts"):
        return len(options["concepts"])
    try:
        from unifybench.reproduce.manifest import data_root
        from unifybench.runspec import make_benchmark
        return len(make_benchmark(run.benchmark, data_root(options, run.benchmark)).concepts())
    except Exception:
        return None


def _gpus(args) -> int:
    return args.gpus if args.gpus is not None else (1 if str(args.device).startswith("cuda") else 0)


def print_plan(plan, options, calibration: dict, gpus: int) -> None:
    from unifybench.tables import text_table
    print(f"plan for {plan.spec.name} ({'tiny' if plan.tiny else 'paper'}): {len(plan.runs)} runs")
    rows, total = [], 0.0
    for r in plan.runs:
        n = _n_concepts(r, options)
        cal = calibration.get(r.run)
        if cal and n is not None:
            hours = cal["seconds_per_concept"] * n * max(gpus, 1) / 3600
            total += hours
            cost = f"{hours:.3g} ({cal['seconds_per_concept']:.1f} s/concept on {cal['device']})"
        else:
            cost = "not measured (--calibrate)"
        pres = ", ".join(f"{k}={v}" for k, v in r.evaluator_presets.items())
        sets = ", ".join(f"{k}={v}" for k, v in r.overrides.items() if k != "base_url")
        rows.append([r.run, r.method, r.preset + (f" [{sets}]" if sets else ""), r.benchmark,
                     "?" if n is None else str(n), ",".join(r.evaluators) + (f" ({pres})" if pres else ""), cost])
    print(text_table(["run", "runnable", "preset", "benchmark", "concepts", "evaluators", "GPU-hours"], rows))
    print(f"total measured: {total:.3g} GPU-hours" + (" (device cpu: core-hours)" if gpus == 0 else ""))
    for r in plan.runs:
        if r.trains_as:
            print(f"{r.run}: trains as {r.trains_as} (same runnable, preset, settings, benchmark): reuses its "
                  "concept units and only scores")
        if r.skipped_evaluators:
            print(f"{r.run}: not scored by " + "; ".join(f"{k} ({v})" for k, v in r.skipped_evaluators.items()))
    for row, why in plan.reported_only.items():
        print(f"{row}: reported only ({why})")
    for row, why in plan.skipped.items():
        print(f"{row}: skipped ({why})")
    if plan.tiny:
        print("tiny preset: random tiny models; the numbers mean nothing.")


def show_status(suite: Path) -> int:
    from unifybench.reproduce.manifest import planned_runs, read_manifest, row_state
    from unifybench.tables import text_table
    man = read_manifest(suite)
    rows, counts = [], {}
    for r in planned_runs(man):
        st = row_state(suite, r["run"])
        counts[st["state"]] = counts.get(st["state"], 0) + 1
        rows.append([r["run"], st["state"], str(st["concepts_done"]), str(st.get("job_id") or ""),
                     (st.get("error") or "")[:80]])
    print(f"{suite}: {man['spec']} ({'tiny' if man.get('tiny') else 'paper'})")
    print(text_table(["run", "state", "concepts done", "job", "error"], rows))
    print(", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for row, why in man.get("reported_only", {}).items():
        print(f"{row}: reported only ({why})")
    for row, why in man.get("skipped", {}).items():
        print(f"{row}: skipped ({why})")
    return 0


def calibrate(suite: Path, plan, options) -> dict:
    """Seconds per concept for each row: one concept, this device, in SUITE/calibration/<row>."""
    from unifybench.reproduce.launch import run_spec
    from unifybench.reproduce.manifest import data_root
    from dataclasses import replace
    from unifybench.runner import run
    from unifybench.runspec import make_benchmark
    from unifybench.store import write_json
    path = suite / "calibration.json"
    cal = json.loads(path.read_text()) if path.is_file() else {}
    for r in plan.runs:
        spec = run_spec(suite, r.run)
        first = (options.get("concepts") or [c.name for c in make_benchmark(r.benchmark, data_root(options, r.benchmark)).concepts()])[:1]
        spec = replace(spec, concepts=first, output_dir=suite / "calibration" / r.run, resume=False)
        t0 = time.perf_counter()
        run(spec)
        cal[r.run] = {"seconds_per_concept": time.perf_counter() - t0, "device": options["device"],
                      "concept": first[0], "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _say(f"calibrated {r.run}: {cal[r.run]['seconds_per_concept']:.1f} s for one concept")
        write_json(path, cal)
    return cal


def main(args) -> int:
    from unifybench.reproduce import launch, manifest, results
    from unifybench.reproduce.plan import build_plan, plan_benchmarks
    if args.status:
        return show_status(args.status)
    if not args.spec:
        raise UserError("reproduce needs a SPEC (see `unifybench table --list`) or --status DIR")
    defaults = {"gpus": None, "partition": None, "account": None, "qos": None, "cpus": None, "mem": None,
                "time": None, "array": False, "wait": False, "launcher": "local", "seed": 0, "device": "cpu",
                "dtype": "float32", "data_root": [], "concepts": None, "rows": None, "api_base_url": None,
                "judge_base_url": None, "judge_model": None, "torchrun": 0, "jobs": 0}
    _apply_config(args, defaults)
    tiny = args.preset == "tiny"
    plan = build_plan(args.spec, tiny, api_base_url=args.api_base_url, judge_base_url=args.judge_base_url)
    wanted = _csv(args.rows)
    if wanted:
        for w in wanted:
            plan.spec.row(w)
        missing = [w for w in wanted if w not in {r.row for r in plan.runs}]
        if missing:
            why = plan.reported_only.get(missing[0]) or plan.skipped.get(missing[0])
            raise UserError(f"row {missing[0]!r} cannot run: {why}")
    suite = args.suite_dir or Path("runs") / f"reproduce-{plan.spec.name}{'-tiny' if tiny else ''}"
    options = _options(args, plan_benchmarks(plan.spec, tiny))
    doc = {"format": manifest.FORMAT, "spec": plan.spec.name, "spec_path": str(plan.spec.path), "tiny": tiny,
           "created": manifest.now(), "options": options, "runs": [r.to_json() for r in plan.runs],
           "reported_only": plan.reported_only, "skipped": plan.skipped}
    cal_path = suite / "calibration.json"
    if args.dry_run and not args.calibrate:
        cal = json.loads(cal_path.read_text()) if cal_path.is_file() else {}
        print_plan(plan, options, cal, _gpus(args))
        return 0
    suite.mkdir(parents=True, exist_ok=True)
    manifest.write_manifest(suite, doc)
    if args.calibrate:
        cal = calibrate(suite, plan, options)
        print_plan(plan, options, cal, _gpus(args))
        return 0
    rows = [r.run for r in plan.runs if not wanted or r.row in wanted]   # run ids
    t0 = time.perf_counter()
    if tiny:
        _say(results.TINY_BANNER)
    if args.launcher == "local":
        states = launch.launch_local(suite, rows, torchrun=args.torchrun,
                                     jobs=launch.local_jobs(args.jobs, tiny, args.device), echo=_say)
    else:
        settings = {k: getattr(args, k) for k in launch.SLURM_KEYS}
        settings["gpus"] = _gpus(args)
        jobs = launch.launch_slurm(suite, rows, settings, echo=_say)   # [(row, job)]
        if not args.wait:
            _say(f"submitted {len(jobs)} jobs; `unifybench reproduce --status {suite}` shows them; rerun this "
                 "command (or add --wait) to resume and write the table once they are done")
            return 0
        for row, job in jobs:
            try:
                job.result()
            except Exception as e:
                _say(f"{row}: job {job.job_id} failed ({str(e).strip().splitlines()[-1][:200] if str(e).strip() else e})")
        states = {r: manifest.row_state(suite, r)["state"] for r in rows}
    written = results.write_outputs(suite)
    _say(f"{sum(s == 'done' for s in states.values())}/{len(states)} rows done in {time.perf_counter() - t0:.0f} s; "
         f"wrote " + ", ".join(str(p) for p in written.values()))
    if tiny:
        _say(results.TINY_BANNER)
    return 0 if all(s == "done" for s in states.values()) else 1
