"""CLIP-I: how much each generated image looks like the concept's real photos, in a CLIP image space.

One sample per generated image (`"<item id>#<k>"`). Params:
  backbone     a local CLIP checkpoint (see `unifybench.models.clip.load_clip`), or "tiny" for the random
               tiny CLIP; unset: the run's `--model clip=...`, else the tiny CLIP in tiny runs, else an error.
  aggregation  "pairwise_mean": mean over reference images of the cosine between L2-normalised features
               (DreamBooth, UniCTokens eval/clip_eval.py); "mean_embedding": cosine to the mean of the
               UN-normalised reference features (Yo'Chameleon evaluation/clip_image_similarity.py).
  references   "train" (the concept's training photos, as all three papers do) or "test".
  scale        multiplies the raw cosine (1.0 = raw, as the papers report; 100 = torchmetrics style).
An image that cannot be loaded, or a prediction with an error, is a failed sample (counted), never a 0.
The backbone, its dtype and device change the numbers: compare only rows with the same ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore

if TYPE_CHECKING:
    import torch

AGGREGATIONS = ("pairwise_mean", "mean_embedding")
REFERENCES = ("train", "test")


def resolve_backbone(backbone: str | None, ctx: EvalContext, evaluator: str) -> Path | str:
    """The CLIP checkpoint an evaluator uses: its param, the run's `clip` model, or the tiny one."""
    from unifybench.models.clip import tiny_clip_path
    if backbone == "tiny":
        return tiny_clip_path(ctx.cache_dir)
    if backbone:
        return backbone
    if ctx.models.get("clip"):
        return ctx.models["clip"]
    if ctx.tiny:
        return tiny_clip_path(ctx.cache_dir)
    raise UserError(f"{evaluator} needs a local CLIP checkpoint: pass --model clip=PATH (an open_clip folder with "
                    f"open_clip_config.json, an HF CLIP folder, or ARCH:/path/to/weights, e.g. "
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


class ClipImage(Evaluator):
    name = "clip_i"
    description = "CLIP-I: cosine of generated images to the concept's reference images (open_clip)"
    version = "1"
    tasks = frozenset({GEN, KNOWLEDGE_GEN})
    higher_is_better = True
    needs_service = False
    defaults: dict[str, Any] = {"backbone": None, "aggregation": "pairwise_mean", "references": "train",
                                "scale": 1.0, "batch_size": 32}
    presets = {
        "default": {"aggregation": "pairwise_mean", "references": "train"},
        "unifybench": {"aggregation": "pairwise_mean", "references": "train"},
        "yochameleon": {"aggregation": "mean_embedding", "references": "train"},
        "dreambooth": {"aggregation": "pairwise_mean", "references": "train"},
    }

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        p = self.params
        if p["aggregation"] not in AGGREGATIONS:
            raise UserError(f"clip_i: unknown aggregation {p['aggregation']!r} (known: {', '.join(AGGREGATIONS)})")
        if p["references"] not in REFERENCES:
            raise UserError(f"clip_i: unknown references {p['references']!r} (known: {', '.join(REFERENCES)})")
        try:
            p["scale"] = float(p["scale"])
            p["batch_size"] = int(p["batch_size"])
        except (TypeError, ValueError):
            raise UserError("clip_i: scale must be a number and batch_size an integer") from None
        if p["batch_size"] < 1:
            raise UserError("clip_i: batch_size must be >= 1")
        self._clip = None
        self._cache_dir: Path | None = None

    def model(self, ctx: EvalContext):
        from unifybench.models.clip import get_clip
        if self._clip is None:
            self._clip = get_clip(resolve_backbone(self.params["backbone"], ctx, self.name),
                                  device=ctx.device, dtype=ctx.dtype)
            self._cache_dir = ctx.cache_dir
        return self._clip

    def environment(self) -> dict[str, Any]:
        if self._clip is None:
            return {}
        return {"clip": {**self._clip.describe(), "fingerprint": self._clip.fingerprint(self._cache_dir)}}

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        import torch

        from unifybench.models.clip import embed_images_cached, load_rgb
        clip = self.model(ctx)
        refs = list(concept.train_images if self.params["references"] == "train" else concept.test_images)
        out: list[SampleScore] = []
        pending: list[tuple[SampleScore, torch.Tensor]] = []   # loaded and preprocessed once
        for item in items:
            if item.task not in self.tasks:
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
                try:
                    pixels = clip.preprocess(load_rgb(Path(ctx.run_dir) / rel))
                except Exception as e:   # unreadable, truncated, not an image
                    sample.failed = f"cannot load image {rel}: {type(e).__name__}: {e}"
                    continue
                pending.append((sample, pixels))
        if not pending:
            return out
        if not refs:
            for sample, _ in pending:
                sample.failed = f"concept has no {self.params['references']} reference images"
            return out
        ref_feats = embed_images_cached(clip, refs, ctx.cache_dir, batch_size=self.params["batch_size"])
        bs = self.params["batch_size"]
        feats = torch.cat([clip.encode_pixels(torch.stack([px for _, px in pending[i:i + bs]]))
                           for i in range(0, len(pending), bs)])
        values = cosine_scores(feats, ref_feats, self.params["aggregation"]) * self.params["scale"]
        for (sample, _), v in zip(pending, values.tolist()):
            sample.score = float(v)
            sample.detail["n_references"] = len(refs)
        return out
