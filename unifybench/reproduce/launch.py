"""Launchers: run a suite's rows here (row after row, several at once in worker processes, or one row through
torchrun) or on Slurm via submitit.

`run_row(suite, run_id)` is the one unit every launcher executes: it reads the manifest, builds the run's
RunSpec, calls `unifybench.runner.run` (resume on: finished concepts are reused) and records the run's
state in its own run folder. A run id is the row's id, or `row@benchmark` for a row whose columns read
several benchmarks (see plan.py). A Slurm job is `run_row` pickled by submitit; a torchrun rank is
`python -m unifybench.reproduce.launch SUITE RUN`.

Slurm settings (flags, or the same names as top-level keys of the `--config` YAML file): partition,
gpus (per node), time (minutes), account, cpus (per task), mem (GB), array (one job array over the rows
instead of one job per row), qos. Jobs land in SUITE/slurm/ (submitit's logs and pickles).
"""
from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

from unifybench.reproduce.manifest import (data_root, now, planned_runs, read_manifest, row_state, run_dir,
                                           write_state)
from unifybench.store import write_json

SLURM_KEYS = ("partition", "gpus", "time", "account", "cpus", "mem", "array", "qos")


def run_spec(suite: Path, run_id: str):
    """The RunSpec of one planned run (the narrow surface to the runner)."""
    from unifybench.runspec import RunSpec
    man = read_manifest(suite)
    planned = next((r for r in planned_runs(man) if r["run"] == run_id), None)
    if planned is None:
        from unifybench.errors import UserError
        raise UserError(f"{run_id!r} is not a run of the suite in {suite}")
    o = man["options"]
    return RunSpec(method=planned["method"], benchmark=planned["benchmark"],
                   data_root=data_root(o, planned["benchmark"]),
                   evaluators=list(planned["evaluators"]), evaluator_presets=dict(planned["evaluator_presets"]),
                   preset=planned["preset"], overrides=dict(planned["overrides"]),
                   output_dir=run_dir(suite, run_id), seed=o["seed"], device=o["device"], dtype=o["dtype"],
                   concepts=o.get("concepts"), models=dict(o.get("models") or {}), resume=True,
                   cache_dir=Path(o["cache_dir"]), tiny=planned["tiny"], progress=False,
                   judge_base_url=o.get("judge_base_url"), judge_model=o.get("judge_model"),
                   judge_enabled=True)


def reuse_training(suite: Path, run_id: str) -> bool:
    """Before a run whose plan names `trains_as`: copy that run's finished concept units into this run's
    folder (when the source is done and this run has none yet), so that the runner resumes them instead of
    training again. Copies, not links: a unit the runner redoes never writes into the source's files."""
    import shutil
    man = read_manifest(suite)
    planned = next(r for r in planned_runs(man) if r["run"] == run_id)
    source = planned.get("trains_as")
    dest = run_dir(suite, run_id) / "concepts"
    if not source or dest.exists() or row_state(suite, source)["state"] != "done":
        return False
    partial = dest.with_name("concepts.copying")   # renamed when whole: a crash never leaves half a unit
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(run_dir(suite, source) / "concepts", partial)
    partial.rename(dest)
    return True


def run_row(suite: str | Path, row: str) -> str:
    """Run (or resume) one planned run (`row`: its run id); returns its final state. Failures are
    recorded, then raised."""
    from unifybench.runner import run
    suite = Path(suite)
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID") and \
        f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" or os.environ.get("SLURM_JOB_ID")
    rank = int(os.environ.get("RANK", "0"))
    spec = run_spec(suite, row)
    if rank == 0:   # before run(): the other ranks look at units only after the runner's first barrier
        write_state(suite, row, "running", **({"job_id": job_id} if job_id else {}))
        reuse_training(suite, row)
    try:
        run(spec)
    except BaseException as e:
        if rank == 0:
            state = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            write_state(suite, row, state, error=f"{type(e).__name__}: {e}",
                        traceback=traceback.format_exc()[-4000:], **({"job_id": job_id} if job_id else {}))
        raise
    if rank == 0:
        write_state(suite, row, "done", **({"job_id": job_id} if job_id else {}))
    return "done"


def torchrun_command(suite: Path, row: str, nproc: int) -> list[str]:
    """torchrun (this interpreter's torch.distributed.run, not whichever `torchrun` is first on PATH) with
    `nproc` ranks on this node, each running `run_row(suite, row)`; --standalone picks a free port."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "unifybench.reproduce.launch", str(suite), row]


def local_jobs(requested: int, tiny: bool, device: str) -> int:
    """Rows at once on this machine: `requested`, or (0) one per CPU core for a tiny plan on the CPU (its
    models are single-threaded and small, so a second core is otherwise idle), else one (a real model holds
    the GPU or the memory). Capped at 4 so that automatic parallelism never takes more than ~6 GB."""
    if requested > 0:
        return requested
    if tiny and str(device) == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(cores, 4))
    return 1


def _worker_start() -> None:
    """A row worker dies with its launcher (a SIGKILLed launcher leaves no row running unseen: the row's
    state then reads interrupted and a rerun resumes it)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        if os.getppid() == 1:   # the launcher died before the line above
            os._exit(1)


def _run_row_here(suite: str, row: str) -> tuple[str, str]:
    """(state, error) of one run in a worker process; the error as text (nothing unpicklable crosses)."""
    try:
        return run_row(suite, row), ""
    except Exception as e:   # recorded in the run's state.json by run_row; counted here
        return "failed", f"{type(e).__name__}: {e}"


def launch_local(suite: Path, rows: list[str], torchrun: int = 0, jobs: int = 1, echo=print) -> dict[str, str]:
    """Runs one after the other in this process, `jobs` at once in worker processes, or each through
    torchrun with `torchrun` processes. Every run writes only its own folder, so the order never matters."""
    states, todo = {}, []
    for row in rows:
        if row_state(suite, row)["state"] == "done":
            echo(f"{row}: done (kept)")
            states[row] = "done"
        else:
            todo.append(row)
    if jobs > 1 and len(todo) > 1 and torchrun <= 1:
        states.update(_launch_parallel(suite, todo, jobs, echo))
        return {row: states[row] for row in rows}
    for row in todo:
        echo(f"{row}: running")
        if torchrun > 1:
            rc = subprocess.call(torchrun_command(suite, row, torchrun))
            states[row] = row_state(suite, row)["state"] if rc == 0 else "failed"
        else:
            try:
                states[row] = run_row(suite, row)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one row's failure is counted; the next row still runs
                echo(f"{row}: failed ({type(e).__name__}: {e})")
                states[row] = "failed"
        echo(f"{row}: {states[row]}")
    return states


def _longest_first(suite: Path, rows: list[str]) -> list[str]:
    """The order the workers take the runs in, so that no long run starts last while the others idle: by
    the seconds --calibrate measured (SUITE/calibration.json) when every run has them, else the plan's
    order reversed (the tables list their own, heaviest methods last: UniCTokens, Yo'Chameleon)."""
    import json
    try:
        cal = json.loads((Path(suite) / "calibration.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        cal = {}
    if all(isinstance((cal.get(r) or {}).get("seconds_per_concept"), (int, float)) for r in rows):
        return sorted(rows, key=lambda r: -cal[r]["seconds_per_concept"])
    return rows[::-1]


def _launch_parallel(suite: Path, rows: list[str], jobs: int, echo) -> dict[str, str]:
    """`jobs` worker processes (spawned: each imports once, then runs row after row) take the rows in order."""
    import concurrent.futures as cf
    import multiprocessing
    states = {}
    source = {r["run"]: r.get("trains_as") for r in planned_runs(read_manifest(suite))}
    rows = _longest_first(suite, rows)
    # A run that reuses another's training waits for it (when both run now); the rest go in plan order.
    waiting = {row: source[row] for row in rows if source.get(row) in rows}
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(rows)), mp_context=multiprocessing.get_context("spawn"),
                                initializer=_worker_start) as pool:
        futures = {pool.submit(_run_row_here, str(suite), row): row for row in rows if row not in waiting}
        echo(f"{', '.join(rows)}: running, {min(jobs, len(rows))} at a time")
        while futures:
            done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                row = futures.pop(fut)
                try:
                    states[row], error = fut.result()
                except cf.process.BrokenProcessPool as e:   # a worker killed (out of memory, signal)
                    states[row], error = "failed", f"worker died ({e})"
                if error:
                    echo(f"{row}: failed ({error})")
                echo(f"{row}: {states[row]}")
                for later in [w for w, src in waiting.items() if src == row]:
                    del waiting[later]
                    try:
                        futures[pool.submit(_run_row_here, str(suite), later)] = later
                    except cf.process.BrokenProcessPool as e:
                        states[later] = "failed"
                        echo(f"{later}: failed (worker died ({e}))")
    return states


def slurm_executor(suite: Path, settings: dict, cluster: str = "slurm"):
    """A submitit executor for the suite (`cluster="local"`: submitit's local executor, same code path)."""
    import submitit
    folder = Path(suite) / "slurm" / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"name": "unifybench-" + read_manifest(suite)["spec"], "timeout_min": int(settings.get("time") or 60)}
    if settings.get("gpus"):
        params["gpus_per_node"] = int(settings["gpus"])
    if settings.get("cpus"):
        params["cpus_per_task"] = int(settings["cpus"])
    if settings.get("mem"):
        params["mem_gb"] = float(settings["mem"])
    if cluster == "slurm":
        for key, name in (("partition", "slurm_partition"), ("account", "slurm_account"), ("qos", "slurm_qos")):
            if settings.get(key):
                params[name] = settings[key]
    ex.update_parameters(**params)
    return ex


def launch_slurm(suite: Path, rows: list[str], settings: dict, cluster: str = "slurm", echo=print) -> list:
    """Submit the rows not done yet: one job each, or one job array; returns [(row, submitit job)]."""
    todo = [r for r in rows if row_state(suite, r)["state"] != "done"]
    if not todo:
        echo("every row is done; nothing submitted")
        return []
    ex = slurm_executor(suite, settings, cluster)
    if settings.get("array"):
        jobs = ex.map_array(run_row, [str(suite)] * len(todo), todo)
    else:
        jobs = [ex.submit(run_row, str(suite), row) for row in todo]
    for row, job in zip(todo, jobs):
        # Its own file: the job may already be writing state.json (a 1-s job on an idle cluster).
        write_json(run_dir(suite, row) / "job.json", {"job_id": str(job.job_id), "cluster": cluster,
                                                     "submitted": now()})
        echo(f"{row}: submitted as job {job.job_id}")
    return list(zip(todo, jobs))


def main(argv: list[str] | None = None) -> int:
    """`python -m unifybench.reproduce.launch SUITE RUN` (what torchrun starts on each rank)."""
    suite, row = (argv if argv is not None else sys.argv[1:])[:2]
    run_row(Path(suite), row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
