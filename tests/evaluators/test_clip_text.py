"""CLIP-T against cosines computed here on the tiny CLIP's own image and text features."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, aggregate
from unifybench.evaluators.clip_image import ClipImage
from unifybench.evaluators.image_similarity import FEATURES
from unifybench.evaluators.clip_text import ClipText, prompt_text
from unifybench.models.encoders.clip import get_clip, tiny_clip_path
from unifybench.registry import EVALUATORS


def _picture(seed: int, size=(72, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.5 + 0.4 * np.sin(6 * (a * x + b * y) + 3 * f) for a, b, f in rng.uniform(-1, 1, (3, 3))], -1)
    return Image.fromarray((img * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny(cache):
    return get_clip(tiny_clip_path(cache))   # the very object the evaluators share


@pytest.fixture
def setup(tmp_path, cache):
    run = tmp_path / "run"
    (run / "gen").mkdir(parents=True)
    for k in range(4):
        _picture(300 + k).save(run / "gen" / f"{k}.png")
    (run / "gen" / "bad.png").write_bytes(b"not an image")
    long_tail = " ".join(["and a very long description of the scene"] * 20)
    concept = Concept("bo", "pet", "dog", train_images=(), test_images=())
    items = [Item(id="b/bo/gen/0", concept="bo", task="gen", prompt="a photo of <sks>"),
             Item(id="b/bo/gen/1", concept="bo", task="gen", prompt="a <sks> on a beach"),
             Item(id="b/bo/gen/2", concept="bo", task="gen", prompt="a <sks> in the snow " + long_tail),
             Item(id="b/bo/gen/3", concept="bo", task="gen", prompt="a <sks> in the snow " + long_tail + " END"),
             Item(id="b/bo/vqa/0", concept="bo", task="vqa", prompt="what is <sks>?")]
    preds = {"b/bo/gen/0": Prediction("b/bo/gen/0", "bo", "gen", images=["gen/0.png", "gen/1.png"]),
             "b/bo/gen/1": Prediction("b/bo/gen/1", "bo", "gen", images=["gen/2.png", "gen/bad.png"]),
             "b/bo/gen/2": Prediction("b/bo/gen/2", "bo", "gen", images=["gen/3.png"]),
             "b/bo/gen/3": Prediction("b/bo/gen/3", "bo", "gen", images=["gen/3.png"]),
             "b/bo/vqa/0": Prediction("b/bo/vqa/0", "bo", "vqa", text="a dog")}
    ctx = EvalContext(run_dir=run, cache_dir=cache, tiny=True)
    return concept, items, preds, ctx, run


def _hand(tiny, run, pairs):
    """cosine(image, text) per (image file, text), on features computed directly."""
    imgs = tiny.encode_images([Image.open(run / f).convert("RGB") for f, _ in pairs]).double().numpy()
    txts = tiny.encode_texts([t for _, t in pairs]).double().numpy()
    return np.array([i @ t / np.linalg.norm(i) / np.linalg.norm(t) for i, t in zip(imgs, txts)])


def test_clip_t_matches_hand_cosines_and_replaces_placeholder(setup, tiny):
    concept, items, preds, ctx, run = setup
    ev = ClipText()
    scores = ev.score(concept, items, preds, ctx)
    ok = [s for s in scores if s.failed is None]
    assert [s.id for s in ok] == ["b/bo/gen/0#0", "b/bo/gen/0#1", "b/bo/gen/1#0", "b/bo/gen/2#0", "b/bo/gen/3#0"]
    assert ok[0].detail["text"] == "a photo of dog" and ok[2].detail["text"] == "a dog on a beach"
    assert all("<sks>" not in s.detail["text"] for s in ok)
    expected = _hand(tiny, run, [("gen/0.png", "a photo of dog"), ("gen/1.png", "a photo of dog"),
                                 ("gen/2.png", "a dog on a beach"), ("gen/3.png", ok[3].detail["text"])])
    np.testing.assert_allclose([s.score for s in ok[:4]], expected, atol=1e-5)
    # texts are truncated to the 77-token context: a difference after it changes nothing
    assert ok[4].score == pytest.approx(ok[3].score, abs=1e-7)
    failed = {s.id: s.failed for s in scores if s.failed is not None}
    assert list(failed) == ["b/bo/gen/1#1"] and "bad.png" in failed["b/bo/gen/1#1"]
    res = aggregate({"bo": scores}, ev)
    assert res["n"] == 5 and res["n_failed"] == 1
    assert res["value"] == pytest.approx(float(np.mean([s.score for s in ok])), abs=1e-9)
    env = ev.environment()
    assert env["backbone"] == "open_clip:clip-v1" and env["preset"] == "default"
    assert env["dtype"] == "float32" and env["device"] == "cpu" and env["preprocess"] == "checkpoint"
    assert EVALUATORS.get("clip_t") is ClipText


def test_scale_and_clamp_presets(setup, tiny):
    concept, items, preds, ctx, run = setup
    raw = [s.score for s in ClipText(preset="unifybench").score(concept, items, preds, ctx) if s.failed is None]
    tm = ClipText(preset="torchmetrics")
    tm_scores = tm.score(concept, items, preds, ctx)
    np.testing.assert_allclose([s.score for s in tm_scores if s.failed is None], 100 * np.array(raw), atol=1e-4)
    assert tm.concept_value(tm_scores) == pytest.approx(max(100 * float(np.mean(raw)), 0.0), abs=1e-4)
    cs = [s.score for s in ClipText(preset="clipscore").score(concept, items, preds, ctx) if s.failed is None]
    np.testing.assert_allclose(cs, [2.5 * max(v, 0.0) for v in raw], atol=1e-6)
    for preset in ("yochameleon", "dreambooth"):
        ev = ClipText(preset=preset)
        assert ev.params["scale"] == 1.0 and ev.params["clamp"] == "none"
    verbatim = ClipText(placeholder_to_class=False).score(concept, items[:1], preds, ctx)
    assert verbatim[0].detail["text"] == "a photo of <sks>"
    assert prompt_text("<sks> and <sks>", concept) == "dog and dog"
    with pytest.raises(UserError):
        ClipText(clamp="sometimes")
    with pytest.raises(UserError):
        ClipText(scale=0)
    with pytest.raises(UserError, match="--model clip="):
        ClipText().score(concept, items, preds, EvalContext(run_dir=run, cache_dir=ctx.cache_dir))


def test_clip_i_and_clip_t_embed_each_generated_image_once(setup, tiny, monkeypatch, tmp_path):
    concept, items, preds, ctx, run = setup
    refs = []
    for k in range(2):
        refs.append(tmp_path / f"ref{k}.png")
        _picture(900 + k).save(refs[-1])
    concept = Concept("bo", "pet", "dog", train_images=tuple(refs))
    FEATURES.clear()
    seen = []
    original = tiny.encode_pixels
    monkeypatch.setattr(tiny, "encode_pixels", lambda px: (seen.append(px.shape[0]), original(px))[1])
    ClipImage().score(concept, items, preds, ctx)
    after_clip_i = sum(seen)
    ClipText().score(concept, items, preds, ctx)
    # 4 distinct generated files (3.png is used twice) + 2 references, and nothing more for CLIP-T
    assert after_clip_i == 4 + 2 and sum(seen) == after_clip_i


def test_dreambench_prompt_with_class_noun_is_not_doubled():
    from unifybench.data.schema import Concept
    from unifybench.evaluators.clip_text import prompt_text
    dog = Concept(name="dog", category="pet", class_noun="dog")
    assert prompt_text("a <sks> dog in the jungle", dog) == "a dog in the jungle"
    assert prompt_text("a <sks> in the jungle", dog) == "a dog in the jungle"
    assert prompt_text("a <sks> in the jungle", dog, placeholder_to_class=False) == "a <sks> in the jungle"
