"""The work queue's claims: exclusive, stale ones (another launch, a dead process on this host) re-claimable."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from unifybench.workqueue import WorkQueue, read_launch, write_launch


def test_a_unit_is_claimed_once(tmp_path):
    a, b = WorkQueue(tmp_path, "L1", rank=0), WorkQueue(tmp_path, "L1", rank=1)
    assert a.claim("dog") and not b.claim("dog") and b.claim("cat")
    held = a.holder("dog")
    assert held["rank"] == 0 and held["pid"] == os.getpid() and held["launch"] == "L1"


def test_racing_claims_give_each_unit_to_exactly_one(tmp_path):
    queues = [WorkQueue(tmp_path, "L1", rank=r) for r in range(8)]
    units = [f"c{i}" for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda q: [u for u in units if q.claim(u)], queues))
    assert sorted(u for w in won for u in w) == sorted(units)


def test_claims_of_an_earlier_launch_are_stale(tmp_path):
    assert WorkQueue(tmp_path, "old", rank=0).claim("dog")
    new = WorkQueue(tmp_path, "new", rank=1)
    assert new.claim("dog") and new.holder("dog")["launch"] == "new"


def test_a_dead_process_claim_is_reclaimed_a_live_one_is_not(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    q = WorkQueue(tmp_path, "L1", rank=0)
    claim = tmp_path / "claims" / "dog.claim"
    claim.write_text(json.dumps({"pid": int(dead.stdout), "host": q.host, "rank": 1, "launch": "L1"}))
    assert q.claim("dog") and q.holder("dog")["pid"] == os.getpid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "claims" / "cat.claim").write_text(
            json.dumps({"pid": live.pid, "host": q.host, "rank": 1, "launch": "L1"}))
        assert not q.claim("cat")
        other_host = {"pid": 1, "host": q.host + "-elsewhere", "rank": 2, "launch": "L1"}
        (tmp_path / "claims" / "bird.claim").write_text(json.dumps(other_host))
        assert not q.claim("bird")          # another host's live launch: never taken over
    finally:
        live.kill()
        live.wait()


def test_launch_id_round_trip(tmp_path):
    write_launch(tmp_path, "abc")
    assert read_launch(tmp_path) == "abc"
