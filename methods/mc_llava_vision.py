"""What MC-LLaVA reads from images, on either base model: the image inputs of a prompt, the patch features of
(masked) photos for the k-means initialisation and the visual-prompt banks, and the visual prompt itself
(confidence maps, mark positions, marks drawn on the image). See `unifybench.methods.mc_llava`.

Both adapters give the method one interface: `encode(image)`, `batch(encoded)`, `prompt_ids(text, encoded,
system)`, `forward_hidden(ids, mask, batched)`, `generate(ids, encoded, n)`, `patch_features(...)`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from unifybench.errors import UserError

ROLE_NEXT, ROLE_15 = "llava-next", "llava"   # --model roles of the two base models


class _Vision:
    """Shared: the vision tower, its input size and normalisation, patch features of padded photos."""

    def __init__(self, backbone):
        self.backbone = backbone
        cfg = backbone.model.config.vision_config
        self.size, self.patch = int(cfg.image_size), int(cfg.patch_size)
        self.grid = self.size // self.patch
        ip = backbone.processor.image_processor
        self.mean, self.std = list(ip.image_mean), list(ip.image_std)

    def _square(self, image: Image.Image, fill) -> tuple[Image.Image, tuple[int, int]]:
        """`image` centred on a square of its longer side (the code's expand2square), and the paste offset."""
        w, h = image.size
        s = max(w, h)
        out = Image.new(image.mode, (s, s), fill)
        offset = ((s - w) // 2, (s - h) // 2)
        out.paste(image, offset)
        return out, offset

    def _tower_input(self, image: Image.Image) -> torch.Tensor:
        fill = tuple(int(round(255 * m)) for m in self.mean)
        square, _ = self._square(image.convert("RGB"), fill)
        x = torch.from_numpy(np.asarray(square.resize((self.size, self.size), Image.BICUBIC), dtype=np.float32))
        x = x.permute(2, 0, 1) / 255.0
        x = (x - torch.tensor(self.mean)[:, None, None]) / torch.tensor(self.std)[:, None, None]
        return x[None].to(self.backbone.device, self.backbone.dtype)

    def clip_patches(self, image: Image.Image) -> torch.Tensor:
        """Penultimate-layer patch features [grid*grid, C] of the padded photo (CLS dropped)."""
        tower = self.backbone.model.model.vision_tower
        out = tower(self._tower_input(image), output_hidden_states=True)
        return out.hidden_states[-2][0, 1:].float()

    def _mask_patches(self, mask_path: Path) -> torch.Tensor:
        """Foreground of a mask on the patch grid: padded with 0 like the photo, nearest-resized, then each
        patch's top-left sample (F.interpolate nearest, as the code); foreground = above half the maximum."""
        with Image.open(mask_path) as m:
            mask = m.convert("L")
        square, _ = self._square(mask, 0)
        x = torch.from_numpy(np.asarray(square.resize((self.size, self.size), Image.NEAREST), dtype=np.float32))
        x = x.view(1, 1, self.size, self.size)
        top = float(x.max())
        fg = (x > top / 2).float() if top > 0 else x
        return F.interpolate(fg, size=(self.grid, self.grid), mode="nearest").flatten() > 0.5

    def patch_features(self, images, masks: dict, load_rgb, projected: bool) -> tuple[torch.Tensor, str]:
        """Pooled foreground patch features of a concept's photos (through the projector when `projected`),
        and which features they are: "masks", or the whole photo when no mask is shipped or none selects a
        patch (labelled so)."""
        if not images:
            raise UserError("mc-llava: a concept without training photos has no visual features")
        feats, kept = [], []
        for path in images:
            f = self.clip_patches(load_rgb(path))
            if projected:
                f = self.backbone.model.model.multi_modal_projector(f.to(self.backbone.dtype)).float()
            feats.append(f)
            kept.append(self._mask_patches(masks[path]) if path in masks else None)
        if all(k is None for k in kept):
            return torch.cat(feats), "whole photo (no masks)"
        chosen = [f[k] for f, k in zip(feats, kept) if k is not None]
        out = torch.cat(chosen) if chosen else torch.empty(0)
        if out.shape[0] == 0:
            return torch.cat(feats), "whole photo (masks select no patch)"
        return out, "masks"

    # --- the visual prompt ---
    def confidence_maps(self, image: Image.Image, banks: list[torch.Tensor]) -> list[torch.Tensor]:
        """One [H, W] map per concept: mean cosine of its bank to the image's patches, upsampled bilinearly to
        the padded square and cropped to the photo, then relative to the others (minus the mean of all maps,
        rescaled into the map's own range)."""
        w, h = image.size
        s = max(w, h)
        left, top = (s - w) // 2, (s - h) // 2
        patches = F.normalize(self.clip_patches(image), dim=-1)
        raw = []
        for bank in banks:
            sim = (F.normalize(bank.to(patches.device).float(), dim=-1) @ patches.t()).mean(0)
            m = sim.view(1, 1, self.grid, self.grid)
            m = F.interpolate(m, size=(self.size, self.size), mode="bilinear", align_corners=False)
            m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False)[0, 0]
            raw.append(m[top:top + h, left:left + w])
        mean = torch.stack(raw).mean(0)
        out = []
        for m in raw:
            rel = m - mean
            span = rel.max() - rel.min()
            rel = (rel - rel.min()) / span if float(span) > 0 else torch.zeros_like(rel)
            out.append(rel * (m.max() - m.min()) + m.min())
        return out


def place_marks(maps: list[torch.Tensor], tau: float, gamma: float) -> list[tuple[int, int] | None]:
    """(x, y) of each concept's maximum when more than `gamma` of its pixels exceed `tau`, else None."""
    points = []
    for m in maps:
        if int((m > tau).sum()) > gamma * m.numel():   # the fraction of pixels above tau, without rounding
            row, col = divmod(int(m.argmax()), m.shape[1])
            points.append((col, row))
        else:
            points.append(None)
    return points


def draw_marks(image: Image.Image, points: list[tuple[int, int] | None], size: int = 20) -> Image.Image:
    """The photo with mark k (1-based, in concept order) as white text on a black box (alpha 0.8), the box's
    top centre at the concept's point."""
    base = image.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=size)
    for k, p in enumerate(points, start=1):
        if p is None:
            continue
        l, t, r, b = draw.textbbox((0, 0), str(k), font=font)
        x0, y0 = p[0] - (r - l) // 2 - 2, p[1]
        draw.rectangle((x0, y0, x0 + (r - l) + 4, y0 + (b - t) + 4), fill=(0, 0, 0, 204))
        draw.text((x0 + 2 - l, y0 + 2 - t), str(k), fill=(255, 255, 255, 255), font=font)
    return Image.alpha_composite(base, layer).convert("RGB")


class LlavaNextVision(_Vision):
    """LLaVA-1.6: anyres inputs (pixel tiles + image sizes), size-dependent image runs."""

    @classmethod
    def load(cls, setting: str, ctx, dtype, token_names):
        from unifybench.models.llava_next.backbone import LlavaNextBackbone
        from unifybench.models.weights import resolve
        path = resolve(ROLE_NEXT, setting, ctx)
        return cls(LlavaNextBackbone.load(path, device=ctx.device, dtype=dtype, new_tokens=token_names,
                                          seed=ctx.seed))

    def encode(self, image: Image.Image):
        px, sizes = self.backbone.image_inputs([image])
        return px, sizes, image.size

    def batch(self, encoded):
        if not encoded:
            return None
        return self.backbone.stack_images([(px, s) for px, s, _ in encoded])

    def prompt_ids(self, text: str, encoded, system: str) -> list[int]:
        return self.backbone.prompt_ids(text, n_images=int(encoded is not None), system=system,
                                        image_sizes=[encoded[2]] if encoded is not None else [])

    def forward_hidden(self, ids, mask, batched):
        px, sizes = batched if batched is not None else (None, None)
        return self.backbone.forward_hidden(ids, attention_mask=mask, pixel_values=px, image_sizes=sizes)

    def generate(self, ids, encoded, n: int) -> list[int]:
        px, sizes = (encoded[0], encoded[1]) if encoded is not None else (None, None)
        return self.backbone.generate_text(ids, n, pixel_values=px, image_sizes=sizes)


class LlavaVision(_Vision):
    """LLaVA-1.5: one fixed-size image run (the `base_model="llava-1.5"` setting)."""

    @classmethod
    def load(cls, setting: str, ctx, dtype, token_names):
        from unifybench.models.llava.backbone import LlavaBackbone
        from unifybench.models.weights import resolve
        path = resolve(ROLE_15, setting, ctx)
        return cls(LlavaBackbone.load(path, device=ctx.device, dtype=dtype, new_tokens=token_names, seed=ctx.seed))

    def encode(self, image: Image.Image):
        return self.backbone.pixel_values([image])

    def batch(self, encoded):
        return torch.cat(list(encoded)) if encoded else None

    def prompt_ids(self, text: str, encoded, system: str) -> list[int]:
        return self.backbone.prompt_ids(text, n_images=int(encoded is not None), system=system)

    def forward_hidden(self, ids, mask, batched):
        return self.backbone.forward_hidden(ids, attention_mask=mask, pixel_values=batched)

    def generate(self, ids, encoded, n: int) -> list[int]:
        return self.backbone.generate_text(ids, n, pixel_values=encoded)
