"""LLaVA-NeXT backbone (transformers `LlavaNextForConditionalGeneration` + `LlavaNextProcessor`), for MC-LLaVA.

What differs from LLaVA-1.5 (`unifybench.models.llava`), whose vocabulary, prompt and decoding it shares:
- anyres: an image is tiled on the best grid of `image_grid_pinpoints` for its size, plus a resized overview;
  `pixel_values` is [N, patches, 3, h, w] and `image_sizes` [N, 2] (height, width) goes beside it;
- so the number of `<image>` placeholder ids depends on the image's size (spatial unpadding and one
  `image_newline` per feature row): it is measured through the processor itself, once per size.
Images of a batch with different patch counts are padded with zero patches (the model drops them using
`image_sizes`, as the processor's own padding).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from unifybench.errors import UserError
from unifybench.models.llava.backbone import SYSTEM, LlavaBackbone
from unifybench.models.local import load_pretrained, quiet_transformers

DEFAULT_ID = "llava-hf/llava-v1.6-vicuna-13b-hf"
KNOWN_IDS = {"13b": DEFAULT_ID, "7b": "llava-hf/llava-v1.6-vicuna-7b-hf"}


class LlavaNextBackbone(LlavaBackbone):
    """A loaded LLaVA-NeXT (frozen): LLaVA's token and decoding protocol, with size-dependent image runs."""

    def __init__(self, model, processor, path: Path, device: torch.device, dtype: torch.dtype):
        self._counts: dict[tuple[int, int], int] = {}
        super().__init__(model, processor, path, device, dtype)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             new_tokens: Sequence[str] = (), seed: int = 0) -> "LlavaNextBackbone":
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

        local, model, processor, _ = load_pretrained(path, LlavaNextForConditionalGeneration, AutoProcessor,
                                                     "llava_next", "LLaVA-NeXT", device, dtype, example=DEFAULT_ID)
        backbone = cls(model, processor, local, torch.device(device), dtype)
        if new_tokens:
            backbone.add_tokens(new_tokens, seed=seed)
        return backbone

    # --- images ---
    def image_token_count(self, size: tuple[int, int]) -> int:
        """`<image>` ids for an image of `size` = (width, height), as the processor expands it."""
        size = (int(size[0]), int(size[1]))
        if size not in self._counts:
            with quiet_transformers():
                out = self.processor(text="<image>", images=Image.new("RGB", size), return_tensors="pt")
            n = int((out["input_ids"] == self.image_token_id).sum())
            if n <= 0:
                raise UserError(f"{self.path}: the processor does not expand <image> into image tokens")
            self._counts[size] = n
        return self._counts[size]

    def _count_image_tokens(self) -> int:   # LLaVA's fixed count: here only the count of a square image
        return self.image_token_count((64, 64))

    def image_inputs(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values [N, patches, 3, h, w], image_sizes [N, 2] as (height, width)) of RGB images."""
        with quiet_transformers():
            out = self.processor.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        return out["pixel_values"].to(self.device, self.dtype), out["image_sizes"].to(self.device)

    @staticmethod
    def stack_images(inputs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch from per-image (pixel_values [1, P, ...], image_sizes [1, 2]); fewer patches are zero-padded."""
        most = max(px.shape[1] for px, _ in inputs)
        pixels = [torch.cat([px, px.new_zeros((1, most - px.shape[1], *px.shape[2:]))], 1) for px, _ in inputs]
        return torch.cat(pixels), torch.cat([s for _, s in inputs])

    # --- conversation ---
    def prompt_ids(self, user_text: str, n_images: int = 0, system: str | None = SYSTEM, inline_images: int = 0,
                   image_sizes: Sequence[tuple[int, int]] = ()) -> list[int]:
        """LLaVA's `<s> [system] USER: <image>\\n{user_text} ASSISTANT:`, each `<image>` expanded to the run of
        its image: `image_sizes` gives (width, height) of each of the n_images + inline_images images."""
        if len(image_sizes) != n_images + inline_images:
            raise ValueError(f"{n_images + inline_images} images need as many sizes, got {len(image_sizes)}")
        text = (system + " " if system else "") + "USER: " + "<image>" * n_images + ("\n" if n_images else "")
        text += user_text + " ASSISTANT:"
        out: list[int] = []
        sizes = list(image_sizes)
        for t in self.encode_text(text, add_bos=True):
            if t == self.image_token_id:
                if not sizes:
                    raise UserError("the prompt text holds other image markers than the images given")
                out += [t] * self.image_token_count(sizes.pop(0))
            else:
                out.append(t)
        if sizes:
            raise UserError("the prompt text holds fewer image markers than the images given")
        return out

    # --- forward ---
    def forward_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       past_key_values=None, use_cache: bool = False, pixel_values: torch.Tensor | None = None,
                       image_sizes: torch.Tensor | None = None):
        out = self.model.model(input_ids=input_ids, pixel_values=pixel_values, image_sizes=image_sizes,
                               attention_mask=attention_mask, cache=past_key_values, use_cache=use_cache)
        return out.last_hidden_state, out.cache   # transformers' `cache` (5.x: `past_key_values` is deprecated)

    @torch.no_grad()
    def generate_text(self, input_ids: torch.Tensor, max_new_tokens: int = 30,
                      pixel_values: torch.Tensor | None = None, banned: Sequence[int] = (),
                      image_sizes: torch.Tensor | None = None) -> list[int]:
        """Greedy continuation of one sequence [1, T]; returns the new ids without the stop token."""
        ids = torch.as_tensor(input_ids).to(self.device)
        if ids.dim() == 1:
            ids = ids[None]
        ban = torch.tensor([self.image_token_id, *banned], device=self.device)
        new: list[int] = []
        past, step, px, sizes = None, ids, pixel_values, image_sizes
        for _ in range(max_new_tokens):
            hidden, past = self.forward_hidden(step, past_key_values=past, use_cache=True, pixel_values=px,
                                               image_sizes=sizes)
            px = sizes = None
            scores = self.logits(hidden[:, -1]).float()
            scores[:, ban] = float("-inf")
            token = int(scores.argmax(-1))
            if token == self.eos_id:
                break
            new.append(token)
            step = torch.tensor([[token]], device=self.device)
        return new

