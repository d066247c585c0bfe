"""bench/scale.py at its --quick size, and the fixes it led to."""
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
    for stage in ("data index", "retrieval", "sample building", "training (model)", "answering (model)",
                  "generation (model)", "eval recognition", "eval clip_i", "tables", "report", "total"):
        assert stage in proc.stdout, stage
    assert "exp(concepts)" in proc.stdout and "TINY RANDOM MODELS" in proc.stdout
