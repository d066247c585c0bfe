"""Issue 15.7/15.8: a table of malformed inputs (predictions, results files, flags). Each one exits 2 with
one line on stderr that names the file (and field) where there is one, no traceback, and leaves the
output folder byte-identical. In-process CLI calls: fast."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from unifybench.cli import main
from unifybench.data.unifybench import UnifyBenchMini

_BENCH = UnifyBenchMini()
ITEMS = [i for c in _BENCH.concepts() for i in _BENCH.items(c)]
REC = next(i for i in ITEMS if i.task == "rec")
GOOD = json.dumps({"item_id": REC.id, "answer": "Yes."})

# (name, predictions file bytes, what the message must mention)
PREDICTIONS = [
    ("list line", b"[1, 2]\n", "JSON list"),
    ("null line", b"null\n", "JSON NoneType"),
    ("number line", b"3\n", "JSON int"),
    ("string line", b'"x"\n', "JSON str"),
    ("bool line", b"true\n", "JSON bool"),
    ("not utf-8", b'{"item_id": "\xff\xfe"}\n', "not UTF-8"),
    ("latin-1 answer", GOOD.encode()[:-3] + b'\xe9."}\n', "not UTF-8"),
    ("not json", b"{item_id: 1}\n", "not JSON"),
    ("torn line", GOOD.encode()[:20] + b"\n", "not JSON"),
    ("second line bad", (GOOD + "\n{\n").encode(), "line 2"),
    ("no item id", b'{"answer": "yes"}\n', "item_id"),
    ("int item id", b'{"item_id": 5, "answer": "yes"}\n', "item_id"),
    ("null item id", b'{"item_id": null, "answer": "yes"}\n', "item_id"),
    ("list item id", b'{"item_id": ["a"], "answer": "yes"}\n', "item_id"),
    ("unknown item", b'{"item_id": "unifybench-mini/nobody/rec/0", "answer": "yes"}\n', "item_id"),
    ("int answer", json.dumps({"item_id": REC.id, "answer": 1}).encode() + b"\n", "answer"),
    ("null answer", json.dumps({"item_id": REC.id, "answer": None}).encode() + b"\n", "answer"),
    ("list answer", json.dumps({"item_id": REC.id, "answer": ["yes"]}).encode() + b"\n", "answer"),
    ("dict answer", json.dumps({"item_id": REC.id, "answer": {"a": 1}}).encode() + b"\n", "answer"),
    ("int text", json.dumps({"item_id": REC.id, "text": 0}).encode() + b"\n", "answer"),
    ("neither field", json.dumps({"item_id": REC.id}).encode() + b"\n", "answer"),
    ("int path", json.dumps({"item_id": REC.id, "path": 3}).encode() + b"\n", "path"),
    ("images not list", json.dumps({"item_id": REC.id, "images": "a.png"}).encode() + b"\n", "path"),
    ("images with int", json.dumps({"item_id": REC.id, "images": ["a.png", 1]}).encode() + b"\n", "path"),
    ("duplicate id", (GOOD + "\n" + json.dumps({"item_id": REC.id, "answer": "No."}) + "\n").encode(), "second answer"),
    ("duplicate same answer", (GOOD + "\n" + GOOD + "\n").encode(), "second answer"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _call(argv: list[str], out: Path, capsys) -> tuple[int, str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text('{"kept": true}\n')         # an earlier run's file must survive
    before = _snapshot(out)
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    assert _snapshot(out) == before, "the output folder changed"
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, (rc, captured.err)
    return rc, lines[0]


@pytest.mark.parametrize("name,data,mention", PREDICTIONS, ids=[p[0] for p in PREDICTIONS])
def test_malformed_predictions(tmp_path, capsys, name, data, mention):
    path = tmp_path / "preds.jsonl"
    path.write_bytes(data)
    out = tmp_path / "out"
    _, line = _call(["eval", "--predictions", str(path), "--output-dir", str(out), "--no-progress"], out, capsys)
    assert str(path) in line and mention in line, line


def test_duplicate_across_two_files(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(GOOD + "\n")
    b.write_text(json.dumps({"item_id": REC.id, "answer": "No."}) + "\n")
    out = tmp_path / "out"
    _, line = _call(["eval", "--predictions", str(a), "--predictions", str(b), "--output-dir", str(out)], out, capsys)
    assert str(b) in line and "item_id" in line


def _results(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "given" / "results.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


_OK_METRIC = {"value": 0.5, "n": 2, "n_failed": 0, "per_concept": {"bo": 0.5}}
RESULTS = [
    ("not json", "{", "not JSON"),
    ("not utf-8", b'{"results": "\xff"}', "cannot read"),
    ("a list", "[]", "results"),
    ("no results", '{"config": {}}', "results"),
    ("results a list", '{"results": []}', "results"),
    ("benchmark a list", '{"results": {"b": []}}', "results"),
    ("metric a number", '{"results": {"b": {"m": 1}}}', "value"),
    ("metric without value", '{"results": {"b": {"m": {"n": 1}}}}', "value"),
    ("value a string", json.dumps({"results": {"b": {"m": {**_OK_METRIC, "value": "high"}}}}), "value"),
    ("value a list", json.dumps({"results": {"b": {"m": {**_OK_METRIC, "value": [1]}}}}), "value"),
    ("value a bool", json.dumps({"results": {"b": {"m": {**_OK_METRIC, "value": True}}}}), "value"),
    ("n a string", json.dumps({"results": {"b": {"m": {**_OK_METRIC, "n": "2"}}}}), "n"),
    ("per_concept a list", json.dumps({"results": {"b": {"m": {**_OK_METRIC, "per_concept": [0.5]}}}}), "per_concept"),
    ("per_concept text", json.dumps({"results": {"b": {"m": {**_OK_METRIC, "per_concept": {"bo": "x"}}}}}), "per_concept"),
    ("config a list", json.dumps({"config": [], "results": {"b": {"m": _OK_METRIC}}}), "config"),
]
COMMANDS = [
    ("regress", lambda p, g: ["regress", str(p), "--golden", str(g)]),
    ("report", lambda p, g: ["report", str(p), "--out", str(p.parent.parent / "out" / "r.html")]),
    ("compare", lambda p, g: ["compare", str(p), str(p)]),
]


# regress on every shape; the other commands on four of them (they share load_results): a fast table.
RESULT_CASES = [("regress", *r) for r in RESULTS] + [
    (c, *r) for c in ("report", "compare") for r in RESULTS
    if r[0] in ("not json", "no results", "value a string", "per_concept text")]


@pytest.mark.parametrize("command,name,text,mention", RESULT_CASES, ids=[f"{c[0]}-{c[1]}" for c in RESULT_CASES])
def test_malformed_results_files(tmp_path, capsys, command, name, text, mention):
    p = _results(tmp_path, text)
    g = tmp_path / "golden.json"
    g.write_text("{}")
    argv = dict(COMMANDS)[command](p, g)
    _, line = _call(argv, tmp_path / "out", capsys)
    assert str(p) in line and mention in line, line


FLAGS = [
    (["items", "--task", "nosuchtask"], "nosuchtask"),
    (["items", "--concepts", "nobody"], "nobody"),
    (["items", "--benchmark", "nosuchbench"], "nosuchbench"),
    (["run", "--method", "nosuchmethod", "--preset", "tiny"], "nosuchmethod"),
    (["run", "--method", "yollava", "--preset", "tiny", "--set", "novalue"], "--set"),
    (["run", "--method", "yollava", "--preset", "tiny", "--model", "noequals"], "--model"),
    (["run", "--method", "yollava", "--preset", "tiny", "--eval-preset", "x"], "--eval-preset"),
    (["run", "--method", "yollava", "--preset", "tiny", "--evaluators", "nosucheval"], "nosucheval"),
    (["run", "--method", "yollava", "--preset", "tiny", "--data-root", "/no/such/folder"], "/no/such/folder"),
    (["eval", "--predictions", "/no/such/preds.jsonl"], "/no/such/preds.jsonl"),
]


@pytest.mark.parametrize("argv,mention", FLAGS, ids=[" ".join(f[0][:3]) for f in FLAGS])
def test_malformed_flags(tmp_path, capsys, argv, mention):
    out = tmp_path / "out"
    extra = ["--output-dir", str(out)] if argv[0] in ("run", "eval") else []
    _, line = _call(argv + extra, out, capsys)
    assert mention in line, line


def test_output_dir_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "out" / "results.json"
    _, line = _call(["run", "--method", "yollava", "--preset", "tiny", "--output-dir", str(f)], tmp_path / "out", capsys)
    assert str(f) in line and "--output-dir" in line
