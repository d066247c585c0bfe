"""Whether a process of this host still runs: what the run lock, the work queue's claims and the reproduce
manifest ask before taking over something a process left behind."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while `pid` runs on this host (another user's process counts as alive); 0 and negatives never
    name one process, so they are dead here. A zombie (exited, not yet reaped: an orphaned reproduce worker
    waits for init, seconds in some containers) is dead: it holds nothing any more."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):   # no /proc (macOS): kill(0) is the answer
        return True
