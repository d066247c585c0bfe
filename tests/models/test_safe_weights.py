"""Issue 15.5: no loader unpickles anything. In every kind of weights folder a pickle is planted whose
unpickling would create a marker file (the test first proves it does); every loader, through its real path
(the CLI for the backbones, the loader function for the encoders), refuses it before reading it: exit 2 /
one line naming the file with the conversion command, no marker, and `torch.load` / `pickle.load` never
called. A safetensors file with a corrupt header (garbage first bytes, truncated) is one line naming it."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from unifybench.cli import main
from unifybench.errors import UserError


class _Bomb:
    """Unpickling it opens (creates) `marker`: what a hostile checkpoint could do with any callable."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(file: Path, marker: Path) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix == ".pkl":
        file.write_bytes(pickle.dumps({"weight": _Bomb(marker)}))
    else:
        torch.save({"weight": _Bomb(marker)}, str(file))     # torch's own zip format, data.pkl inside
    return file


def test_the_planted_pickle_does_create_the_marker(tmp_path):
    # The guard below is only worth something if unpickling the plant really runs code.
    marker = tmp_path / "marker"
    f = _plant(tmp_path / "w.pkl", marker)
    pickle.loads(f.read_bytes())
    assert marker.exists()
    marker.unlink()
    f = _plant(tmp_path / "w.bin", marker)
    torch.load(str(f), weights_only=False)
    assert marker.exists()


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every unpickling entry point a library would use fails the test loudly (not as a UserError)."""
    calls = []

    def forbidden(name):
        def call(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} called on {a[:1]}")
        return call
    for mod, name in ((torch, "load"), (torch.jit, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(mod, name, forbidden(f"{mod.__name__}.{name}"))
    return calls


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _config(folder: Path, name: str, doc: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(doc))
    return folder


def _showo_folder(cache: Path, tmp: Path, part: str) -> Path:
    """A copy of the tiny Show-o checkpoint's `part` folder without its safetensors file."""
    from unifybench.models.showo.tiny import tiny_showo_path
    src = tiny_showo_path(cache) / part
    dst = tmp / part
    shutil.copytree(src, dst)
    for p in dst.glob("*.safetensors"):
        p.unlink()
    return dst


# kind -> (build the folder (tmp, cache) -> (folder, the weight file the loader would read, run it))
def _hf(model_type: str):
    return lambda tmp, cache: _config(tmp / "ckpt", "config.json", {"model_type": model_type})


def _cli(method: str, role: str, extra=()):
    def run(folder: Path, cache: Path, out: Path) -> int:
        return main(["run", "--method", method, "--preset", "tiny", "--model", f"{role}={folder}", *extra,
                     "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress"])
    return run


def _loader(load):
    def run(folder: Path, cache: Path, out: Path) -> int:
        try:
            load(folder, cache)
        except UserError as e:
            print(e, file=__import__("sys").stderr)
            return e.exit_code
        return 0
    return run


def _clip(folder, cache):
    from unifybench.models.encoders.clip import load_clip
    load_clip(folder)


def _dino(folder, cache):
    from unifybench.models.encoders.dino import load_dino
    load_dino(folder)


def _face(folder, cache):
    from unifybench.models.encoders.face import load_face_app
    load_face_app(folder)


def _magvit(folder, cache):
    from unifybench.models.showo.magvit2 import MAGVITv2
    MAGVITv2.load(folder)


def _vqgan(folder, cache):
    from transformers import ChameleonVQVAEConfig

    from unifybench.models.chameleon.vqgan import VQGANDecoder
    VQGANDecoder.from_checkpoint(folder, ChameleonVQVAEConfig())


# kind -> (folder builder, pickle file name in it, safetensors name the loader reads, runner)
KINDS = {
    "chameleon": (_hf("chameleon"), "pytorch_model.bin", "model.safetensors", _cli("yochameleon", "chameleon")),
    "llava": (_hf("llava"), "pytorch_model.bin", "model.safetensors", _cli("llava-tp", "llava")),
    "llava-next": (_hf("llava_next"), "pytorch_model-00001-of-00002.bin", "model.safetensors",
                   _cli("mc-llava", "llava-next")),
    "qwen": (_hf("qwen2_5_vl"), "pytorch_model.bin", "model.safetensors", _cli("qwen25vl-tp", "qwen")),
    "showo": (lambda tmp, cache: _showo_folder(cache, tmp, "show-o-512x512"), "pytorch_model.bin",
              "pytorch_model.safetensors", _cli("showo-tp", "showo")),
    "magvit": (lambda tmp, cache: _showo_folder(cache, tmp, "magvitv2"), "pytorch_model.pth",
               "pytorch_model.safetensors", _loader(_magvit)),
    "vqgan": (lambda tmp, cache: (tmp / "vq").mkdir() or tmp / "vq", "vqgan.ckpt", "model.safetensors",
              _loader(_vqgan)),
    "sd": (lambda tmp, cache: _config(tmp / "sd", "model_index.json", {"_class_name": "StableDiffusionPipeline"}),
           "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.safetensors",
           _cli("dreambooth-sd", "sd")),
    "dino": (_hf("vit"), "pytorch_model.bin", "model.safetensors", _loader(_dino)),
    "hf-clip": (_hf("clip"), "pytorch_model.bin", "model.safetensors", _loader(_clip)),
    "open-clip-folder": (lambda tmp, cache: _config(tmp / "oc", "open_clip_config.json", {"model_cfg": {}}),
                         "open_clip_pytorch_model.bin", "open_clip_model.safetensors", _loader(_clip)),
    "face": (lambda tmp, cache: (tmp / "pack").mkdir() or tmp / "pack", "glintr100.pth", None, _loader(_face)),
}


def _one_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = [line for line in captured.err.splitlines() if line.strip() and "tiny preset:" not in line]
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("kind", list(KINDS))
def test_pickle_weights_are_refused_before_reading(kind, tmp_path, cache, capsys, no_unpickling):
    build, pickle_name, _, run = KINDS[kind]
    folder = build(tmp_path, cache)
    marker = tmp_path / "marker"
    bomb = _plant(folder / pickle_name, marker)
    capsys.readouterr()
    rc = run(folder, cache, tmp_path / "out")
    line = _one_line(capsys)
    assert rc == 2, line
    assert str(bomb) in line and "pickle" in line and "never unpickles" in line, line
    if kind != "face":   # the command writes the safetensors file next to the checkpoint, by absolute path
        assert f"'{bomb.absolute()}'" in line and f"'{bomb.parent.absolute()}/" in line, line
    assert not marker.exists() and no_unpickling == []


def test_open_clip_weights_file_and_torchscript_are_refused(tmp_path, capsys, no_unpickling):
    from unifybench.models.encoders.clip import load_clip
    marker = tmp_path / "marker"
    bomb = _plant(tmp_path / "openai-b32.pt", marker)
    for spec in (f"ViT-B-32-quickgelu:{bomb}", str(bomb)):
        with pytest.raises(UserError, match="never unpickles") as e:
            load_clip(spec)
        assert str(bomb) in str(e.value)
    assert "torch.jit.load" in str(e.value) or "torch.load" in str(e.value)
    assert not marker.exists() and no_unpickling == []


def _garbage(path: Path) -> None:
    path.write_bytes(b"\xff" * 8 + b"not a header at all")


def _truncated(path: Path) -> None:
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(64, 64)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _bad_json(path: Path) -> None:
    header = b"{not json}"
    path.write_bytes(len(header).to_bytes(8, "little") + header)


CORRUPT = {"garbage": _garbage, "truncated": _truncated, "header-not-json": _bad_json}
SAFETENSORS_KINDS = [k for k in KINDS if KINDS[k][2]]
# Garbage first bytes in every loader; the other corruptions (one rule) in four of them, to keep it fast.
CORRUPT_CASES = [(k, "garbage") for k in SAFETENSORS_KINDS] + [
    (k, c) for k in ("chameleon", "sd", "magvit", "open-clip-folder") for c in ("truncated", "header-not-json")]


@pytest.mark.parametrize("kind,corruption", CORRUPT_CASES, ids=[f"{k}-{c}" for k, c in CORRUPT_CASES])
def test_corrupt_safetensors_header_is_one_line(kind, corruption, tmp_path, cache, capsys):
    build, _, name, run = KINDS[kind]
    folder = build(tmp_path, cache)
    file = folder / name
    file.parent.mkdir(parents=True, exist_ok=True)
    CORRUPT[corruption](file)
    capsys.readouterr()
    rc = run(folder, cache, tmp_path / "out")
    line = _one_line(capsys)
    assert rc == 2 and str(file) in line and "safetensors" in line, line
