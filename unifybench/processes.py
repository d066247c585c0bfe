"""Whether a process of this host still runs: what the run lock, the work queue's claims and the reproduce
manifest ask before taking over something a process left behind."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while `pid` exists on this host (another user's process counts as alive); 0 and negatives never
    name one process, so they are dead here."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
