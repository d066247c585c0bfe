"""CLIP-I against a numpy computation on the tiny CLIP's features; the loader, the tiny model, the cache."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, aggregate
from unifybench.evaluators.clip_image import ClipImage
from unifybench.models.encoders.clip import embed_images_cached, load_clip, tiny_clip_path
from unifybench.registry import EVALUATORS


def _picture(seed: int, size=(96, 80)) -> Image.Image:
    """A smooth random picture (gradient + blobs), different per seed."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, f = rng.uniform(-1, 1, 3)
        img[..., c] = 0.5 + 0.4 * np.sin(6 * (a * x + b * y) + f * 3)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def tiny(cache):
    return load_clip(tiny_clip_path(cache))


@pytest.fixture
def setup(tmp_path, cache):
    """A concept with 3 reference photos; 2 items with 2 + 3 generated images (one broken), 1 failed item."""
    refs = []
    for k in range(3):
        p = tmp_path / "refs" / f"{k}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        _picture(100 + k).save(p)
        refs.append(p)
    run = tmp_path / "run"
    (run / "gen").mkdir(parents=True)
    good = []
    for k in range(4):
        _picture(200 + k, size=(64, 64)).convert("RGBA").save(run / "gen" / f"{k}.png")
        good.append(f"gen/{k}.png")
    (run / "gen" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    concept = Concept("bo", "pet", "dog", train_images=tuple(refs), test_images=(refs[0],))
    items = [Item(id="b/bo/gen/0", concept="bo", task="gen", prompt="a photo of <sks>", n_images=2),
             Item(id="b/bo/gen/1", concept="bo", task="gen", prompt="<sks> on a beach", n_images=3),
             Item(id="b/bo/gen/2", concept="bo", task="gen", prompt="<sks> in snow", n_images=1)]
    preds = {"b/bo/gen/0": Prediction(id="b/bo/gen/0", concept="bo", task="gen", images=good[:2]),
             "b/bo/gen/1": Prediction(id="b/bo/gen/1", concept="bo", task="gen",
                                      images=[good[2], "gen/broken.png", good[3]]),
             "b/bo/gen/2": Prediction(id="b/bo/gen/2", concept="bo", task="gen", error="NaN in sampler")}
    ctx = EvalContext(run_dir=run, cache_dir=cache, tiny=True)
    return concept, items, preds, ctx, [run / g for g in good], refs


def _numpy_reference(model, gen_paths, ref_paths):
    g = model.encode_images([Image.open(p).convert("RGB") for p in gen_paths]).numpy().astype(np.float64)
    r = model.encode_images([Image.open(p).convert("RGB") for p in ref_paths]).numpy().astype(np.float64)
    pairwise = np.array([np.mean([gi @ rj / (np.linalg.norm(gi) * np.linalg.norm(rj)) for rj in r]) for gi in g])
    m = r.mean(axis=0)
    mean_emb = np.array([gi @ m / (np.linalg.norm(gi) * np.linalg.norm(m)) for gi in g])
    return pairwise, mean_emb


@pytest.mark.parametrize("preset,column", [("default", 0), ("yochameleon", 1)])
def test_clip_i_matches_numpy(setup, tiny, preset, column):
    concept, items, preds, ctx, gen_paths, refs = setup
    ev = ClipImage(preset=preset)
    scores = ev.score(concept, items, preds, ctx)
    expected = _numpy_reference(tiny, gen_paths, refs)[column]
    ok = [s for s in scores if s.failed is None]
    assert [s.id for s in ok] == ["b/bo/gen/0#0", "b/bo/gen/0#1", "b/bo/gen/1#0", "b/bo/gen/1#2"]
    np.testing.assert_allclose([s.score for s in ok], expected, atol=1e-5)
    failed = {s.id: s.failed for s in scores if s.failed is not None}
    assert set(failed) == {"b/bo/gen/1#1", "b/bo/gen/2"}
    assert "broken.png" in failed["b/bo/gen/1#1"] and "NaN in sampler" in failed["b/bo/gen/2"]
    result = aggregate({"bo": scores}, ev)
    assert result["n"] == 4 and result["n_failed"] == 2
    assert result["value"] == pytest.approx(float(np.mean(expected)), abs=1e-5)


def test_aggregations_differ_and_params(setup, tiny):
    concept, items, preds, ctx, gen_paths, refs = setup
    pw, me = _numpy_reference(tiny, gen_paths, refs)
    assert not np.allclose(pw, me, atol=1e-4)     # the two published definitions give different numbers
    scaled = ClipImage(scale=100, references="test", backbone="tiny").score(concept, items, preds, ctx)
    test_ref = _numpy_reference(tiny, gen_paths, refs[:1])[0]
    np.testing.assert_allclose([s.score for s in scaled if s.failed is None], 100 * test_ref, atol=1e-3)
    with pytest.raises(UserError):
        ClipImage(aggregation="max")
    with pytest.raises(UserError):
        ClipImage(references="val")
    with pytest.raises(UserError, match="--model clip="):
        ClipImage().score(concept, items, preds, EvalContext(run_dir=ctx.run_dir, cache_dir=ctx.cache_dir))
    assert EVALUATORS.get("clip_i") is ClipImage


def test_embedding_cache_is_reused_not_recomputed(setup, tmp_path):
    _, _, _, _, _, refs = setup
    cache = tmp_path / "emb-cache"
    model = load_clip(tiny_clip_path(cache))
    calls = []
    original = model.encode_pixels

    def counting(pixels):
        calls.append(len(pixels))
        return original(pixels)

    model.encode_pixels = counting
    first = embed_images_cached(model, refs + [refs[0]], cache)        # a duplicate is embedded once
    assert calls == [3] and first.shape == (4, 32)
    torch.testing.assert_close(first[3], first[0], rtol=0, atol=0)
    second = embed_images_cached(model, refs, cache)
    assert calls == [3]
    torch.testing.assert_close(second, first[:3], rtol=0, atol=0)
    # a fresh load of the same weights finds the file cache; a changed image is re-embedded alone
    fresh = load_clip(tiny_clip_path(cache))
    fresh_calls = []
    fresh_orig = fresh.encode_pixels
    fresh.encode_pixels = lambda px: (fresh_calls.append(len(px)), fresh_orig(px))[1]
    _picture(999).save(refs[1])
    third = embed_images_cached(fresh, refs, cache)
    assert fresh_calls == [1]
    torch.testing.assert_close(third[[0, 2]], first[[0, 2]], rtol=0, atol=0)
    assert not torch.allclose(third[1], first[1])
    assert len(list((cache / "embeddings").glob("*.safetensors"))) == 1


def test_tiny_clip_is_deterministic_open_clip_format(tmp_path, tiny):
    a, b = tiny_clip_path(tmp_path / "a"), tiny_clip_path(tmp_path / "b")
    assert a == tmp_path / "a" / "tiny" / "clip-v1" and tiny_clip_path(tmp_path / "a") == a

    def digest(p):
        return hashlib.sha256((p / "open_clip_model.safetensors").read_bytes()).hexdigest()

    assert digest(a) == digest(b)
    cfg = json.loads((a / "open_clip_config.json").read_text())
    assert "vision_cfg" in cfg["model_cfg"] and "text_cfg" in cfg["model_cfg"]
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".")]   # no temp folders left behind
    m = load_clip(a)
    assert m.id == "open_clip:clip-v1" and m.files == [a / "open_clip_model.safetensors"]
    texts = m.encode_texts(["a photo of a dog", "a dog on the beach"])
    assert texts.shape == (2, 32) and not torch.allclose(texts[0], texts[1])


def test_hf_clip_folder_loads_through_transformers(tmp_path):
    from transformers import CLIPConfig, CLIPModel
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # pragma: no cover
        from transformers import CLIPImageProcessor as Processor
    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(small, vocab_size=49408, max_position_embeddings=77),
                     vision_config=dict(small, image_size=32, patch_size=8), projection_dim=16)
    hf = CLIPModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "hf")
    clip = load_clip(tmp_path / "hf")
    images = [_picture(k) for k in range(3)]
    feats = clip.encode_images(images, batch_size=2)
    with torch.no_grad():
        pixels = torch.stack([clip.preprocess(im) for im in images])
        out = hf.get_image_features(pixel_values=pixels)
        ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    assert pixels.shape == (3, 3, 32, 32)
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)
    assert clip.id == "hf:hf" and clip.files == [tmp_path / "hf" / "model.safetensors"]


def _unictokens_pixels(path, mean, std, side=224):
    """UniCTokens eval/clip_eval.py, rebuilt here from torchvision parts: load, then its `preprocess`."""
    import torchvision.transforms as T
    load = T.Compose([T.Resize(512, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(512), T.ToTensor()])
    squeeze_and_clip = T.Compose([T.Normalize([-1.0] * 3, [2.0] * 3),
                                  T.Resize(side, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                                  T.CenterCrop(side), T.Normalize(mean, std)])
    return load(Image.open(path).convert("RGB")), squeeze_and_clip


def test_unifybench_legacy_preset_squeezes_pixels(setup, tiny):
    import open_clip
    concept, items, preds, ctx, gen_paths, refs = setup
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    ev = ClipImage(preset="unifybench_legacy")
    scores = ev.score(concept, items, preds, ctx)
    ok = [s for s in scores if s.failed is None]

    def feats(paths):
        px = []
        for p in paths:
            x, rest = _unictokens_pixels(p, mean, std)
            squeezed = (x + 1) / 2
            assert squeezed.min() >= 0.5 and squeezed.max() <= 1.0   # the washed-out input CLIP really sees
            px.append(rest(x))
        return tiny.encode_pixels(torch.stack(px)).double().numpy()

    g, r = feats(gen_paths), feats(refs)
    expected = [np.mean([gi @ rj / np.linalg.norm(gi) / np.linalg.norm(rj) for rj in r]) for gi in g]
    np.testing.assert_allclose([s.score for s in ok], expected, atol=1e-5)
    default = [s.score for s in ClipImage(preset="unifybench").score(concept, items, preds, ctx) if s.failed is None]
    assert not np.allclose(default, expected, atol=1e-3)       # the squeeze moves the numbers
    env = ev.environment()
    assert env["preset"] == "unifybench_legacy" and env["preprocess"] == "unictokens_legacy"
    assert env["backbone"] == "open_clip:clip-v1" and env["dtype"] == "float32" and env["device"] == "cpu"
    assert "Normalize(-1, 2)" in env["preprocess_detail"]
    assert env["fingerprint"] != ClipImage(preset="unifybench").model(ctx).fingerprint(ctx.cache_dir)
    # the presets that existed before keep their numbers
    for name in ("default", "unifybench", "dreambooth", "yochameleon"):
        p = ClipImage(preset=name).params
        assert (p["preprocess"], p["scale"], p["clamp"]) == ("checkpoint", 1.0, "none")


def test_clamp_modes(setup, tiny):
    concept, items, preds, ctx, gen_paths, refs = setup
    raw = np.array([s.score for s in ClipImage().score(concept, items, preds, ctx) if s.failed is None])
    per = ClipImage(clamp="per_sample", scale=2.5).score(concept, items, preds, ctx)
    np.testing.assert_allclose([s.score for s in per if s.failed is None], 2.5 * np.maximum(raw, 0), atol=1e-6)
    ev = ClipImage(clamp="mean", scale=100)
    mean_scores = ev.score(concept, items, preds, ctx)
    np.testing.assert_allclose([s.score for s in mean_scores if s.failed is None], 100 * raw, atol=1e-4)
    assert ev.concept_value(mean_scores) == pytest.approx(max(100 * raw.mean(), 0.0), abs=1e-4)
    with pytest.raises(UserError):
        ClipImage(clamp="always")
    with pytest.raises(UserError):
        ClipImage(preprocess="squash")


def test_legacy_preprocess_on_hf_clip_folder(tmp_path):
    from transformers import CLIPConfig, CLIPModel
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # pragma: no cover
        from transformers import CLIPImageProcessor as Processor
    from unifybench.evaluators.clip_image import clip_pixel_config, with_preprocess
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(small, vocab_size=49408, max_position_embeddings=77),
                     vision_config=dict(small, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(cfg).save_pretrained(tmp_path / "hf")
    Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
              image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.4]).save_pretrained(tmp_path / "hf")
    clip = load_clip(tmp_path / "hf")
    assert clip_pixel_config(clip) == (32, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4])
    legacy = with_preprocess(clip, "unictokens_legacy")
    x = legacy.preprocess(_picture(5))
    # undo CLIP's normalisation: the pixels CLIP sees are squeezed into [0.5, 1] (bicubic overshoot aside)
    raw = x * torch.tensor([0.2, 0.3, 0.4])[:, None, None] + torch.tensor([0.5, 0.4, 0.3])[:, None, None]
    assert x.shape == (3, 32, 32) and raw.min() > 0.45 and raw.max() < 1.05
    assert legacy.model is clip.model and legacy.fingerprint() != clip.fingerprint()
