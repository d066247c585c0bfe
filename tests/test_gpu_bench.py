"""bench/gpu.py's CPU dry run: every section runs at small sizes with the GPU image's missing packages blocked."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Packages the GPU image lacks: importing any of them (directly or through our modules) must not be needed.
ABSENT = ("open_clip", "diffusers", "lm_eval", "insightface", "onnxruntime")
RUNNER = """
import runpy, sys
for name in {absent!r}:
    sys.modules[name] = None          # `import name` now raises ImportError
sys.argv = ["gpu.py", "--dry-run", "--device", "cpu", "--out", {out!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_gpu_bench_dry_run_writes_every_figure(tmp_path):
    out = tmp_path / "figures"
    code = RUNNER.format(absent=ABSENT, out=str(out), script=str(ROOT / "bench" / "gpu.py"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "gpu.json").read_text())
    assert doc["dry_run"] is True
    sections = doc["sections"]
    assert set(sections) == {"concept_tokens", "chameleon_generation", "showo_maskgit", "generation_metrics"}
    assert not [n for n, s in sections.items() if "error" in s], {n: s.get("error") for n, s in sections.items()}
    ct = sections["concept_tokens"]
    assert ct["state_bytes"]["full"] > 50 * ct["state_bytes"]["ours"]   # the full vocab vs 33 rows
    gen = sections["chameleon_generation"]
    assert set(gen["batches"]) == {"1", "2"} and gen["batches"]["1"]["same_seed_same_codes"] is True
    assert all(r["tokens_per_s"] > 0 and r["bound_tokens_per_s_weights"] > 0 for r in gen["batches"].values())
    showo = sections["showo_maskgit"]
    assert set(showo["images_per_s"]) == {"1", "2"} and showo["mmu"]["identical"] is True
    metrics = sections["generation_metrics"]
    assert metrics["max_abs_diff_all"] < 1e-5 and metrics["clip"] == "hf:tiny"
    table = (out / "gpu.md").read_text()
    assert "DRY RUN" in table and "concept-token step" in table and "MaskGIT" in table and "CLIP-I" in table
