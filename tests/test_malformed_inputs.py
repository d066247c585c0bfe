"""Issue 15.5/15.7/15.8: a table of malformed inputs (predictions, results files, flags, benchmark files, weights
folders, settings, devices, plugins). Each one exits 2 with
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
    # The tiny preset's notice ("the numbers mean nothing") is printed before a run starts; not an error line.
    lines = [line for line in captured.err.splitlines() if line.strip() and "tiny preset:" not in line]
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


# --------------------------------------------------------------------------------------- benchmark files
# A copy of the bundled mini data as a `--benchmark unifybench` root, broken one way per case. Each case:
# (name, breakage(root, outside folder), file the line names (relative to the root), field, words).
TI, DOG_VQA = "concept/train/train_images.json", "concept/test/dog/vqa.json"


def _edit_json(root: Path, rel: str, change) -> None:
    path = root / rel
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _train_entry(value):
    return lambda r, outside: _edit_json(r, TI, lambda d: d["dog"].__setitem__(0, value(outside)))


def _vqa_field(key, value):
    return lambda r, outside: _edit_json(r, DOG_VQA, lambda d: d[0].__setitem__(key, value(outside)))


def _symlink_out(rel: str):
    def breakage(r: Path, outside: Path) -> None:
        (r / rel).unlink()
        (r / rel).symlink_to(outside / "secret.jpg")
    return breakage


BENCH_FILES = [
    ("train entry into another concept", _train_entry(lambda o: "../cat/0.jpg"), TI, "dog[0]", "leaves"),
    ("train entry out of the root", _train_entry(lambda o: "../../../../secret.jpg"), TI, "dog[0]", "leaves"),
    ("train entry absolute", _train_entry(lambda o: str(o / "secret.jpg")), TI, "dog[0]", "absolute path"),
    ("train entry a number", _train_entry(lambda o: 3), TI, "dog[0]", "non-empty string"),
    ("train entry missing image", _train_entry(lambda o: "9.jpg"), TI, "dog[0]", "does not exist"),
    ("train list not a list", lambda r, o: _edit_json(r, TI, lambda d: d.update(dog="0.jpg")), TI, "dog",
     "must be a list"),
    ("train_images not json", lambda r, o: (r / TI).write_text("{", encoding="utf-8"), TI, None, "not valid JSON"),
    ("vqa image out of the root", _vqa_field("image", lambda o: "../../../../secret.jpg"), DOG_VQA, "[0].image",
     "leaves"),
    ("vqa image absolute", _vqa_field("image", lambda o: str(o / "secret.jpg")), DOG_VQA, "[0].image",
     "absolute path"),
    ("vqa image a number", _vqa_field("image", lambda o: 0), DOG_VQA, "[0].image", "non-empty string"),
    ("vqa image missing", _vqa_field("image", lambda o: "9.jpg"), DOG_VQA, "[0].image", "does not exist"),
    ("vqa question a list", _vqa_field("question", lambda o: ["q"]), DOG_VQA, "[0].question", "got a list"),
    ("vqa answer null", _vqa_field("answer", lambda o: None), DOG_VQA, "[0].answer", "got missing"),
    ("vqa an object", lambda r, o: (r / DOG_VQA).write_text("{}", encoding="utf-8"), DOG_VQA, None,
     "must be a JSON list"),
    ("info class a number", lambda r, o: _edit_json(r, "concept/train/dog/info.json", lambda d: d.update({"class": 1})),
     "concept/train/dog/info.json", "class", "non-empty string"),
    ("test image a symlink out", _symlink_out("concept/test/dog/0.jpg"), "concept/test/dog/0.jpg", None,
     "a symlink to"),
    ("random image a symlink out", _symlink_out("random_images/0.jpg"), "random_images/0.jpg", None, "a symlink to"),
]


@pytest.fixture
def data_root(tmp_path):
    from unifybench.data.unifybench import MINI_ROOT
    import shutil
    root = tmp_path / "data"
    shutil.copytree(MINI_ROOT, root)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(MINI_ROOT / "random_images" / "0.jpg", outside / "secret.jpg")   # a real image: only the rule stops it
    shutil.copy(MINI_ROOT / "random_images" / "0.jpg", tmp_path / "secret.jpg")
    return root, outside


@pytest.mark.parametrize("name,breakage,file,field,words", BENCH_FILES, ids=[c[0] for c in BENCH_FILES])
def test_malformed_benchmark_files(tmp_path, capsys, data_root, name, breakage, file, field, words):
    root, outside = data_root
    breakage(root, outside)
    out = tmp_path / "out"
    _, line = _call(["run", "--method", "random", "--benchmark", "unifybench", "--data-root", str(root),
                     "--output-dir", str(out), "--no-progress"], out, capsys)
    where = f"{root.resolve() / file}" + (f" [{field}]" if field else "") + ":"
    assert where in line and words in line, line


def test_random_images_symlink_out_is_refused_only_for_random_images(tmp_path, capsys, data_root):
    # The rule is about where a file resolves, not about symlinks: one inside the root is fine.
    root, _ = data_root
    (root / "random_images" / "0.jpg").unlink()
    (root / "random_images" / "0.jpg").symlink_to(root / "random_images" / "1.jpg")
    from unifybench.data.unifybench import UnifyBench
    bench = UnifyBench(root)
    assert root / "random_images" / "0.jpg" in bench.random_images()


# --------------------------------------------------------------------------------------- weights folders
def _pickle_only(folder: Path) -> None:
    import torch
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    torch.save({"w": torch.zeros(2)}, str(folder / "pytorch_model.bin"))


WEIGHTS = [
    ("pickle only", _pickle_only, "pytorch_model.bin", "never unpickles"),
    ("corrupt safetensors", lambda f: ((f / "config.json").write_text('{"model_type": "llava"}'),
                                       (f / "model.safetensors").write_bytes(b"\x00" * 4)), "model.safetensors",
     "not a safetensors file"),
    ("truncated safetensors header", lambda f: ((f / "config.json").write_text('{"model_type": "llava"}'),
                                                (f / "model.safetensors").write_bytes((1 << 20).to_bytes(8, "little")
                                                                                      + b"{}")),
     "model.safetensors", "truncated"),
    ("missing config.json", lambda f: (f / "model.safetensors").write_bytes(b""), "config.json", "cannot read"),
    ("config.json not json", lambda f: (f / "config.json").write_text("{"), "config.json", "cannot read"),
    ("wrong model_type", lambda f: (f / "config.json").write_text('{"model_type": "bert"}'), "config.json",
     "model_type"),
]


@pytest.mark.parametrize("name,build,file,words", WEIGHTS, ids=[w[0] for w in WEIGHTS])
def test_malformed_weights_folders(tmp_path, capsys, name, build, file, words):
    folder = tmp_path / "llava"
    folder.mkdir()
    build(folder)
    out = tmp_path / "out"
    _, line = _call(["run", "--method", "llava-tp", "--preset", "tiny", "--model", f"llava={folder}",
                     "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out), "--no-progress"], out, capsys)
    assert str(folder / file) in line and words in line, line


# ----------------------------------------------------------------------------------- settings and flags
YOCHAMELEON = ["run", "--method", "yochameleon", "--preset", "tiny"]
SETTINGS = [
    ("epochs=-1", "'epochs' of 'yochameleon' must be an integer > 0, got -1"),
    ("num_tokens=0", "'num_tokens' of 'yochameleon' must be an integer > 0, got 0"),
    ("lr=nan", "'lr' of 'yochameleon' must be a finite number > 0, got nan"),
    ("lr=inf", "'lr' of 'yochameleon' must be a finite number > 0, got inf"),
    ("lr=-0.001", "'lr' of 'yochameleon' must be a finite number > 0, got -0.001"),
    ("batch_size=-4", "'batch_size' of 'yochameleon' must be an integer > 0, got -4"),
    ("top_p=1.5", "'top_p' of 'yochameleon' must be a finite number > 0 and <= 1, got 1.5"),
    ("weight_decay=-1", "'weight_decay' of 'yochameleon' must be a finite number >= 0, got -1.0"),
    ("n_soft_positives=-1", "'n_soft_positives' of 'yochameleon' must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize("setting,words", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_settings_out_of_range(tmp_path, capsys, setting, words):
    out = tmp_path / "out"
    _, line = _call(YOCHAMELEON + ["--set", setting, "--output-dir", str(out)], out, capsys)
    assert words in line, line


def test_other_methods_declare_their_ranges_too(tmp_path, capsys):
    out = tmp_path / "out"
    for method, setting, words in (("unictokens", "cond_dropout=1.5", "'cond_dropout' of 'unictokens' must be a "
                                                                     "finite number >= 0 and <= 1"),
                                   ("dreambooth-sd", "adam_beta1=1", "< 1"),
                                   ("mc-llava", "max_concepts=0", "'max_concepts'"),
                                   ("llava-tp", "max_new_tokens=0", "'max_new_tokens'")):
        _, line = _call(["run", "--method", method, "--preset", "tiny", "--set", setting, "--output-dir", str(out)],
                        out, capsys)
        assert words in line, line


def _no_gpu(monkeypatch, count: int) -> None:
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


DEVICES = [("nonsense", 0, "--device 'nonsense' is not a device"), ("cuda", 0, "no CUDA GPU is visible"),
           ("cuda:3", 0, "no CUDA GPU is visible"), ("cuda:3", 2, "this machine has 2 CUDA devices"),
           ("cpu:1", 0, "is not a device"), ("gpu", 0, "is not a device")]


@pytest.mark.parametrize("device,gpus,words", DEVICES, ids=[f"{d}-{g}gpus" for d, g, _ in DEVICES])
@pytest.mark.parametrize("command", ["run", "eval"])
def test_bad_device(tmp_path, capsys, monkeypatch, command, device, gpus, words):
    _no_gpu(monkeypatch, gpus)
    out = tmp_path / "out"
    argv = YOCHAMELEON if command == "run" else ["eval", "--predictions", str(tmp_path / "p.jsonl")]
    (tmp_path / "p.jsonl").write_text(GOOD + "\n")
    _, line = _call(argv + ["--device", device, "--output-dir", str(out)], out, capsys)
    assert words in line and device in line, line


def test_unknown_model_role(tmp_path, capsys):
    out = tmp_path / "out"
    _, line = _call(YOCHAMELEON + ["--model", "chamelon=/x", "--output-dir", str(out)], out, capsys)
    assert "unknown weight role 'chamelon'" in line and "chameleon" in line and "clip" in line, line


@pytest.mark.parametrize("kind,name", [("methods", "yollava"), ("baselines", "yollava"), ("evaluators", "clip_i")])
def test_plugin_name_clashing_with_a_builtin(tmp_path, capsys, monkeypatch, kind, name):
    from unifybench import registry

    class EP:
        value = "someone_elses_pkg.mod:Thing"

    EP.name = name
    for k, reg in list(registry.REGISTRIES.items()):      # fresh registries: the real ones cache their plugins
        fresh = registry.Registry(k)
        for e in reg._entries.values():
            fresh.register(e.name, e.target, e.description)
        monkeypatch.setitem(registry.REGISTRIES, k, fresh)
        monkeypatch.setattr(registry, k.upper(), fresh)
    monkeypatch.setattr(registry, "entry_points", lambda group: [EP()] if group == f"unifybench.{kind}" else [])
    _, line = _call(["ls", kind], tmp_path / "out", capsys)
    builtin = registry.REGISTRIES["methods" if name == "yollava" else kind]._entries[name].target
    assert f"plugin {name!r} (someone_elses_pkg.mod:Thing" in line and builtin in line, line
