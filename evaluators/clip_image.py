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
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore, resolve_weights, weights_need
from unifybench.evaluators.image_similarity import check_common_params, clamped_concept_value, score_against_references

if TYPE_CHECKING:
    import torch

PREPROCESS = ("checkpoint", "unictokens_legacy")
LEGACY_SIDE = 512   # UniCTokens eval/clip_eval.py: short side 512, centre crop 512, before CLIP's own transform


def _missing_clip(evaluator: str) -> str:
    return (f"{evaluator} needs a local CLIP checkpoint: pass --model clip=PATH (an open_clip folder "
            f"with open_clip_config.json, an HF CLIP folder, or ARCH:/path/to/weights, e.g. "
            f"ViT-B-32-quickgelu:/ckpt/openai.bin), or run the tiny preset; nothing is downloaded")


def resolve_backbone(backbone: str | None, ctx: EvalContext, evaluator: str) -> Path | str:
    """The CLIP checkpoint an evaluator uses: its param, the run's `clip` model, or the tiny one."""
    return resolve_weights(backbone, ctx, "clip", _missing_clip(evaluator))


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
        if self.params.get("preprocess", "checkpoint") not in PREPROCESS:
            raise UserError(f"{self.name}: unknown preprocess {self.params['preprocess']!r} (known: {', '.join(PREPROCESS)})")
        self._clip = None
        self._cache_dir: Path | None = None

    def needs(self, ctx: EvalContext, concepts) -> list:
        return [weights_need(self.params["backbone"], ctx, "clip", _missing_clip(self.name), self.name)]

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
    version = "2"
    defaults: dict[str, Any] = {
        "backbone": None,                  # CLIP checkpoint folder or "tiny"; unset: --model clip=, tiny in tiny runs
        "aggregation": "pairwise_mean",    # "pairwise_mean" over references | "mean_embedding" (Yo'Chameleon)
        "references": "train",             # the concept photos compared with: "train" | "test"
        "preprocess": "checkpoint",        # "checkpoint" eval transform | "unictokens_legacy" pixel squeeze
        "scale": 1.0,                      # multiplies the cosine: 1 raw, 100 torchmetrics, 2.5 CLIPScore
        "clamp": "none",                   # "none" | "per_sample": max(cos, 0) | "mean": the concept mean at >= 0
        "batch_size": 32,                  # images per encoder forward pass
    }
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


