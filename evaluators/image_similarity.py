"""Image similarity shared by CLIP-I, CLIP-T, DINO and face: which generated images a concept has (failed
predictions kept as failed samples), image features computed once per file content, cosine scores against
reference features (pairwise mean or mean embedding), scale and clamp, and the per-concept value.

An image that cannot be loaded, or a prediction with an error, is a failed sample (counted), never a 0.
Each encoder's own code (weights, preprocessing) stays in its evaluator; this module only needs a model
with `preprocess`, `encode_images` and a `fingerprint`.
"""
from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore
from unifybench.images import to_rgb

if TYPE_CHECKING:
    import torch

AGGREGATIONS = ("pairwise_mean", "mean_embedding")
REFERENCES = ("train", "test")
CLAMPS = ("none", "per_sample", "mean")


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
# Shared by CLIP-I, CLIP-T, DINO and face: parameter checks, generated-image collection and embedding
# ------------------------------------------------------------------------------------------------------
def check_common_params(name: str, p: dict[str, Any]) -> None:
    """Validate (in place) the parameters the image-similarity evaluators share."""
    if "aggregation" in p and p["aggregation"] not in AGGREGATIONS:
        raise UserError(f"{name}: unknown aggregation {p['aggregation']!r} (known: {', '.join(AGGREGATIONS)})")
    if "references" in p and p["references"] not in REFERENCES:
        raise UserError(f"{name}: unknown references {p['references']!r} (known: {', '.join(REFERENCES)})")
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
                rgb = to_rgb(im, path)   # 16-bit greyscale scaled to 8 bits, never clipped to white
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
