"""DINO against CLS cosines computed here with transformers and torchvision directly."""
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, aggregate
from unifybench.evaluators.dino import Dino
from unifybench.models.encoders.dino import get_dino, load_dino, tiny_dino_path
from unifybench.registry import EVALUATORS


def _picture(seed: int, size=(90, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(8 * (a * x + b * y) + 3 * f) for a, b, f in rng.uniform(-1, 1, (3, 3))], -1)
    return Image.fromarray((img * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def setup(tmp_path, cache):
    refs = []
    for k in range(3):
        refs.append(tmp_path / "refs" / f"{k}.png")
        refs[-1].parent.mkdir(exist_ok=True)
        _picture(10 + k).save(refs[-1])
    run = tmp_path / "run"
    (run / "gen").mkdir(parents=True)
    for k in range(3):
        _picture(20 + k, size=(64, 64)).save(run / "gen" / f"{k}.png")
    shutil.copy(refs[1], run / "gen" / "copy_of_ref1.png")
    (run / "gen" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    concept = Concept("bo", "pet", "dog", train_images=tuple(refs), test_images=(refs[1],))
    items = [Item(id="b/bo/gen/0", concept="bo", task="gen", prompt="a <sks>"),
             Item(id="b/bo/knowledge_gen/0", concept="bo", task="knowledge_gen", prompt="<sks> with a hat")]
    preds = {"b/bo/gen/0": Prediction("b/bo/gen/0", "bo", "gen", images=["gen/0.png", "gen/1.png", "gen/broken.png"]),
             "b/bo/knowledge_gen/0": Prediction("b/bo/knowledge_gen/0", "bo", "knowledge_gen",
                                                images=["gen/2.png", "gen/copy_of_ref1.png"])}
    ctx = EvalContext(run_dir=run, cache_dir=cache, tiny=True)
    gen = [run / "gen" / n for n in ("0.png", "1.png", "2.png", "copy_of_ref1.png")]
    return concept, items, preds, ctx, gen, refs


def _hand_features(folder: Path, paths) -> np.ndarray:
    """transformers ViTModel + torchvision: Resize(256, bicubic), CenterCrop(224), ImageNet norm, CLS token."""
    import torchvision.transforms as T
    from transformers import ViTModel
    model = ViTModel.from_pretrained(folder, add_pooling_layer=False).eval()
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with torch.no_grad():
        x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
        return model(pixel_values=x).last_hidden_state[:, 0].double().numpy()


def test_dino_matches_hand_cls_cosines(setup, cache):
    concept, items, preds, ctx, gen, refs = setup
    ev = Dino()
    scores = ev.score(concept, items, preds, ctx)
    ok = [s for s in scores if s.failed is None]
    assert [s.id for s in ok] == ["b/bo/gen/0#0", "b/bo/gen/0#1", "b/bo/knowledge_gen/0#0", "b/bo/knowledge_gen/0#1"]
    folder = tiny_dino_path(cache)
    g, r = _hand_features(folder, gen), _hand_features(folder, refs)
    cos = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    np.testing.assert_allclose([s.score for s in ok], cos.mean(axis=1), atol=1e-5)
    assert np.ptp(cos) > 0.2      # the tiny random ViT does tell pictures apart
    failed = [s for s in scores if s.failed is not None]
    assert [s.id for s in failed] == ["b/bo/gen/0#2"] and "broken.png" in failed[0].failed
    res = aggregate({"bo": scores}, ev)
    assert res["n"] == 4 and res["n_failed"] == 1
    # identical images score 1 (test references = [ref1], the generated copy of it)
    same = Dino(references="test").score(concept, items, preds, ctx)
    assert same[-1].id == "b/bo/knowledge_gen/0#1" and same[-1].score == pytest.approx(1.0, abs=1e-6)
    env = ev.environment()
    assert env["backbone"] == "hf-vit:dino-v1" and env["dtype"] == "float32" and env["device"] == "cpu"
    assert "no pooler" in env["feature"] and "resize 256" in env["preprocess"] and env["preset"] == "default"
    assert EVALUATORS.get("dino") is Dino


def test_tiny_dino_is_deterministic_real_format(tmp_path):
    a, b = tiny_dino_path(tmp_path / "a"), tiny_dino_path(tmp_path / "b")
    assert a == tmp_path / "a" / "tiny" / "dino-v1" and tiny_dino_path(tmp_path / "a") == a

    def digest(p):
        return hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()

    assert digest(a) == digest(b)
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".")]
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["model_type"] == "vit" and cfg["patch_size"] == 16 and cfg["image_size"] == 224
    m = load_dino(a)
    assert getattr(m.model, "pooler", None) is None and m.embed_dim == 32
    assert m.files == [a / "model.safetensors"] and m.id == "hf-vit:dino-v1"
    assert m.preprocess(_picture(1)).shape == (3, 224, 224)


def test_backbone_resolution_and_reference_cache(setup, tmp_path, monkeypatch):
    concept, items, preds, ctx, gen, refs = setup
    with pytest.raises(UserError, match="--model dino="):
        Dino().score(concept, items, preds, EvalContext(run_dir=ctx.run_dir, cache_dir=ctx.cache_dir))
    with pytest.raises(UserError, match="model_type"):
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "config.json").write_text('{"model_type": "clip"}')
        load_dino(bad)
    # the run's --model dino=PATH, and reference features cached on disk by content: a fresh process-level
    # model (same weights) does not embed the references again
    folder = tiny_dino_path(ctx.cache_dir)
    models_ctx = EvalContext(run_dir=ctx.run_dir, cache_dir=ctx.cache_dir, models={"dino": str(folder)})
    first = Dino().score(concept, items, preds, models_ctx)
    model = get_dino(str(folder))
    calls = []
    original = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda ims, batch_size=32: (calls.append(len(ims)),
                                                                            original(ims, batch_size))[1])
    second = Dino().score(concept, items, preds, models_ctx)
    assert calls == [] and [s.score for s in first] == [s.score for s in second]
    with pytest.raises(UserError):
        Dino(aggregation="median")
