"""The runner's guarantees: a run killed anywhere resumes to the same results; N ranks equal 1 rank."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Two concepts, one epoch, recognition + CLIP-I: the whole pipeline at a fraction of the tiny cost.
ARGS = ["run", "--method", "yochameleon", "--preset", "tiny", "--concepts", "dog,backpack",
        "--evaluators", "recognition,clip_i", "--set", "epochs=1", "--no-progress"]


def command(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "unifybench.cli", *ARGS, "--output-dir", str(out), "--cache-dir", str(cache)]


def results_and_samples(out: Path):
    doc = json.loads((out / "results.json").read_text())
    samples = {f.name: f.read_text() for f in sorted((out / "samples").glob("*.jsonl"))}
    return doc["results"], samples


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(command(out, cache), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return results_and_samples(out)


def first_png(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.png"))


def test_killed_at_three_points_resumes_to_identical_results(reference, tmp_path, cache):
    out = tmp_path / "run"
    c0, c1 = out / "concepts" / "dog", out / "concepts" / "backpack"
    # Each condition marks a point inside a stage; the process is SIGKILLed as soon as it holds.
    points = [
        ("predicting the first concept", lambda: first_png(c0 / "images")),
        ("second concept fitted, not predicted", lambda: (c1 / "fit.json").exists()),
        ("scoring", lambda: (out / "samples").is_dir()),
    ]   # kills between units, inside fit and in the judge append: tests/test_fault_injection.py (a cheaper method)
    killed = []
    for name, condition in points:
        proc = subprocess.Popen(command(out, cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed.append(name)
    assert len(killed) >= 2, f"the run finished before most kill points: killed at {killed}"
    proc = subprocess.run(command(out, cache), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert results_and_samples(out) == reference


@pytest.mark.parametrize("ranks", [2, 3])
def test_work_queue_ranks_equal_one_rank(reference, tmp_path, cache, ranks):
    """2 concepts on 2 and 3 CPU ranks (one rank idle): the same results and samples as 1 rank."""
    out = tmp_path / "ranks"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
                           "--master_addr", "127.0.0.1", "--master_port", str(29531 + ranks),
                           "-m", "unifybench.cli", *command(out, cache)[3:]],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert results_and_samples(out) == reference
    execution = json.loads((out / "results.json").read_text())["execution"]
    assert execution["world_size"] == ranks
    units = execution["units"]
    assert set(units) == {"dog", "backpack"}
    assert all(u["world_size"] == ranks and u["device"] == "cpu" and u["seconds"] > 0 for u in units.values())
    assert all(0 <= u["rank"] < ranks for u in units.values())
