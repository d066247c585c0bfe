"""`unifybench run --method yochameleon --preset tiny` end to end, through the real command."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unifybench.data.unifybench import UnifyBenchMini

pytestmark = pytest.mark.slow


def unifybench(*args, cache):
    return subprocess.run([sys.executable, "-m", "unifybench.cli", *args, "--cache-dir", str(cache), "--no-progress"],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


FIRST_STDERR: list[str] = []


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("run1")
    proc = unifybench("run", "--method", "yochameleon", "--preset", "tiny", "--output-dir", str(out), cache=cache)
    assert proc.returncode == 0, proc.stderr
    FIRST_STDERR.append(proc.stderr)
    return out


def test_tiny_text_answers_are_non_empty_and_the_run_says_what_tiny_numbers_test(first_run):
    """The tiny Chameleon is steered to readable text in its saved weights (models/chameleon/tiny.py), so even
    after the tiny fit no answer is only end of turn or concept tokens (which the method drops when decoding):
    every one of the 99 text answers is visible text (there used to be 0, then 50). The run says what tiny
    numbers test on stderr, in results.json and above the run's table."""
    from tiny_answers import text_answers, unreadable
    assert len(text_answers(first_run)) == 99 and not unreadable(first_run), unreadable(first_run)
    assert "tiny preset: random tiny models" in FIRST_STDERR[0] and "numbers mean nothing" in FIRST_STDERR[0]
    assert "test the pipeline and say nothing about any method" in json.loads((first_run / "results.json").read_text())["notice"]
    assert "RANDOM TINY MODELS" in (first_run / "leaderboard.md").read_text().splitlines()[0]
    # off a terminal: one line per finished concept with elapsed time and ETA, one per stage
    lines = [l for l in FIRST_STDERR[0].splitlines() if l.startswith("unifybench: yochameleon:")]
    assert sum(" concept " in l and "ETA" in l for l in lines) == len(UnifyBenchMini().concepts())
    assert any("scoring done in" in l for l in lines)
    assert "FutureWarning" not in FIRST_STDERR[0] and "past_key_values" not in FIRST_STDERR[0]
    for c in UnifyBenchMini().concepts():
        log = [json.loads(l) for l in (first_run / "concepts" / c.name / "train_log.jsonl").read_text().splitlines()]
        assert sum(r["kind"] == "epoch" for r in log) == 3 and all(r["loss"] > 0 for r in log)   # tiny: 3 epochs


def test_python_api_gives_the_cli_numbers(first_run, tmp_path, cache):
    """`unifybench.run(method=..., preset="tiny")` in-process: the CLI's defaults, files and numbers. A second
    run of the same seed in another process and another folder (nothing resumed), so it also shows that the
    same seed reproduces every number and every samples file byte for byte."""
    import unifybench
    res = unifybench.run(method="yochameleon", preset="tiny", output_dir=tmp_path, cache_dir=cache, no_progress=True)
    cli = json.loads((first_run / "results.json").read_text())
    assert res.tiny and res.doc["results"] == cli["results"] and res.doc["config"] == cli["config"]
    for f in (first_run / "samples").glob("*.jsonl"):
        assert f.read_text() == (tmp_path / "samples" / f.name).read_text()


def test_outputs_and_results_schema(first_run):
    doc = json.loads((first_run / "results.json").read_text())
    for key in ("schema_version", "unifybench_version", "git_hash", "date", "environment", "config", "models"):
        assert key in doc
    assert doc["tiny"] is True and "RANDOM TINY MODELS" in doc["notice"]
    assert doc["environment"]["libraries"]["torch"] and doc["environment"]["device"] == "cpu"
    assert doc["config"]["seed"] == 0 and doc["config"]["method"]["preset"] == "tiny"
    assert all(len(m["sha256"]) == 64 for m in doc["models"].values()) and doc["models"]
    res = doc["results"]["unifybench-mini"]
    concepts = [c.name for c in UnifyBenchMini().concepts()]
    for name in ("recognition", "clip_i"):
        r = res[name]
        assert set(r) >= {"value", "n", "n_failed", "per_concept"}
        assert sorted(r["per_concept"]) == sorted(concepts)
        assert r["n"] > 0 and r["n_failed"] == 0
        vals = [v for v in r["per_concept"].values() if v is not None]
        assert r["value"] == pytest.approx(sum(vals) / len(vals))
    assert 0.0 <= res["recognition"]["value"] <= 1.0 and -1.0 <= res["clip_i"]["value"] <= 1.0
    table = (first_run / "leaderboard.md").read_text()
    assert "RANDOM TINY MODELS" in table and "recognition" in table and "clip_i" in table
    rows = [json.loads(l) for l in (first_run / "samples" / "clip_i.jsonl").read_text().splitlines()]
    assert rows and all(r["tiny_model"] and (first_run / r["image"]).exists() for r in rows)
    rec = [json.loads(l) for l in (first_run / "samples" / "recognition.jsonl").read_text().splitlines()]
    assert all("answer" in r and "prompt" in r and r["score"] in (0.0, 1.0) for r in rec)
    assert len(list((first_run / "concepts").glob("*/concept_tokens.safetensors"))) == len(concepts)


def test_unreadable_image_is_one_line_exit_2_and_nothing_written_is_lost(first_run, tmp_path, cache):
    data = tmp_path / "data"
    shutil.copytree(UnifyBenchMini().root, data)
    concepts = json.loads((data / "concepts_list.json").read_text())
    victim = sorted((data / "concept" / "train" / concepts[1]).glob("*.jpg"))[0]
    victim.write_bytes(b"this is not a jpeg")
    out = tmp_path / "run"
    shutil.copytree(first_run, out)                    # an earlier run's outputs in the same folder
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc = unifybench("run", "--method", "yochameleon", "--preset", "tiny", "--benchmark", "unifybench",
                      "--data-root", str(data), "--output-dir", str(out), cache=cache)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and victim.name in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_malformed_info_json_is_one_line_exit_2(tmp_path, cache):
    data = tmp_path / "data"
    shutil.copytree(UnifyBenchMini().root, data)
    concepts = json.loads((data / "concepts_list.json").read_text())
    info = data / "concept" / "train" / concepts[0] / "info.json"
    info.write_text("{not json")
    proc = unifybench("run", "--method", "yochameleon", "--preset", "tiny", "--benchmark", "unifybench",
                      "--data-root", str(data), "--output-dir", str(tmp_path / "o"), cache=cache)
    assert proc.returncode == 2 and "info.json" in proc.stderr and "Traceback" not in proc.stderr


def test_tiny_run_matches_the_golden_file(first_run, capsys):
    """CI regression: the tiny preset against leaderboards/golden/tiny.json (tolerance 1e-6; 1e-4 for the
    image-embedding metrics clip_i, clip_t and dino, whose fp32 convolutions and matmuls differ by ~1e-5 between
    CPUs (AVX2 vs AVX-512 kernels) on the same images; the same machine reproduces them exactly)."""
    from unifybench.cli import main
    golden = Path(__file__).resolve().parents[1] / "leaderboards" / "golden" / "tiny.json"
    code = main(["regress", "--golden", str(golden), str(first_run)])
    report = capsys.readouterr()
    if code != 0:
        env = json.loads((first_run / "results.json").read_text())["environment"]["libraries"]
        pytest.fail(f"tiny run moved against {golden.name} (torch {env['torch']}, transformers "
                    f"{env['transformers']}):\n{report.out}{report.err}")
