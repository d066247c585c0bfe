"""Face similarity through insightface's real FaceAnalysis on tiny ONNX files built here, on CPU.

The tiny detector finds a "face" in each nearly pure red or magenta block aligned to its 32 px grid (at the
640x640 detection size); other pictures have no face. Expected values are computed with FaceAnalysis
directly (outside the evaluator) and numpy cosines.
"""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, aggregate
from unifybench.evaluators.face import FaceSimilarity, unictokens_resize
from unifybench.models.encoders.face import tiny_face_pack
from unifybench.registry import EVALUATORS

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

SIZE = 320   # a 320 px picture is detected at 640: a 16 px block on the 16 px grid is one 32 px cell


def _picture(bg_seed: int, faces=()) -> Image.Image:
    """A low-saturation background (never a face) with 16 px face blocks: (x, y, "red"|"magenta", seed)."""
    rng = np.random.default_rng(bg_seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    a, b, f = rng.uniform(-1, 1, 3)
    grey = 120 + 50 * np.sin(5 * (a * x + b * y) + 3 * f)
    img = np.stack([grey + d for d in rng.uniform(-12, 12, 3)], -1)
    for fx, fy, kind, seed in faces:
        t = np.random.default_rng(seed)
        block = np.zeros((16, 16, 3))
        block[..., 0] = t.uniform(225, 255, (16, 16))
        block[..., 1] = t.uniform(0, 20, (16, 16))
        block[..., 2] = t.uniform(0, 80, (16, 16)) if kind == "red" else t.uniform(200, 255, (16, 16))
        img[fy:fy + 16, fx:fx + 16] = block
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def pack(cache) -> Path:
    return tiny_face_pack(cache)


@pytest.fixture(scope="module")
def hand(pack):
    """The selected face's normed embedding, computed with insightface directly."""
    from insightface.app import FaceAnalysis
    app = FaceAnalysis(name=str(pack), allowed_modules=["detection", "recognition"],
                       providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=(640, 640))

    def embed(path, select="largest", resize=True):
        im = Image.open(path).convert("RGB")
        if resize:     # UniCTokens: long side 1280, sides floored to multiples of 64
            w, h = im.size
            r = 1280 / max(w, h)
            im = im.resize((round(w * r) // 64 * 64, round(h * r) // 64 * 64), Image.BILINEAR)
        faces = app.get(np.asarray(im)[:, :, ::-1].copy())
        if not faces:
            return None, faces
        face = faces[0] if select == "first" else max(
            faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        return face.embedding / np.linalg.norm(face.embedding), faces

    embed.app = app
    return embed


@pytest.fixture
def setup(tmp_path, cache):
    d = tmp_path / "refs"
    d.mkdir()
    refs = [d / "0.png", d / "1.png", d / "2.png"]
    _picture(1, [(64, 64, "red", 100)]).save(refs[0])           # person A
    _picture(2, [(160, 96, "red", 100)]).save(refs[1])          # person A elsewhere
    _picture(3).save(refs[2])                                    # no face
    run = tmp_path / "run"
    (run / "gen").mkdir(parents=True)
    shutil.copy(refs[0], run / "gen" / "same.png")
    _picture(4, [(128, 128, "red", 200)]).save(run / "gen" / "other.png")        # person B
    _picture(5).save(run / "gen" / "noface.png")
    _picture(6, [(32, 32, "red", 100), (192, 192, "magenta", 300)]).save(run / "gen" / "two.png")
    concept = Concept("ana", "person", "woman", train_images=tuple(refs), test_images=(refs[0],))
    items = [Item(id="b/ana/gen/0", concept="ana", task="gen", prompt="a photo of <sks>"),
             Item(id="b/ana/gen/1", concept="ana", task="gen", prompt="<sks> smiling")]
    preds = {"b/ana/gen/0": Prediction("b/ana/gen/0", "ana", "gen",
                                       images=["gen/same.png", "gen/other.png", "gen/noface.png", "gen/two.png"]),
             "b/ana/gen/1": Prediction("b/ana/gen/1", "ana", "gen", error="out of memory")}
    ctx = EvalContext(run_dir=run, cache_dir=cache, tiny=True)
    return concept, items, preds, ctx, run, refs


def _expected(hand, run, refs, select="largest", resize=True):
    R = [e for e in (hand(r, select, resize)[0] for r in refs) if e is not None]
    out = {}
    for name in ("same", "other", "noface", "two"):
        e, _ = hand(run / "gen" / f"{name}.png", select, resize)
        out[name] = None if e is None else float(np.mean([r @ e for r in R]))
    return out, len(R)


def test_face_matches_insightface_directly_and_counts_no_face(setup, hand):
    concept, items, preds, ctx, run, refs = setup
    ev = FaceSimilarity(preset="unifybench")
    scores = ev.score(concept, items, preds, ctx)
    by_id = {s.id: s for s in scores}
    expected, n_ref = _expected(hand, run, refs)
    assert n_ref == 2 and expected["noface"] is None
    for k, name in enumerate(("same", "other", "noface", "two")):
        s = by_id[f"b/ana/gen/0#{k}"]
        if expected[name] is None:
            assert s.score is None and s.failed == "no face detected" and s.detail["no_face"] is True
        else:
            assert s.failed is None and s.score == pytest.approx(expected[name], abs=1e-6)
            assert s.detail["n_reference_faces"] == 2 and s.detail["no_face"] is False
    assert by_id["b/ana/gen/1"].failed == "model error: out of memory"
    assert by_id["b/ana/gen/0#0"].score > by_id["b/ana/gen/0#1"].score    # A looks more like A than B does
    res = aggregate({"ana": scores}, ev)
    res.update(ev.extra_aggregates({"ana": scores}))
    valued = [v for v in expected.values() if v is not None]
    assert res["value"] == pytest.approx(float(np.mean(valued)), abs=1e-6)
    assert res["n"] == 3 and res["n_failed"] == 2
    assert res["n_no_face_generated"] == 1 and res["n_no_face_reference"] == 1
    assert res["detection_rate_generated"] == pytest.approx(3 / 4)
    assert res["detection_rate_reference"] == pytest.approx(2 / 3)
    # strict: a generation without a face scores 0 (and is still counted)
    strict = FaceSimilarity(preset="strict")
    s_scores = strict.score(concept, items, preds, ctx)
    assert [s.score for s in s_scores if s.id == "b/ana/gen/0#2"] == [0.0]
    assert aggregate({"ana": s_scores}, strict)["value"] == pytest.approx(float(np.mean(valued + [0.0])), abs=1e-6)
    assert strict.extra_aggregates({"ana": s_scores})["n_no_face_generated"] == 1
    assert EVALUATORS.get("face") is FaceSimilarity


def test_identical_images_score_one_and_detector_geometry(setup, hand):
    concept, items, preds, ctx, run, refs = setup
    one_ref = Concept("ana", "person", "woman", train_images=(refs[0],))
    scores = FaceSimilarity(preset="unifybench").score(one_ref, items[:1], preds, ctx)
    assert scores[0].score == pytest.approx(1.0, abs=1e-6)
    # the red block at (64, 64)..(80, 80) of the 320 px picture is the face: box centred on it
    _, faces = hand(refs[0], resize=False)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].bbox
    assert (x1 + x2) / 2 == pytest.approx(72, abs=1.5) and (y1 + y2) / 2 == pytest.approx(72, abs=1.5)
    assert 14 < x2 - x1 < 24
    models = hand.app.models
    assert type(models["detection"]).__name__ == "SCRFD" and models["detection"].use_kps
    rec = models["recognition"]
    assert type(rec).__name__ == "ArcFaceONNX" and rec.input_size == (112, 112)
    assert (rec.input_mean, rec.input_std) == (0.0, 1.0)   # our Sub/Mul nodes: insightface feeds raw pixels


def test_largest_versus_first_face(setup, hand):
    concept, items, preds, ctx, run, refs = setup
    _, faces = hand(run / "gen" / "two.png", resize=False)
    assert len(faces) == 2 and faces[0].det_score > faces[1].det_score      # red first, magenta larger
    areas = [(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) for f in faces]
    assert areas[1] > areas[0]
    largest = FaceSimilarity(pre_resize=None).score(concept, items, preds, ctx)[3]
    first = FaceSimilarity(preset="yochameleon").score(concept, items, preds, ctx)[3]
    assert largest.detail["face_bbox"] == pytest.approx([float(v) for v in faces[1].bbox], abs=0.05)
    assert first.detail["face_bbox"] == pytest.approx([float(v) for v in faces[0].bbox], abs=0.05)
    exp_first, _ = _expected(hand, run, refs, select="first", resize=False)
    assert first.score == pytest.approx(exp_first["two"], abs=1e-6)
    assert first.score != pytest.approx(largest.score, abs=1e-3)


def test_providers_recorded_and_categories(setup, tmp_path):
    concept, items, preds, ctx, run, refs = setup
    ev = FaceSimilarity()
    pet = Concept("bo", "pet", "dog", train_images=tuple(refs))
    assert ev.score(pet, items, preds, ctx) == [] and ev.environment() == {}   # nothing loaded for a pet
    ev.score(concept, items, preds, ctx)
    env = ev.environment()
    assert env["providers"]["detection"] == ["CPUExecutionProvider"]
    assert env["providers"]["recognition"] == ["CPUExecutionProvider"]
    assert env["providers"]["detection@640x640"] == ["CPUExecutionProvider"]
    assert env["requested_providers"] == ["CPUExecutionProvider"] and env["cpu_fallback"] is False
    assert env["det_size"] == [640, 640] and env["pack"] == "tiny" and env["preset"] == "default"
    assert env["recognizer_input_mean_std"] == [0.0, 1.0] and env["device"] == "cpu"
    assert ev.extra_aggregates({"bo": [], "ana": []})["n_concepts_not_in_categories"] == 1
    assert len(FaceSimilarity(categories="all").score(pet, items, preds, ctx)) == 5
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        # asking for CUDA on a CPU-only onnxruntime: the silent fallback shows in the record
        cuda = FaceSimilarity(providers="CUDAExecutionProvider,CPUExecutionProvider")
        cuda.score(concept, items, preds, ctx)
        env = cuda.environment()
        assert env["requested_providers"][0] == "CUDAExecutionProvider"
        assert env["providers"]["recognition"] == ["CPUExecutionProvider"] and env["cpu_fallback"] is True


def test_pack_resolution_and_tiny_pack(setup, pack, tmp_path, monkeypatch):
    concept, items, preds, ctx, run, refs = setup
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(UserError, match="--model face="):
        FaceSimilarity().score(concept, items, preds, EvalContext(run_dir=run, cache_dir=ctx.cache_dir))
    root = tmp_path / "insightface"
    shutil.copytree(pack, root / "models" / "antelopev2")
    real = EvalContext(run_dir=run, cache_dir=ctx.cache_dir, models={"face": str(root)})
    ev = FaceSimilarity()
    assert ev.resolve_pack(real) == (root / "models" / "antelopev2", "antelopev2")
    tiny_scores = [s.score for s in FaceSimilarity().score(concept, items, preds, ctx)]
    assert [s.score for s in ev.score(concept, items, preds, real)] == tiny_scores
    with pytest.raises(UserError, match="no buffalo_l pack"):
        FaceSimilarity(preset="yochameleon").score(concept, items, preds, real)
    with pytest.raises(UserError):
        FaceSimilarity(face_select="biggest")
    other = tiny_face_pack(tmp_path / "again")
    for name in ("det_tiny.onnx", "rec_tiny.onnx"):
        assert hashlib.sha256((other / name).read_bytes()).digest() == hashlib.sha256((pack / name).read_bytes()).digest()
    assert not [p for p in other.parent.iterdir() if p.name.startswith(".")]
    assert unictokens_resize(Image.new("RGB", (512, 384))).size == (1280, 960)


@pytest.mark.parametrize("size,first,final", [
    ((512, 384), (1280, 960), (1280, 960)),
    # 80 x 267: short side to 1024 gives 1024 x 3418 (3417.6 rounded), long side to 1280 gives 383 x 1280
    # (383.48), floored to 320 x 1280; a single resize of 80 x 267 to long side 1280 would give 384 x 1280.
    ((80, 267), (383, 1280), (320, 1280)),
    # 94 x 99: 1024 x 1078 (1078.47), then 1216 x 1280 (1215.88 -> 1216), floored 1216 x 1280 (one step: 1152)
    ((94, 99), (1216, 1280), (1216, 1280)),
    ((512, 512), (1280, 1280), (1280, 1280)),
])
def test_unictokens_resize_is_the_two_step_resize_img(size, first, final):
    """Sizes worked out by hand from face_eval_v2.py's resize_img; pixels from PIL called directly."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    want = image.resize(first, Image.BILINEAR).resize(final, Image.BILINEAR)
    got = unictokens_resize(image)
    assert got.size == final
    assert np.array_equal(np.asarray(got), np.asarray(want))


def test_largest_face_keeps_the_last_of_equal_areas():
    from types import SimpleNamespace
    from unifybench.evaluators.face import select_face
    faces = [SimpleNamespace(bbox=[0, 0, 10, 10], k=0), SimpleNamespace(bbox=[0, 0, 20, 5], k=1),
             SimpleNamespace(bbox=[5, 5, 10, 10], k=2)]
    # sorted(faces, key=area)[-1] as UniCTokens writes it: a stable sort puts the later of two equal areas last
    assert select_face(faces, "largest").k == sorted(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))[-1].k == 1
    assert select_face(faces, "first").k == 0
