"""CLIP-I: how much each generated image looks like the concept's real photos, in a CLIP image space.

One sample per generated image (`"<item id>#<k>"`). Params:
  backbone     a local CLIP checkpoint (see `unifybench.models.clip.load_clip`), or "tiny" for the random
               tiny CLIP; unset: the run's `--model clip=...`, else the tiny CLIP in tiny runs, else an error.
  aggregation  "pairwise_mean": mean over reference images of the cosine between L2-normalised features
               (DreamBooth, UniCTokens eval/clip_eval.py); "mean_embedding": cosine to the mean of the
               UN-normalised reference features (Yo'Chameleon evaluation/clip_image_similarity.py).
  references   "train" (the concept's training photos, as all three papers do) or "test".
  preprocess   "checkpoint" (the checkpoint's own eval transform) or "unictokens_legacy": UniCTokens'
               eval/clip_eval.py pipeline, bicubic short side 512 + centre crop 512, ToTensor, then an extra
               Normalize(mean -1, std 2) that squeezes [0,1] pixels into [0.5,1] (meant for generator output
               in [-1,1]), then CLIP's bicubic resize + centre crop on the tensor and CLIP's normalisation.
               Only the explicitly named preset `unifybench_legacy` uses it.
  scale        multiplies the cosine (1 = raw, as the papers report; 100 = torchmetrics; 2.5 = CLIPScore).
  clamp        "none"; "per_sample": max(cos, 0) per image (Hessel et al. CLIPScore); "mean": the concept's
               mean is clamped at 0 (torchmetrics clamps its mean; per-sample values stay signed).
An image that cannot be loaded, or a prediction with an error, is a failed sample (counted), never a 0.
The backbone, its preprocessing, dtype and device change the numbers: compare only rows with the same
ones; `environment()` records them.

Speed: every generated image is read once, hashed, decoded and preprocessed once, and embedded in batches;
its features are kept in an in-process cache keyed by (model fingerprint, image sha256), so CLIP-T reuses
CLIP-I's image features. Reference features are cached on disk by the same key (`embed_images_cached`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore, resolve_weights

if TYPE_CHECKING:
    import torch

AGGREGATIONS = ("pairwise_mean", "mean_embedding")
REFERENCES = ("train", "test")
CLAMPS = ("none", "per_sample", "mean")
PREPROCESS = ("checkpoint", "unictokens_legacy")
LEGACY_SIDE = 512   # UniCTokens eval/clip_eval.py: short side 512, centre crop 512, before CLIP's own transform


def resolve_backbone(backbone: str | None, ctx: EvalContext, evaluator: str) -> Path | str:
    """The CLIP checkpoint an evaluator uses: its param, the run's `clip` model, or the tiny one."""
    return resolve_weights(backbone, ctx, "clip",
                           f"{evaluator} needs a local CLIP checkpoint: pass --model clip=PATH (an open_clip folder "
                           f"with open_clip_config.json, an HF CLIP folder, or ARCH:/path/to/weights, e.g. "
                           f"ViT-B-32-quickgelu:/ckpt/openai.bin), or run the tiny preset; nothing is downloaded")


def cosine_scores(gen: torch.Tensor, refs: torch.Tensor, aggregation: str) -> torch.Tensor:
    """[G] scores of generated features `gen` [G, D] against reference features `refs` [R, D]."""
    import torch
    gen, refs = gen.double(), refs.double()
    if aggregation == "pairwise_mean":
        g = torch.nn.functional.normalize(gen, dim=-1)
        r = torch.nn.functional.normalize(refs, dim=-1)
        return (g @ r.T).mean(dim=1)
    if aggregation == "mean_embedding":
        m = refs.mean(dim=0, keepdim=True)
        return torch.nn.functional.cosine_similarity(gen, m, dim=-1, eps=1e-12)
    raise ValueError(aggregation)


def apply_scale_clamp(values: Sequence[float], scale: float, clamp: str) -> list[float]:
    """Per-sample values: `scale * cos`, or `scale * max(cos, 0)` under clamp "per_sample"."""
    if clamp == "per_sample":
        return [scale * max(float(v), 0.0) for v in values]
    return [scale * float(v) for v in values]


# ------------------------------------------------------------------------------------------------------
# Shared by CLIP-I, CLIP-T and DINO: parameter checks, generated-image collection and embedding
# ------------------------------------------------------------------------------------------------------
def check_common_params(name: str, p: dict[str, Any]) -> None:
    """Validate (in place) the parameters the image-similarity evaluators share."""
    if "aggregation" in p and p["aggregation"] not in AGGREGATIONS:
        raise UserError(f"{name}: unknown aggregation {p['aggregation']!r} (known: {', '.join(AGGREGATIONS)})")
    if "references" in p and p["references"] not in REFERENCES:
        raise UserError(f"{name}: unknown references {p['references']!r} (known: {', '.join(REFERENCES)})")
    if "preprocess" in p and p["preprocess"] not in PREPROCESS:
        raise UserError(f"{name}: unknown preprocess {p['preprocess']!r} (known: {', '.join(PREPROCESS)})")
    if p.get("clamp") is None or p.get("clamp") is False:
        p["clamp"] = "none"
    if p["clamp"] not in CLAMPS:
        raise UserError(f"{name}: unknown clamp {p['clamp']!r} (known: {', '.join(CLAMPS)})")
    try:
        p["scale"] = float(p["scale"])
        p["batch_size"] = int(p["batch_size"])
    except (TypeError, ValueError):
        raise UserError(f"{name}: scale must be a number and batch_size an integer") from None
    if not p["scale"] > 0:
        raise UserError(f"{name}: scale must be > 0 (1 = raw cosine, 100 = torchmetrics, 2.5 = CLIPScore)")
    if p["batch_size"] < 1:
        raise UserError(f"{name}: batch_size must be >= 1")


def collect_generated(concept: Concept, items: list[Item], predictions: dict[str, Prediction],
                      tasks: frozenset[str]) -> tuple[list[SampleScore], list[tuple[SampleScore, Item, str]]]:
    """All samples in order (failed predictions marked), and the (sample, item, image path) to embed."""
    out: list[SampleScore] = []
    pending: list[tuple[SampleScore, Item, str]] = []
    for item in items:
        if item.task not in tasks:
            continue
        pred = predictions.get(item.id)
        if pred is None or pred.error is not None or not pred.images:
            why = ("no prediction" if pred is None else
                   f"model error: {pred.error}" if pred.error is not None else "prediction has no images")
            out.append(SampleScore(item.id, concept.name, None, failed=why))
            continue
        for k, rel in enumerate(pred.images):
            sample = SampleScore(f"{item.id}#{k}", concept.name, None, detail={"image": str(rel)})
            out.append(sample)
            pending.append((sample, item, str(rel)))
    return out, pending


class _FeatureMemo:
    """In-process cache of image features: (model fingerprint, image sha256) -> [D] tensor (LRU)."""

    def __init__(self, capacity: int = 50_000):
        self.capacity = capacity
        self._d: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple[str, str], value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()


FEATURES = _FeatureMemo()


def embed_files(model, paths: Sequence[Path], cache_dir: Path | None, batch_size: int
                ) -> tuple[list[Any], list[str | None]]:
    """Features of image files (generated images): `(features or None, error or None)` per path.

    Each file is read once and identified by its sha256; features already in the in-process cache (from
    another evaluator with the same model fingerprint, or an earlier concept) are not recomputed, and
    duplicates are embedded once. The rest are decoded, preprocessed by `model.preprocess`, and embedded
    in batches of `batch_size` (at most one batch of pixels is held at a time). A file that cannot be read
    or decoded gets an error, never features."""
    import torch
    from PIL import Image
    fp = model.fingerprint(cache_dir)
    feats: list[Any] = [None] * len(paths)
    errors: list[str | None] = [None] * len(paths)
    todo: dict[str, list[int]] = {}          # digest -> indices waiting for it
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        out = model.encode_pixels(torch.stack([px for _, px in batch]))
        for (digest, _), f in zip(batch, out):
            f = f.clone()
            FEATURES.put((fp, digest), f)
            for i in todo.pop(digest):
                feats[i] = f
        batch.clear()

    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            errors[i] = f"cannot read image {path}: {e.strerror or e}"
            continue
        digest = hashlib.sha256(data).hexdigest()
        hit = FEATURES.get((fp, digest))
        if hit is not None:
            feats[i] = hit
            continue
        if digest in todo:
            todo[digest].append(i)
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                rgb = im.convert("RGB")
            px = model.preprocess(rgb)
        except Exception as e:   # truncated, not an image, ...
            errors[i] = f"cannot load image {path}: {type(e).__name__}: {e}"
            continue
        todo[digest] = [i]
        batch.append((digest, px))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return feats, errors


def score_against_references(evaluator: Evaluator, model, concept: Concept, items: list[Item],
                             predictions: dict[str, Prediction], ctx: EvalContext) -> list[SampleScore]:
    """The CLIP-I / DINO scoring: generated image features vs the concept's reference features."""
    import torch

    from unifybench.models.encoders.clip import embed_images_cached
    p = evaluator.params
    refs = list(concept.train_images if p["references"] == "train" else concept.test_images)
    out, pending = collect_generated(concept, items, predictions, evaluator.tasks)
    if not pending:
        return out
    if not refs:
        for sample, _, _ in pending:
            sample.failed = f"concept has no {p['references']} reference images"
        return out
    run_dir = Path(ctx.run_dir)
    feats, errors = embed_files(model, [run_dir / rel for _, _, rel in pending], ctx.cache_dir, p["batch_size"])
    ok = []
    for (sample, _, _), f, err in zip(pending, feats, errors):
        if err is not None:
            sample.failed = err
        else:
            ok.append((sample, f))
    if not ok:
        return out
    ref_feats = embed_images_cached(model, refs, ctx.cache_dir, batch_size=p["batch_size"])
    cos = cosine_scores(torch.stack([f for _, f in ok]), ref_feats, p["aggregation"]).tolist()
    for (sample, _), v in zip(ok, apply_scale_clamp(cos, p["scale"], p["clamp"])):
        sample.score = float(v)
        sample.detail["n_references"] = len(refs)
    return out


def clamped_concept_value(scores: list[SampleScore], clamp: str) -> float | None:
    ok = [s.score for s in scores if s.failed is None]
    if not ok:
        return None
    mean = sum(ok) / len(ok)
    return max(mean, 0.0) if clamp == "mean" else mean


# ------------------------------------------------------------------------------------------------------
# UniCTokens' legacy CLIP preprocessing
# ------------------------------------------------------------------------------------------------------
def _side(size) -> int:
    """The side of an HF processor size: an int, a dict or a SizeDict with height or shortest_edge."""
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    for key in ("height", "shortest_edge"):
        if get(key) is not None:
            return int(get(key))
    raise UserError(f"cannot read the image side from the processor's size {size!r}")


def clip_pixel_config(clip) -> tuple[int, list[float], list[float]]:
    """(input side, mean, std) of a loaded CLIP's own eval transform."""
    if clip.kind == "hf":
        try:
            from transformers import CLIPImageProcessorPil as Processor
        except ImportError:  # pragma: no cover
            from transformers import CLIPImageProcessor as Processor
        proc = Processor.from_pretrained(Path(clip.files[0]).parent, local_files_only=True)
        crop = proc.crop_size if getattr(proc, "crop_size", None) is not None else proc.size
        return _side(crop), list(proc.image_mean), list(proc.image_std)
    cfg = getattr(clip.model.visual, "preprocess_cfg", None) or {}
    size = cfg.get("size") or clip.model.visual.image_size
    side = size[0] if isinstance(size, (tuple, list)) else size
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None:
        for t in getattr(clip.preprocess, "transforms", []):
            if type(t).__name__ == "Normalize":
                mean, std = list(t.mean), list(t.std)
    if mean is None:
        import open_clip
        mean, std = list(open_clip.OPENAI_DATASET_MEAN), list(open_clip.OPENAI_DATASET_STD)
    return int(side), list(mean), list(std)


class UniCTokensLegacyTransform:
    """PIL image -> CLIP pixels exactly as UniCTokens eval/clip_eval.py builds them (squeezed to [0.5, 1])."""

    def __init__(self, side: int, mean: Sequence[float], std: Sequence[float]):
        self.side, self.mean, self.std = int(side), [float(m) for m in mean], [float(s) for s in std]

    def __call__(self, image) -> torch.Tensor:
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode
        image = image.convert("RGB")
        image = F.center_crop(F.resize(image, LEGACY_SIDE, interpolation=InterpolationMode.BICUBIC), LEGACY_SIDE)
        x = F.to_tensor(image)                       # [0, 1]
        x = F.normalize(x, [-1.0] * 3, [2.0] * 3)    # (x + 1) / 2: the "[-1,1] -> [0,1]" step, on [0,1] input
        x = F.resize(x, self.side, interpolation=InterpolationMode.BICUBIC, antialias=True)
        x = F.center_crop(x, self.side)
        return F.normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"UniCTokensLegacyTransform(short side {LEGACY_SIDE} bicubic, crop {LEGACY_SIDE}, "
                f"Normalize(-1, 2), resize {self.side} bicubic antialias, crop {self.side}, "
                f"Normalize({self.mean}, {self.std}))")


def with_preprocess(clip, preprocess: str):
    """The same loaded CLIP with another preprocessing (its own fingerprint, so its own caches)."""
    if preprocess == "checkpoint":
        return clip
    side, mean, std = clip_pixel_config(clip)
    t = UniCTokensLegacyTransform(side, mean, std)
    return dataclasses.replace(clip, preprocess=t, preprocess_id=f"{clip.preprocess_id}+{t!r}", _fingerprint=None)


class _ClipEvaluator(Evaluator):
    """What CLIP-I and CLIP-T share: the backbone, its preprocessing, the recorded environment."""

    tasks = frozenset({GEN, KNOWLEDGE_GEN})
    higher_is_better = True
    needs_service = False

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        check_common_params(self.name, self.params)
        self._clip = None
        self._cache_dir: Path | None = None

    def model(self, ctx: EvalContext):
        from unifybench.models.encoders.clip import get_clip
        if self._clip is None:
            base = get_clip(resolve_backbone(self.params["backbone"], ctx, self.name),
                            device=ctx.device, dtype=ctx.dtype)
            self._clip = _derived(base, self.params["preprocess"])
            self._cache_dir = ctx.cache_dir
        return self._clip

    def concept_value(self, scores: list[SampleScore]) -> float | None:
        return clamped_concept_value(scores, self.params["clamp"])

    def environment(self) -> dict[str, Any]:
        if self._clip is None:
            return {}
        d = self._clip.describe()
        return {"backbone": d["id"], "kind": d["kind"], "files": d["files"], "preset": self.preset,
                "preprocess": self.params["preprocess"], "preprocess_detail": repr(self._clip.preprocess),
                "scale": self.params["scale"], "clamp": self.params["clamp"],
                "dtype": d["dtype"], "device": d["device"], "fingerprint": self._clip.fingerprint(self._cache_dir)}


_DERIVED: dict[tuple[int, str], Any] = {}
_DERIVED_LOCK = threading.Lock()


def _derived(clip, preprocess: str):
    """One derived model per (loaded CLIP, preprocessing), so CLIP-I and CLIP-T share its feature cache."""
    if preprocess == "checkpoint":
        return clip
    with _DERIVED_LOCK:
        key = (id(clip), preprocess)
        hit = _DERIVED.get(key)
        if hit is None or hit.model is not clip.model:
            hit = _DERIVED[key] = with_preprocess(clip, preprocess)
        return hit


class ClipImage(_ClipEvaluator):
    name = "clip_i"
    description = "CLIP-I: cosine of generated images to the concept's reference images (open_clip)"
    version = "2"
    defaults: dict[str, Any] = {"backbone": None, "aggregation": "pairwise_mean", "references": "train",
                                "preprocess": "checkpoint", "scale": 1.0, "clamp": "none", "batch_size": 32}
    presets = {
        "default": {"aggregation": "pairwise_mean", "references": "train"},
        "unifybench": {"aggregation": "pairwise_mean", "references": "train"},
        "unifybench_legacy": {"aggregation": "pairwise_mean", "references": "train",
                              "preprocess": "unictokens_legacy"},
        "yochameleon": {"aggregation": "mean_embedding", "references": "train"},
        "dreambooth": {"aggregation": "pairwise_mean", "references": "train"},
    }

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        return score_against_references(self, self.model(ctx), concept, items, predictions, ctx)


