"""`unifybench run --method yochameleon|unictokens --preset tiny --evaluators mmlu,pope,mmbench` end to end."""
import json
import os
import subprocess
import sys

import pytest

from forgetting_fixture import write_mmbench, write_mmlu, write_pope

pytestmark = pytest.mark.slow


FAST = {"yochameleon": ["epochs=1"],
        "unictokens": ["s1_epochs=1", "s2_epochs=1", "s3_epochs=1", "perception_images=1", "gen_steps=2"]}


@pytest.mark.parametrize("method", sorted(FAST))
def test_forgetting_results_for_base_and_personalized_model(tmp_path, method):
    env = dict(os.environ,
               UNIFYBENCH_MMLU_ROOT=str(write_mmlu(tmp_path / "mmlu")),
               UNIFYBENCH_POPE_ROOT=str(write_pope(tmp_path / "pope")),
               UNIFYBENCH_MMBENCH_ROOT=str(write_mmbench(tmp_path / "mmbench_dev.tsv")))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", method, "--preset", "tiny",
                           "--concepts", "dog", *[a for kv in FAST[method] for a in ("--set", kv)],
                           "--evaluators", "mmlu,pope,mmbench",
                           "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    forgetting = doc["forgetting"]
    assert set(forgetting["evaluators"]) == {"mmlu", "pope", "mmbench"}
    for name, entry in forgetting["evaluators"].items():
        assert entry["base"]["n"] > 0, name
        assert set(entry["concepts"]["dog"]) == {"plain", "prompt"}, name
        for cond in ("plain", "prompt"):
            assert entry["concepts"]["dog"][cond]["n"] == entry["base"]["n"], name
    assert "mmlu" in (out / "leaderboard.md").read_text()


def test_tiny_forgetting_runs_on_the_bundled_mini_sets_without_environment_variables(tmp_path):
    """The README's forgetting command with no MMLU/POPE/MMBench folders: the tiny preset reads the bundled
    mini sets, in their real formats, and records them as bundled (no local path)."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("UNIFYBENCH_") and k.endswith("_ROOT"))}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "unifybench.cli", "run", "--method", "yochameleon", "--preset",
                           "tiny", "--concepts", "dog", "--set", "epochs=1", "--evaluators", "mmlu,pope,mmbench",
                           "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    # 2 subjects x 4 questions; 3 splits x 4 photos x (yes, no); 4 questions
    sizes = {"mmlu": 8, "pope": 24, "mmbench": 4}
    for name, n in sizes.items():
        entry = doc["forgetting"]["evaluators"][name]
        assert entry["base"]["n"] == n and entry["base"]["n_failed"] == 0, name
        assert doc["config"]["evaluators"][name]["params"]["data"].startswith("bundled:"), name
