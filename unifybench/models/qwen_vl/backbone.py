"""Qwen2.5-VL backbone (stock transformers `Qwen2_5_VLForConditionalGeneration` + its `AutoProcessor`) for TP.

Used as is, for understanding only (UniCTokens Table 1/2 "Qwen2.5-VL + TP", the 3B Instruct model):
- one conversation per request through the processor's own chat template: a system turn (Qwen's default
  "You are a helpful assistant.") and one user turn holding the images first, then the text, then the
  assistant header (`add_generation_prompt=True`); the processor expands each `<|image_pad|>` to the image's
  merged patch count and supplies `pixel_values` / `image_grid_thw` (M-RoPE positions are the model's own);
- greedy decoding through `generate` with every sampling knob pinned (no sampling, one beam, no repetition
  penalty: the hub `generation_config.json` asks for sampling), stopping at `<|im_end|>` / `<|endoftext|>`;
  only the new tokens are decoded, special tokens skipped. The image/video placeholders are never emitted.
Nothing is downloaded: a local directory or an existing HF cache snapshot (`resolve_model_path`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from unifybench.errors import UserError
from unifybench.models.local import TransformersBackbone, load_pretrained, quiet_transformers

DEFAULT_ID = "Qwen/Qwen2.5-VL-3B-Instruct"     # UniCTokens Tables 1-2: "Qwen2.5-VL + TP", 3B
KNOWN_IDS = {"3b": DEFAULT_ID, "7b": "Qwen/Qwen2.5-VL-7B-Instruct"}
SYSTEM = "You are a helpful assistant."        # the default system turn of Qwen2.5-VL's chat template
ROLE = "qwen"                                  # `--model qwen=PATH`


class QwenVLBackbone(TransformersBackbone):
    """A loaded Qwen2.5-VL (frozen, eval), its processor, and the ids the runner needs."""

    def __init__(self, model, processor, path: Path, device: torch.device, dtype: torch.dtype):
        super().__init__(model, processor, path, device, dtype)
        cfg = model.config
        self.image_token_id = int(cfg.image_token_id)
        self.video_token_id = int(cfg.video_token_id)
        self.vision_start_id = int(cfg.vision_start_token_id)
        self.vision_end_id = int(cfg.vision_end_token_id)
        vocab = self.tokenizer.get_vocab()
        for name in ("<|im_start|>", "<|im_end|>"):
            if name not in vocab:
                raise UserError(f"{self.path}: the tokenizer has no {name} token (not a Qwen chat tokenizer)")
        self.im_start_id, self.im_end_id = vocab["<|im_start|>"], vocab["<|im_end|>"]
        stops = model.generation_config.eos_token_id
        stops = [stops] if isinstance(stops, int) else list(stops or [])
        for extra in (self.im_end_id, self.tokenizer.eos_token_id, vocab.get("<|endoftext|>")):
            if extra is not None and extra not in stops:
                stops.append(extra)
        self.stop_ids = [int(s) for s in stops]
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.stop_ids[-1]
        if getattr(processor, "chat_template", None) is None:
            raise UserError(f"{self.path}: the processor has no chat template (chat_template.json/.jinja)")

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> "QwenVLBackbone":
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        local, model, processor, _ = load_pretrained(path, Qwen2_5_VLForConditionalGeneration, AutoProcessor,
                                                     "qwen2_5_vl", "Qwen2.5-VL", device, dtype, example=DEFAULT_ID)
        return cls(model, processor, local, torch.device(device), dtype)

    # --- text ---
    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    # --- conversation ---
    def messages(self, text: str, n_images: int = 0, system: str | None = SYSTEM) -> list[dict]:
        """System turn + one user turn: `n_images` image parts first, then the text."""
        user = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        out = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system is not None else []
        return out + [{"role": "user", "content": user}]

    def chat_prompt(self, text: str, n_images: int = 0, system: str | None = SYSTEM) -> str:
        """The chat-template text ending with the assistant header; one `<|image_pad|>` per image (the
        processor expands it)."""
        return self.processor.apply_chat_template(self.messages(text, n_images, system), tokenize=False,
                                                  add_generation_prompt=True)

    def inputs(self, text: str, images: Sequence[Image.Image] = (), system: str | None = SYSTEM):
        """The processor's model inputs (input_ids, attention_mask, pixel_values, image_grid_thw, ...)."""
        prompt = self.chat_prompt(text, len(images), system)
        if prompt.count(self.processor.image_token) != len(images):
            raise UserError("the prompt text itself contains Qwen's image placeholder token")
        with quiet_transformers():
            batch = self.processor(text=[prompt], images=[im.convert("RGB") for im in images] or None,
                                   return_tensors="pt")
        batch = batch.to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.dtype)
        return batch

    def greedy_config(self, max_new_tokens: int):
        from transformers import GenerationConfig
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, temperature=1.0,
                                top_k=None, top_p=1.0, repetition_penalty=1.0, eos_token_id=self.stop_ids,
                                pad_token_id=self.pad_id, suppress_tokens=[self.image_token_id, self.video_token_id])

    @torch.no_grad()
    def generate_ids(self, text: str, images: Sequence[Image.Image] = (), max_new_tokens: int = 30,
                     system: str | None = SYSTEM) -> list[int]:
        """Greedy new ids for one request (without the prompt; a final stop id included if one was produced)."""
        batch = self.inputs(text, images, system)
        with quiet_transformers():
            config = self.greedy_config(max_new_tokens)
            out = self.model.generate(**batch, generation_config=config)
        return out[0, batch["input_ids"].shape[1]:].tolist()

    def answer(self, text: str, images: Sequence[Image.Image] = (), max_new_tokens: int = 30,
               system: str | None = SYSTEM) -> str:
        """Greedy text answer to one user turn (images first, then `text`), new tokens only."""
        if max_new_tokens <= 0:
            return ""
        return self.decode(self.generate_ids(text, images, max_new_tokens, system))
