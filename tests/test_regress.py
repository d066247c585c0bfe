"""`unifybench regress`: a 1e-4 change fails, an unchanged run passes, tolerances live in the golden file."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from unifybench.cli import main as cli_main

DOC = {
    "schema_version": 1, "unifybench_version": "0.1.0", "git_hash": "abc", "date": "2026-01-01T00:00:00+00:00",
    "tiny": True, "notice": "RANDOM TINY MODELS",
    "config": {"method": {"name": "yochameleon", "preset": "tiny", "config": {}}, "benchmark": "unifybench-mini",
               "seed": 0, "concepts": ["dog", "cat", "backpack"]},
    "results": {"unifybench-mini": {
        "recognition": {"value": 0.5833333333333334, "n": 24, "n_failed": 0, "n_missing": 0, "preset": "default",
                        "per_concept": {"dog": 0.75, "cat": 0.5, "backpack": 0.5},
                        "positive_recall": 0.611, "ci95": {"low": 0.5, "high": 0.75, "iterations": 10000}},
        "clip_i": {"value": 0.123456789, "n": 12, "n_failed": 1, "n_missing": 0, "preset": "default",
                   "per_concept": {"dog": 0.1, "cat": 0.2, "backpack": None}},
    }},
}


def write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture()
def golden(tmp_path):
    res = write(tmp_path / "golden_run" / "results.json", DOC)
    g = tmp_path / "golden" / "tiny.json"
    assert cli_main(["regress", "--write-golden", str(g), str(res)]) == 0
    return g


def fresh(tmp_path, change=None) -> Path:
    doc = copy.deepcopy(DOC)
    if change:
        change(doc["results"]["unifybench-mini"])
    return write(tmp_path / "fresh" / "results.json", doc)


def test_golden_file_layout(golden):
    g = json.loads(golden.read_text())
    assert g["format"] == "unifybench-golden/1" and g["default_tolerance"] == 1e-6
    m = g["metrics"]["unifybench-mini/recognition"]
    assert m["value"] == DOC["results"]["unifybench-mini"]["recognition"]["value"]
    assert m["per_concept"]["dog"] == 0.75 and m["n"] == 24 and m["n_failed"] == 0
    assert m["extras"]["positive_recall"] == 0.611 and m["extras"]["ci95.low"] == 0.5
    assert g["created_from"]["method"] == "yochameleon" and g["created_from"]["tiny"] is True


def test_unchanged_run_passes(tmp_path, golden, capsys):
    assert cli_main(["regress", "--golden", str(golden), str(fresh(tmp_path))]) == 0
    assert "regress: OK" in capsys.readouterr().out
    # the run folder works as well as the file
    assert cli_main(["regress", "--golden", str(golden), str(tmp_path / "fresh")]) == 0


@pytest.mark.parametrize("change, quantity", [
    (lambda r: r["recognition"].__setitem__("value", r["recognition"]["value"] + 1e-4), "value"),
    (lambda r: r["clip_i"]["per_concept"].__setitem__("cat", 0.2 - 1e-4), "per_concept[cat]"),
    (lambda r: r["recognition"].__setitem__("n_failed", 1), "n_failed"),
    (lambda r: r["recognition"].__setitem__("n", 23), "n"),
    (lambda r: r["clip_i"]["per_concept"].__setitem__("backpack", 0.3), "per_concept[backpack]"),
    (lambda r: r["recognition"]["ci95"].__setitem__("high", 0.7501), "ci95.high"),
    (lambda r: r["recognition"].__setitem__("preset", "unictokens"), "preset"),
    (lambda r: r["clip_i"]["per_concept"].pop("cat"), "per_concept[cat]"),
    (lambda r: r.pop("clip_i"), "(metric)"),
])
def test_a_moved_metric_fails(tmp_path, golden, capsys, change, quantity):
    assert cli_main(["regress", "--golden", str(golden), str(fresh(tmp_path, change))]) == 1
    out = capsys.readouterr().out
    assert "MOVED" in out and quantity in out and "regress: FAILED" in out


def test_changes_within_tolerance_pass(tmp_path, golden):
    def tiny_change(r):
        r["recognition"]["value"] += 5e-7
        r["clip_i"]["per_concept"]["dog"] -= 5e-7
    assert cli_main(["regress", "--golden", str(golden), str(fresh(tmp_path, tiny_change))]) == 0


def test_per_metric_tolerance_kept_in_the_golden_file(tmp_path, golden):
    g = json.loads(golden.read_text())
    g["metrics"]["unifybench-mini/recognition"]["tolerance"] = 1e-3
    golden.write_text(json.dumps(g))
    bump = lambda r: r["recognition"].__setitem__("value", r["recognition"]["value"] + 1e-4)  # noqa: E731
    assert cli_main(["regress", "--golden", str(golden), str(fresh(tmp_path, bump))]) == 0
    bump_clip = lambda r: r["clip_i"].__setitem__("value", r["clip_i"]["value"] + 1e-4)  # noqa: E731
    assert cli_main(["regress", "--golden", str(golden), str(fresh(tmp_path, bump_clip))]) == 1
    # rewriting the golden file keeps the hand-set tolerance
    assert cli_main(["regress", "--write-golden", str(golden), str(fresh(tmp_path))]) == 0
    assert json.loads(golden.read_text())["metrics"]["unifybench-mini/recognition"]["tolerance"] == 1e-3


def test_new_metrics_only_fail_with_strict(tmp_path, golden, capsys):
    add = lambda r: r.__setitem__("dino", {"value": 0.3, "n": 3, "n_failed": 0, "per_concept": {"dog": 0.3}})  # noqa: E731
    path = fresh(tmp_path, add)
    assert cli_main(["regress", "--golden", str(golden), str(path)]) == 0
    assert "new metric not in the golden file: unifybench-mini/dino" in capsys.readouterr().out
    assert cli_main(["regress", "--golden", str(golden), str(path), "--strict"]) == 1


def test_user_errors_exit_2(tmp_path, golden, capsys):
    assert cli_main(["regress", "--golden", str(tmp_path / "nope.json"), str(fresh(tmp_path))]) == 2
    assert cli_main(["regress", "--golden", str(golden), str(tmp_path / "missing")]) == 2
    bad = write(tmp_path / "bad.json", {"format": "something else"})
    assert cli_main(["regress", "--golden", str(bad), str(fresh(tmp_path))]) == 2
    notjson = tmp_path / "notjson.json"
    notjson.write_text("{")
    assert cli_main(["regress", "--golden", str(notjson), str(fresh(tmp_path))]) == 2
    assert cli_main(["regress", "--golden", str(golden), str(fresh(tmp_path)), "--tolerance", "1"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "unifybench: error:" in err
    with pytest.raises(SystemExit):   # argparse: --golden or --write-golden is required
        cli_main(["regress", str(fresh(tmp_path))])
