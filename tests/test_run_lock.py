"""Issue 15.2: one run per output folder; a stale lock (dead pid) is taken over."""
import json
import os
import socket
import subprocess
import sys

import pytest

from unifybench.cli import main
from unifybench.errors import UserError
from unifybench.runlock import LOCK_NAME, run_lock


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "the-first-run"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                 "command": "unifybench run --method yollava"}))
        before = sorted(p.name for p in out.rglob("*"))
        rc = main(["run", "--method", "yollava", "--preset", "tiny", "--output-dir", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and f"pid {holder.pid}" in err and "unifybench run --method yollava" in err
        assert sorted(p.name for p in out.rglob("*")) == before        # no unit was started
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "old"}))
    with run_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    assert not lock.exists()
