"""bench/scale.py at its --quick size, and the fixes it led to."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pool_digests_are_remembered_but_follow_a_changed_file(tmp_path):
    from unifybench.models.encoders.clip import _file_sha256, _hash_file
    f = tmp_path / "a.png"
    f.write_bytes(b"one")
    first = _file_sha256(f)
    assert first == _hash_file(f) and _file_sha256(f) == first
    f.write_bytes(b"other")                      # new size and mtime: hashed again
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert _file_sha256(f) == _hash_file(f) != first


@pytest.mark.slow
def test_scale_quick_prints_every_stage_and_exponents(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--json", str(tmp_path / "s.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("data index", "retrieval", "sample building", "image encoding (model)", "encoders (model)",
                  "training (model)", "answering (model)", "generation (model)", "eval recognition", "eval clip_i",
                  "tables", "report", "total", "work: answers", "work: scored recognition"):
        assert stage in proc.stdout, stage
    assert "exp(concepts)" in proc.stdout and "TINY RANDOM MODELS" in proc.stdout
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["settings"]["image_tokens"] == 64 and [r["concepts"] for r in doc["runs"]] == [1, 2]
    # recognition asks each concept about every concept's test photos: 2 concepts, 4x the items of 1
    first, second = (r["scored"]["recognition"] for r in doc["runs"])
    assert second > 2 * first


def _scale_module():
    spec = importlib.util.spec_from_file_location("scale_bench", ROOT / "bench" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_times_are_self_times_at_any_depth(monkeypatch):
    """A stage's figure is its wall time less the stages nested in it, at every depth, so the stages of a
    run add up to its wall time (a hand-checked clock: 0..10 s)."""
    scale = _scale_module()
    clock = iter([0.0, 1.0, 3.0, 4.0, 6.0, 7.0, 9.0, 10.0])   # the perf_counter reads, in order
    monkeypatch.setattr(scale.time, "perf_counter", lambda: next(clock))
    st = scale.Stages()
    with st.stage("sample building"):                # 0 .. 10
        with st.stage("retrieval"):                  # 1 .. 6
            with st.stage("encoders"):               # 3 .. 4
                pass
        with st.stage("encoders"):                   # 7 .. 9
            pass
    assert st.seconds == {"encoders": 1.0 + 2.0, "retrieval": 5.0 - 1.0, "sample building": 10.0 - 5.0 - 2.0}
    assert sum(st.seconds.values()) == 10.0 and st.calls["encoders"] == 2
    assert list(st.peak_mib) == ["sample building"] and st.peak_mib["sample building"] > 0   # outermost only


def test_exponent_is_the_log_log_slope():
    scale = _scale_module()
    assert abs(scale.exponent([1, 5, 20], [3.0, 15.0, 60.0]) - 1.0) < 1e-12
    assert abs(scale.exponent([1, 10, 100], [2.0, 200.0, 20000.0]) - 2.0) < 1e-12
    assert scale.exponent([5, 5], [1.0, 2.0]) is None
