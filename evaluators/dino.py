"""DINO: how much each generated image looks like the concept's real photos, in DINO ViT-S/16 space.

DreamBooth's subject-fidelity metric (§4.1): the self-supervised ViT-S/16 separates same-class subjects
better than CLIP. One sample per generated image (`"<item id>#<k>"`): the mean over the reference images of
the cosine between CLS features (the last hidden state's CLS token, never the pooler), after DINO's eval
transform (bicubic resize 256, centre crop 224, ImageNet normalisation). See `unifybench.models.encoders.dino`.

Params:
  backbone     a local transformers ViT folder (facebook/dino-vits16 layout), or "tiny"; unset: the run's
               `--model dino=PATH`, else the tiny random ViT in tiny runs, else an error.
  aggregation  "pairwise_mean" (DreamBooth) or "mean_embedding" (cosine to the mean reference feature).
  references   "train" or "test".   scale, clamp, batch_size: as CLIP-I.
UniCTokens reports a DINO column but ships no DINO code, so `unifybench` is the DreamBooth protocol too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, Concept, Item, Prediction
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore, resolve_weights, weights_need
from unifybench.evaluators.image_similarity import check_common_params, clamped_concept_value, score_against_references


MISSING = ("dino needs a local DINO ViT-S/16 checkpoint: pass --model dino=PATH (a transformers folder in the "
           "facebook/dino-vits16 layout: config.json + model.safetensors), or run the tiny preset; nothing is "
           "downloaded")


def resolve_dino(backbone: str | None, ctx: EvalContext) -> Path | str:
    """The DINO checkpoint: the `backbone` param, the run's `dino` model, or the tiny one in tiny runs."""
    return resolve_weights(backbone, ctx, "dino", MISSING)


class Dino(Evaluator):
    name = "dino"
    version = "1"
    tasks = frozenset({GEN, KNOWLEDGE_GEN})
    higher_is_better = True
    needs_service = False
    defaults: dict[str, Any] = {
        "backbone": None,                  # DINO ViT folder or "tiny"; unset: --model dino=, tiny in tiny runs
        "aggregation": "pairwise_mean",    # "pairwise_mean" over references | "mean_embedding"
        "references": "train",             # the concept photos compared with: "train" | "test"
        "scale": 1.0,                      # multiplies the cosine: 1 raw, 100 torchmetrics, 2.5 CLIPScore
        "clamp": "none",                   # "none" | "per_sample": max(cos, 0) | "mean": the concept mean at >= 0
        "batch_size": 32,                  # images per encoder forward pass
    }
    presets = {
        "default": {"aggregation": "pairwise_mean", "references": "train"},
        "unifybench": {"aggregation": "pairwise_mean", "references": "train"},
        "dreambooth": {"aggregation": "pairwise_mean", "references": "train"},
    }

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        check_common_params(self.name, self.params)
        self._dino = None
        self._cache_dir: Path | None = None

    def needs(self, ctx: EvalContext, concepts) -> list:
        return [weights_need(self.params["backbone"], ctx, "dino", MISSING, self.name)]

    def model(self, ctx: EvalContext):
        from unifybench.models.encoders.dino import get_dino
        if self._dino is None:
            self._dino = get_dino(resolve_dino(self.params["backbone"], ctx), device=ctx.device, dtype=ctx.dtype)
            self._cache_dir = ctx.cache_dir
        return self._dino

    def environment(self) -> dict[str, Any]:
        if self._dino is None:
            return {}
        d = self._dino.describe()
        return {"backbone": d["id"], "files": d["files"], "feature": d["feature"], "preset": self.preset,
                "preprocess": d["preprocess"], "dtype": d["dtype"], "device": d["device"],
                "fingerprint": self._dino.fingerprint(self._cache_dir)}

    def concept_value(self, scores: list[SampleScore]) -> float | None:
        return clamped_concept_value(scores, self.params["clamp"])

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        return score_against_references(self, self.model(ctx), concept, items, predictions, ctx)
