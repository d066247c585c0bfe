"""A work queue over the run's output folder: each rank claims the next unfinished unit atomically.

A claim is a file `<out>/claims/<unit>.claim` created with O_CREAT | O_EXCL (atomic on local and network
file systems that honour it), holding the claimer's pid, host, rank and launch id. Every rank walks the units
in order and works on the ones it claims, so a slow unit holds only its own rank and no GPU idles while
units remain. A claim is stale, and may be taken over, when it belongs to another launch (a crashed or
finished earlier run of the same folder) or to a process on this host that no longer exists. Which rank ran
a unit never changes its outputs: units are seeded by name and rank 0 reads them all back in order.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from unifybench.processes import pid_alive

CLAIMS = "claims"
LAUNCH_FILE = "launch.json"


def new_launch_id() -> str:
    return uuid.uuid4().hex


def write_launch(out: Path, launch: str) -> None:
    """Rank 0 records the launch id every rank of this run reads (after a barrier)."""
    folder = Path(out) / CLAIMS
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{LAUNCH_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"launch": launch}))
    os.replace(tmp, folder / LAUNCH_FILE)


def read_launch(out: Path) -> str:
    return json.loads((Path(out) / CLAIMS / LAUNCH_FILE).read_text())["launch"]


class WorkQueue:
    def __init__(self, out: Path, launch: str, rank: int = 0):
        self.folder = Path(out) / CLAIMS
        self.folder.mkdir(parents=True, exist_ok=True)
        self.launch, self.rank = launch, rank
        self.host, self.pid = socket.gethostname(), os.getpid()

    def _file(self, unit: str) -> Path:
        return self.folder / f"{unit}.claim"

    def claim(self, unit: str) -> bool:
        """True when this process now holds `unit` (fresh, or taken over from a stale claim)."""
        for _ in range(2):
            try:
                fd = os.open(self._file(unit), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_stale(unit):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": self.pid, "host": self.host, "rank": self.rank, "launch": self.launch,
                           "time": time.time()}, f)
            return True
        return False

    def holder(self, unit: str) -> dict | None:
        try:
            return json.loads(self._file(unit).read_text())
        except (OSError, ValueError):
            return None

    def _take_over_stale(self, unit: str) -> bool:
        """Remove `unit`'s claim when it is stale; True if the caller may try to claim again."""
        info = self.holder(unit)
        if info is None:
            # Unreadable: a claimer between create and write, or a damaged file. Give a writer a moment.
            time.sleep(0.05)
            info = self.holder(unit)
            if info is None:
                return False
        if not self._stale(info):
            return False
        # Rename first: of several ranks racing to take over, exactly one rename succeeds.
        grave = self.folder / f".{unit}.stale.{self.pid}.{uuid.uuid4().hex[:8]}"
        try:
            os.replace(self._file(unit), grave)
        except FileNotFoundError:
            return True            # someone else removed it; try the exclusive create again
        if json.loads(grave.read_text()) != info:
            # Another rank took the stale claim over between our check and our rename: give it back.
            os.replace(grave, self._file(unit))
            return False
        grave.unlink(missing_ok=True)
        return True

    def _stale(self, info: dict) -> bool:
        if info.get("launch") != self.launch:
            return True                                   # an earlier launch of this folder
        if info.get("host") == self.host and info.get("pid") != self.pid:
            return not pid_alive(int(info.get("pid", -1)))   # a dead rank of this launch on this host
        return False

