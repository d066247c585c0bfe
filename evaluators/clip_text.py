"""CLIP-T: how well each generated image matches its prompt, in a CLIP image-text space.

One sample per generated image (`"<item id>#<k>"`): the cosine between the image's CLIP features and the
features of the item's prompt with the concept placeholder `<sks>` replaced by the concept's class noun
("<sks> in the jungle" -> "dog in the jungle", as UniCTokens eval/clip_eval.py does with
`prompt.replace('<sks>', info['class'])`). Encoding a learned or rare identifier would measure nothing.
Texts longer than the text encoder's context are truncated to it (open_clip keeps the end token; HF
tokenizers truncate at `max_position_embeddings`).

Params (shared with CLIP-I, see `clip_image`): backbone, preprocess (checkpoint | unictokens_legacy),
scale (1 raw | 100 torchmetrics | 2.5 CLIPScore), clamp (none | per_sample | mean), batch_size, and
  placeholder_to_class  True (default): replace the placeholder by the class noun; False: encode the
                        prompt verbatim, placeholder included (only to replicate scripts that forgot).
Presets: unifybench / yochameleon / dreambooth report the raw cosine without clamping (UniCTokens
clip_eval.py line 150; DreamBooth reports CLIP-T around 0.305); unifybench_legacy adds UniCTokens' [0.5, 1]
pixel squeeze; torchmetrics (100 x cos, mean clamped at 0) and clipscore (2.5 x max(cos, 0), Hessel et al.)
are the usual CLIPScore conventions, never to be compared with the raw cosine.

The image features come from the same loaded model (`get_clip`) and the same in-process feature cache as
CLIP-I, so scoring both embeds every generated image once.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from unifybench.data.schema import Concept, Item, Prediction
from unifybench.prompts import with_class_noun
from unifybench.evaluators.base import EvalContext, SampleScore
from unifybench.evaluators.clip_image import _ClipEvaluator
from unifybench.evaluators.image_similarity import apply_scale_clamp, collect_generated, embed_files

_TEXT_FEATURES: dict[tuple[str, str], Any] = {}
_TEXT_LOCK = threading.Lock()


def prompt_text(prompt: str, concept: Concept, placeholder_to_class: bool = True) -> str:
    """The text CLIP-T encodes for `prompt`: the placeholder becomes the class noun (or stays as it is)."""
    if not placeholder_to_class:
        return prompt
    return with_class_noun(prompt, concept.class_noun)


class ClipText(_ClipEvaluator):
    name = "clip_t"
    version = "1"
    defaults: dict[str, Any] = {
        "backbone": None,                  # CLIP checkpoint folder or "tiny"; unset: --model clip=, tiny in tiny runs
        "preprocess": "checkpoint",        # "checkpoint" eval transform | "unictokens_legacy" pixel squeeze
        "scale": 1.0,                      # multiplies the cosine: 1 raw, 100 torchmetrics, 2.5 CLIPScore
        "clamp": "none",                   # "none" | "per_sample": max(cos, 0) | "mean": the concept mean at >= 0
        "placeholder_to_class": True,      # the prompt's <sks> becomes the class noun before encoding
        "batch_size": 32,                  # images per encoder forward pass
    }
    presets = {
        "default": {},
        "unifybench": {},
        "unifybench_legacy": {"preprocess": "unictokens_legacy"},
        "yochameleon": {},
        "dreambooth": {},
        "torchmetrics": {"scale": 100.0, "clamp": "mean"},
        "clipscore": {"scale": 2.5, "clamp": "per_sample"},
    }

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        v = self.params["placeholder_to_class"]
        if isinstance(v, str):
            self.params["placeholder_to_class"] = v.strip().lower() not in ("0", "false", "no", "off")

    def text_features(self, clip, texts: list[str], ctx: EvalContext) -> dict[str, Any]:
        """text -> [D] features, each distinct text encoded once per model (in-process cache)."""
        fp = clip.fingerprint(ctx.cache_dir)
        with _TEXT_LOCK:
            known = {t: _TEXT_FEATURES[(fp, t)] for t in texts if (fp, t) in _TEXT_FEATURES}
        missing = sorted({t for t in texts if t not in known})
        if missing:
            feats = clip.encode_texts(missing, batch_size=max(self.params["batch_size"], 64))
            with _TEXT_LOCK:
                for t, f in zip(missing, feats):
                    _TEXT_FEATURES[(fp, t)] = known[t] = f.clone()
        return known

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        import torch
        clip = self.model(ctx)
        p = self.params
        out, pending = collect_generated(concept, items, predictions, self.tasks)
        if not pending:
            return out
        feats, errors = embed_files(clip, [Path(ctx.run_dir) / rel for _, _, rel in pending], ctx.cache_dir,
                                    p["batch_size"])
        ok = []
        for (sample, item, _), f, err in zip(pending, feats, errors):
            if err is not None:
                sample.failed = err
            else:
                ok.append((sample, prompt_text(item.prompt, concept, p["placeholder_to_class"]), f))
        if not ok:
            return out
        texts = self.text_features(clip, [t for _, t, _ in ok], ctx)
        img = torch.nn.functional.normalize(torch.stack([f for _, _, f in ok]).double(), dim=-1)
        txt = torch.nn.functional.normalize(torch.stack([texts[t] for _, t, _ in ok]).double(), dim=-1)
        cos = (img * txt).sum(dim=-1).tolist()
        for (sample, text, _), v in zip(ok, apply_scale_clamp(cos, p["scale"], p["clamp"])):
            sample.score = float(v)
            sample.detail["text"] = text
        return out
