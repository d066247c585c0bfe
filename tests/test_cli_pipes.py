"""`unifybench ... | head`: every command that prints a lot ends quietly (exit 0, no traceback) when its
reader closes the pipe, through real pipes into real subprocesses; a BrokenPipeError that is not
stdout's still surfaces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unifybench import cli


def _results(folder: Path, value: float) -> Path:
    per = {"bo": value, "mam": 1 - value}
    doc = {"schema_version": 1, "tiny": False,
           "config": {"method": {"name": "unictokens", "preset": "paper", "config": {}}, "benchmark": "unifybench",
                      "seed": 0, "concepts": ["bo", "mam"]},
           "results": {"unifybench": {"recognition": {"value": 0.5, "n": 10, "n_failed": 0, "per_concept": per,
                                                      "preset": "unictokens"}}}}
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A planned (not run) suite: enough for --status."""
    from unifybench.reproduce import manifest
    from unifybench.reproduce.plan import build_plan
    plan = build_plan("unictokens_table1", tiny=True)
    d = tmp_path_factory.mktemp("suite")
    manifest.write_manifest(d, {"format": manifest.FORMAT, "spec": plan.spec.name, "tiny": True,
                                "options": {}, "runs": [r.to_json() for r in plan.runs],
                                "reported_only": plan.reported_only, "skipped": plan.skipped})
    return d


def _commands(suite: Path, tmp: Path) -> dict[str, list[str]]:
    a, b = _results(tmp / "a", 0.4), _results(tmp / "b", 0.6)
    return {
        "status": ["reproduce", "--status", str(suite)],
        "dry-run": ["reproduce", "unictokens_table1", "--preset", "tiny", "--dry-run", "--suite-dir", str(tmp / "s")],
        "items": ["items"],
        "ls": ["ls", "settings", "yochameleon"],
        "table": ["table", str(a), "--spec", "unictokens_table1"],
        "table-list": ["table", "--list"],
        "compare": ["compare", str(a), str(b), "--iterations", "200"],
    }


def _closed_reader(argv: list[str], unbuffered: bool) -> tuple[int, str]:
    """Run with stdout into a pipe whose reader is gone before the first write."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "unifybench.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(), err


def test_every_printing_command_ends_quietly_when_the_reader_is_gone(suite, tmp_path):
    for name, argv in _commands(suite, tmp_path).items():
        # Buffered stdout fails at the last flush; unbuffered at the first print: both paths, for two.
        for unbuffered in ((False, True) if name in ("status", "items") else (False,)):
            rc, err = _closed_reader(argv, unbuffered)
            assert rc == 0 and "Traceback" not in err and "BrokenPipe" not in err, (name, unbuffered, rc, err)


def test_status_into_head_prints_its_first_line_only(suite):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run(["bash", "-c", f'"{sys.executable}" -m unifybench.cli reproduce --status "{suite}" | head -1; '
                          'echo "rc=${PIPESTATUS[0]}" >&2'], capture_output=True, text=True, env=env)
    assert out.stdout == f"{suite}: unictokens_table1 (tiny)\n"
    assert out.stderr.strip() == "rc=0", out.stderr


def test_a_broken_pipe_that_is_not_stdout_is_not_swallowed(monkeypatch, capsys):
    def judge_socket_breaks(args):
        raise BrokenPipeError(32, "Broken pipe")   # e.g. the judge server went away mid-request
    monkeypatch.setitem(cli.COMMANDS, "validate", judge_socket_breaks)
    monkeypatch.setattr(cli, "_plugged_parsers", lambda sub: None)
    with pytest.raises(BrokenPipeError):
        cli.main(["validate"])
