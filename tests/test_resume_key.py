"""Issue 15 item 3: resume says what it reused and from where; its key follows weight *content* (a moved
weights folder reuses every concept) and the code (an edited method retrains); a dirty checkout warns."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import unifybench
from unifybench import environment as env

# A user's own method module (outside the package): it loads a weights folder through the one resolver,
# counts its fits, answers "Yes".
METHOD_SOURCE = '''
from pathlib import Path

from unifybench import needs
from unifybench.data.schema import REC, Prediction
from unifybench.methods.base import Method
from unifybench.models.weights import resolve

FITS = []


class Weighted(Method):
    name = "weighted"
    tasks = frozenset({REC})

    def needs(self, concepts):
        return [needs.weights("clip", None, self.ctx, "method weighted")]

    def setup(self):
        self.folder = Path(resolve("clip", None, self.ctx))

    def model_files(self):
        return {f"clip/{p.name}": p for p in sorted(self.folder.glob("*.safetensors"))}

    def fit(self, concept, benchmark, out_dir):
        FITS.append(concept.name)
        return None

    def predict(self, concept, items, out_dir):
        return [Prediction(i.id, i.concept, i.task, i.prompt, text="Yes") for i in items]
'''


def load_method(path: Path, source: str = METHOD_SOURCE):
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"user_method_{abs(hash(source))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def weights_folder(folder: Path, value: float = 1.0) -> Path:
    import torch
    from safetensors.torch import save_file
    folder.mkdir(parents=True)
    save_file({"w": torch.full((4, 4), value)}, str(folder / "model.safetensors"))
    return folder


def run(module, weights: Path, out: Path, cache: Path):
    return unifybench.run(module.Weighted, evaluators="recognition", model={"clip": str(weights)}, output_dir=out,
                          cache_dir=cache, no_progress=True)


def resume_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "resume: " in line]
    assert len(lines) == 1, err
    return lines[0]


def test_moved_weights_reuse_every_concept_and_changed_weights_retrain(tmp_path, capsys):
    module = load_method(tmp_path / "my_method.py")
    out, cache = tmp_path / "run", tmp_path / "cache"
    first = weights_folder(tmp_path / "cache-a" / "weights")
    doc = run(module, first, out, cache).doc
    assert len(module.FITS) == 4 and doc["resume"]["reused"] == 0
    assert "resume: reused 0 of 4 concepts" in resume_line(capsys.readouterr().err)

    moved = tmp_path / "elsewhere" / "weights"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    doc = run(module, moved, out, cache).doc
    line = resume_line(capsys.readouterr().err)
    assert len(module.FITS) == 4                      # nothing retrained
    assert line.startswith(f"unifybench: resume: reused 4 of 4 concepts from {out / 'concepts'} (key ")
    assert doc["resume"]["reused"] == 4 and doc["resume"]["concepts"] == 4
    assert doc["resume"]["from"] == str(out / "concepts") and line.endswith(f"(key {doc['resume']['key'][:12]})")
    assert doc["models"]["clip/model.safetensors"]["path"] == str(moved / "model.safetensors")   # recorded

    shutil.rmtree(moved)                              # other content at the same path: everything retrains
    weights_folder(moved, value=2.0)
    doc = run(module, moved, out, cache).doc
    line = resume_line(capsys.readouterr().err)
    assert len(module.FITS) == 8 and doc["resume"]["reused"] == 0
    assert "4 finished under another key (weights changed) are redone" in line


def test_editing_the_method_source_changes_the_key_and_retrains(tmp_path, capsys):
    weights = weights_folder(tmp_path / "weights")
    out, cache = tmp_path / "run", tmp_path / "cache"
    module = load_method(tmp_path / "my_method.py")
    key = run(module, weights, out, cache).doc["resume"]["key"]
    capsys.readouterr()
    edited = load_method(tmp_path / "my_method.py", METHOD_SOURCE + "\n# answers are the same, the code is not\n")
    doc = run(edited, weights, out, cache).doc
    assert doc["resume"]["key"] != key and doc["resume"]["reused"] == 0 and len(edited.FITS) == 4
    assert "(code changed)" in resume_line(capsys.readouterr().err)


def test_the_package_fingerprint_follows_its_source_files(tmp_path):
    import unifybench.methods.base as base
    copy = tmp_path / "methods"
    shutil.copytree(Path(base.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    before = env.source_fingerprint([copy])
    assert env.source_fingerprint([copy]) == before
    target = copy / "yochameleon.py"
    target.write_text(target.read_text() + "\nEDITED = True\n")
    assert env.source_fingerprint([copy]) != before
    assert set(env.source_roots()) >= {Path(unifybench.__file__).parent.resolve()}


def test_a_changed_package_fingerprint_retrains(tmp_path, monkeypatch):
    weights = weights_folder(tmp_path / "weights")
    out, cache = tmp_path / "run", tmp_path / "cache"
    module = load_method(tmp_path / "my_method.py")
    real = env.source_fingerprint
    monkeypatch.setattr(env, "source_fingerprint", lambda roots=None, extra=(): real(roots, extra))
    assert run(module, weights, out, cache).doc["resume"]["reused"] == 0
    assert run(module, weights, out, cache).doc["resume"]["reused"] == 4
    monkeypatch.setattr(env, "source_fingerprint", lambda roots=None, extra=(): "edited" + real(roots, extra))
    doc = run(module, weights, out, cache).doc
    assert doc["resume"]["reused"] == 0 and doc["source_fingerprint"].startswith("edited")


def test_a_dirty_checkout_warns_once_and_is_recorded(tmp_path, capsys, monkeypatch):
    module = load_method(tmp_path / "my_method.py")
    weights = weights_folder(tmp_path / "weights")
    monkeypatch.setattr(env, "source_dirty", lambda roots=None: True)
    doc = run(module, weights, tmp_path / "run", tmp_path / "cache").doc
    warnings = [line for line in capsys.readouterr().err.splitlines() if "uncommitted changes" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and doc["dirty"] is True
    monkeypatch.setattr(env, "source_dirty", lambda roots=None: False)
    doc = run(module, weights, tmp_path / "run2", tmp_path / "cache").doc
    assert doc["dirty"] is False and "uncommitted" not in capsys.readouterr().err


def test_source_dirty_reads_git_status(tmp_path):
    repo = tmp_path / "repo"
    pkg = repo / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("x = 1\n")
    assert env.source_dirty([pkg]) is None            # not a git checkout
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    assert env.source_dirty([pkg]) is False
    (pkg / "m.py").write_text("x = 2\n")
    assert env.source_dirty([pkg]) is True
    subprocess.run(git + ["checkout", "-q", "--", "."], check=True)
    (pkg / "new.py").write_text("y = 1\n")            # a new module is an uncommitted change too
    assert env.source_dirty([pkg]) is True


def test_check_says_what_resume_would_reuse(tmp_path, capsys):
    module = load_method(tmp_path / "my_method.py")
    weights = weights_folder(tmp_path / "weights")
    out = tmp_path / "run"
    run(module, weights, out, tmp_path / "cache")
    plan = unifybench.check(module.Weighted, evaluators="recognition", model={"clip": str(weights)}, output_dir=out)
    assert plan.ready
    assert plan.resume_text().startswith(f"4 of 4 concepts finished in {out / 'concepts'}; 4 would be reused")
    plan = unifybench.check(module.Weighted, evaluators="recognition", model={"clip": str(weights)}, output_dir=out,
                            seed=1)
    assert "4 would be redone (seed changed)" in plan.resume_text()
    assert json.loads((out / "concepts" / "dog" / "unit.json").read_text())["parts"]["seed"] == 0
