"""One run per output folder: `<output-dir>/.unifybench.lock` holds the running process's pid, host and
command. A second run on the folder fails at once naming them; a lock whose pid is dead (on this host) is
stale and taken over. The lock is made with O_EXCL, so two runs starting together cannot both win."""
from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

from unifybench.errors import UserError
from unifybench.processes import pid_alive

LOCK_NAME = ".unifybench.lock"


def _holder(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) and isinstance(doc.get("pid"), int) else None
    except (OSError, ValueError):
        return None


@contextmanager
def run_lock(folder: Path):
    """Hold `folder`'s lock for the block; UserError when another live run holds it."""
    path = Path(folder) / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and (holder.get("host") != me["host"] or pid_alive(holder["pid"])):
                raise UserError(f"{folder} is in use by another run (pid {holder['pid']} on {holder.get('host')}: "
                                f"{holder.get('command')}); wait for it, or pick another --output-dir") from None
            path.unlink(missing_ok=True)   # stale (dead pid) or torn: take it over
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        break
    else:
        raise UserError(f"{path}: cannot take the run lock")
    try:
        yield
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
