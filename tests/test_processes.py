"""pid_alive: a running process is alive; an exited one is dead even before anyone reaps it (a zombie)."""
import subprocess
import sys
import time

import pytest

from unifybench.processes import pid_alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="zombies are read from /proc")
def test_a_zombie_is_dead_and_a_sleeper_alive():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    quitter = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 30
        while time.time() < deadline:   # exited, not waited for: a zombie
            with open(f"/proc/{quitter.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.02)
        assert not pid_alive(quitter.pid)
        assert pid_alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
        quitter.wait()
    assert not pid_alive(quitter.pid) and not pid_alive(0)
