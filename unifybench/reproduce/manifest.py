"""The suite folder: manifest.json (what was planned) and each run's state.json (what happened to it).

    SUITE/manifest.json          {"format": "unifybench-suite/1", "spec", "tiny", "options", "runs": [...],
                                  "reported_only": {row: why}, "skipped": {row: why}}
    SUITE/runs/<run>/            the run folder (results.json, concepts/, samples/ as `unifybench run`);
                                 <run> is the row's id, or row@benchmark when a row reads several
    SUITE/runs/<run>/state.json  {"state": "running"|"done"|"failed", "host", "pid", "job_id", "error", ...}

The manifest is written once per launch by the launching process; a job writes only inside its own run
folder (its state file and the runner's outputs), so a crashed or pre-empted job is simply launched again
and the runner resumes it from its finished concepts. A run's state is read, never stored centrally:
"done" needs results.json; "running" whose local process is gone reads "interrupted"; a Slurm job's id
sits in runs/<row>/job.json (written by the submitter, beside the job's own state file).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any

from unifybench.errors import UserError
from unifybench.processes import pid_alive
from unifybench.store import write_json

FORMAT = "unifybench-suite/1"
STATES = ("pending", "submitted", "running", "done", "failed", "interrupted")


def run_dir(suite: Path, row: str) -> Path:
    return Path(suite) / "runs" / row


def read_manifest(suite: Path) -> dict:
    path = Path(suite) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{suite} is not a reproduce suite (no manifest.json)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a suite manifest (format must be {FORMAT!r})")
    return doc


def planned_runs(man: dict) -> list[dict]:
    """The manifest's runs, each with its run id (a suite planned before run ids: the row's id)."""
    return [{**r, "run": r.get("run") or r["row"]} for r in man["runs"]]


def data_root(options: dict, benchmark: str) -> str | None:
    """The data folder given for `benchmark` (None: the runner reads UNIFYBENCH_<NAME>_ROOT)."""
    return (options.get("data_roots") or {}).get(benchmark) or options.get("data_root")


def write_manifest(suite: Path, doc: dict) -> None:
    old = None
    if (Path(suite) / "manifest.json").is_file():
        old = read_manifest(suite)
        for key in ("spec", "tiny"):
            if old.get(key) != doc.get(key):
                raise UserError(f"{suite} holds the suite of {old.get('spec')!r} (tiny={old.get('tiny')}); "
                                f"this plan is {doc.get('spec')!r} (tiny={doc.get('tiny')}): use another --suite-dir")
        doc = {**doc, "created": old.get("created", doc.get("created"))}
    write_json(Path(suite) / "manifest.json", doc)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_state(suite: Path, row: str, state: str, **extra: Any) -> None:
    d = run_dir(suite, row)
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "state.json", {"state": state, "host": socket.gethostname(), "pid": os.getpid(),
                                  "time": now(), **extra})


def row_state(suite: Path, row: str) -> dict:
    """{"state", ...} of one run (`row`: its run id), read from its run folder."""
    d = run_dir(suite, row)
    try:
        st = json.loads((d / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        st = {"state": "pending"}
    try:
        job = json.loads((d / "job.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        job = None
    if job:
        st.setdefault("job_id", job.get("job_id"))
        if st["state"] == "pending":
            st["state"] = "submitted"
    if st.get("state") == "done" and not (d / "results.json").is_file():
        st["state"] = "pending"
    if (st.get("state") == "running" and not st.get("job_id") and st.get("host") == socket.gethostname()
            and isinstance(st.get("pid"), int) and not pid_alive(st["pid"])):
        st["state"] = "interrupted"
    n_done = len(list((d / "concepts").glob("*/unit.json"))) if (d / "concepts").is_dir() else 0
    st["concepts_done"] = n_done
    return st
