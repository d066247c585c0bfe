"""bench/throughput.py at small sizes: each throughput change gives the same outputs as its absence."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readahead_and_code_cache_parts_print_both_sides_with_identical_outputs(tmp_path):
    out = tmp_path / "t.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--parts", "readahead,codes",
                           "--pool", "96", "--photos", "2", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    ra, codes = doc["readahead"], doc["codes"]
    assert ra["same_features"] is True and ra["images"] == 96
    assert ra["sequential_images_per_s"] > 0 and ra["readahead_images_per_s"] > 0
    assert codes["same_codes"] is True and codes["warm_encode_calls"] == 0 and codes["cold_encode_calls"] == 4
    assert "readahead 96 pool images" in proc.stdout and "x, same features True" in proc.stdout
