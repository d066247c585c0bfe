"""LLaVA backbone (stock transformers `LlavaForConditionalGeneration` + `LlavaProcessor`) for Yo'LLaVA and TP.

The same protocol as `ChameleonBackbone` (input_embeddings/output_head and their setters, forward_hidden,
logits, generate_text, encode_text, token_id, weight_files), plus what LLaVA needs:
- images enter as `pixel_values` beside the ids: an image is `image_seq_length` copies of the `<image>` id in
  the sequence (what `LlavaProcessor` expands `<image>` to), and LLaVA scatters the projected vision features
  into those positions;
- LLaVA has no reserved vocabulary rows, so new tokens (`<sks>`, `<token0>`, ...) are added ONCE at load
  (`new_tokens=`): the tokenizer learns them and the embedding and head are resized; the base rows stay
  bit-identical and the new rows get a seeded initialisation (mean + std * N(0, 1) of the base rows, per
  dimension), so two loads give the same model.
Nothing is downloaded: a local directory or an existing HF cache snapshot (`resolve_model_path`).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from unifybench.errors import UserError
from unifybench.models.local import TransformersBackbone, load_pretrained, quiet_transformers

DEFAULT_ID = "llava-hf/llava-1.5-13b-hf"
KNOWN_IDS = {"13b": "llava-hf/llava-1.5-13b-hf", "7b": "llava-hf/llava-1.5-7b-hf"}
# The llava_v1 conversation (Yo'LLaVA's template): a system line, then "USER: ... ASSISTANT:".
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")


class LlavaBackbone(TransformersBackbone):
    has_hidden = takes_concept_tokens = True
    """A loaded LLaVA (frozen), its processor, and the ids the methods need."""

    def __init__(self, model, processor, path: Path, device: torch.device, dtype: torch.dtype):
        super().__init__(model, processor, path, device, dtype)
        cfg = model.config
        self.hidden_size = cfg.text_config.hidden_size
        tok = self.tokenizer
        self.bos_id = tok.bos_token_id if tok.bos_token_id is not None else cfg.text_config.bos_token_id
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else cfg.text_config.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else getattr(cfg, "pad_token_id", None)
        self.pad_id = pad if pad is not None else self.eos_id
        self.image_token_id = int(cfg.image_token_index if hasattr(cfg, "image_token_index") else cfg.image_token_id)
        self.image_seq_length = self._count_image_tokens()
        self.added_tokens: list[str] = []
        self.base_vocab_size = self.input_embeddings().weight.shape[0]

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
             new_tokens: Sequence[str] = (), seed: int = 0) -> "LlavaBackbone":
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        local, model, processor, _ = load_pretrained(path, LlavaForConditionalGeneration, AutoProcessor, "llava",
                                                     "LLaVA", device, dtype, example=DEFAULT_ID)
        backbone = cls(model, processor, local, torch.device(device), dtype)
        if new_tokens:
            backbone.add_tokens(new_tokens, seed=seed)
        return backbone

    # --- vocabulary ---
    def add_tokens(self, names: Sequence[str], seed: int = 0) -> list[int]:
        """Add `names` as new (normal, not special) tokens and resize the embedding and head once.

        Allowed once per loaded model; calling again with the same names is a no-op returning their ids."""
        names = list(names)
        if self.added_tokens:
            if names != self.added_tokens:
                raise UserError(f"{self.path}: tokens {self.added_tokens} were already added; load the backbone "
                                f"again to add {names}")
            return [self.token_id(n) for n in names]
        vocab = self.tokenizer.get_vocab()
        clash = [n for n in names if n in vocab]
        if clash:
            raise UserError(f"token {clash[0]!r} is already in the tokenizer of {self.path}")
        self.tokenizer.add_tokens(names)
        ids = [self.token_id(n) for n in names]
        emb, head = self.input_embeddings(), self.output_head()
        old_emb, old_head = emb.weight.detach().clone(), head.weight.detach().clone()
        n_old = old_emb.shape[0]
        if ids != list(range(n_old, n_old + len(names))):
            raise UserError(f"{self.path}: tokenizer gave the new tokens ids {ids}, expected them after the "
                            f"{n_old} embedding rows")
        with quiet_transformers():
            self.model.resize_token_embeddings(n_old + len(names), mean_resizing=False)
        emb, head = self.input_embeddings(), self.output_head()
        with torch.no_grad():
            emb.weight[:n_old] = old_emb            # bit-identical base rows, whatever resize did
            head.weight[:n_old] = old_head
            for matrix, base in ((emb.weight, old_emb), (head.weight, old_head)):
                mean, std = base.float().mean(0), base.float().std(0)
                for i, name in enumerate(names):
                    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
                    row = mean.cpu() + std.cpu() * torch.randn(mean.shape, generator=g)
                    matrix[n_old + i] = row.to(matrix.device, matrix.dtype)
        self.model.requires_grad_(False)
        self.added_tokens = names
        return ids

    def token_id(self, name: str) -> int:
        vocab = self.tokenizer.get_vocab()
        if name not in vocab:
            raise UserError(f"token {name!r} is not in the tokenizer of {self.path}")
        return int(vocab[name])

    def encode_text(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return ([self.bos_id] if add_bos else []) + ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    # --- conversation ---
    def prompt_ids(self, user_text: str, n_images: int = 0, system: str | None = SYSTEM,
                   inline_images: int = 0) -> list[int]:
        """`<s> [system] USER: <image>xN\\n{user_text} ASSISTANT:` with each `<image>` expanded to its
        `image_seq_length` placeholder ids (what the processor does). With `inline_images` = M the user
        text itself places M `<image>` markers (interleaved prompts such as RAP's); no others may occur."""
        text = (system + " " if system else "") + "USER: " + "<image>" * n_images + ("\n" if n_images else "")
        text += user_text + " ASSISTANT:"
        ids = self.encode_text(text, add_bos=True)
        out: list[int] = []
        for t in ids:
            out += [t] * self.image_seq_length if t == self.image_token_id else [t]
        if out.count(self.image_token_id) != (n_images + inline_images) * self.image_seq_length:
            raise UserError("the prompt text holds other image markers than the images given")
        return out

    # --- images ---
    def _count_image_tokens(self) -> int:
        """How many `<image>` ids one image expands to, measured through the processor itself."""
        image = Image.new("RGB", (64, 64))
        with quiet_transformers():
            out = self.processor(text=self.processor.image_token if hasattr(self.processor, "image_token")
                                 else "<image>", images=image, return_tensors="pt")
        n = int((out["input_ids"] == self.image_token_id).sum())
        if n <= 0:
            raise UserError(f"{self.path}: the processor does not expand <image> into image tokens")
        return n

    def pixel_values(self, images: Sequence[Image.Image]) -> torch.Tensor:
        px = self.processor.image_processor(images=[im.convert("RGB") for im in images],
                                            return_tensors="pt")["pixel_values"]
        return px.to(self.device, self.dtype)

    # --- modules that concept tokens replace ---
    def input_embeddings(self):
        return self.model.model.language_model.embed_tokens

    def set_input_embeddings(self, module) -> None:
        self.model.model.language_model.embed_tokens = module

    def output_head(self):
        return self.model.lm_head

    def set_output_head(self, module) -> None:
        self.model.lm_head = module

    # --- forward ---
    def forward_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       past_key_values=None, use_cache: bool = False, pixel_values: torch.Tensor | None = None):
        """Last hidden states [B, T, H] and the KV cache; `pixel_values` [N, 3, H, W] fill the N images'
        placeholder runs, in order over the batch."""
        out = self.model.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                               past_key_values=past_key_values, use_cache=use_cache)
        return out.last_hidden_state, out.past_key_values

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(hidden)

    @torch.no_grad()
    def generate_text(self, input_ids: torch.Tensor, max_new_tokens: int = 30,
                      pixel_values: torch.Tensor | None = None, banned: Sequence[int] = ()) -> list[int]:
        """Greedy continuation of one sequence [1, T]; returns the new ids without the stop token."""
        ids = torch.as_tensor(input_ids).to(self.device)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.shape[0] != 1:
            raise ValueError("generate_text decodes one sequence; got batch size %d" % ids.shape[0])
        ban = torch.tensor([self.image_token_id, *banned], device=self.device)
        new: list[int] = []
        past, step, px = None, ids, pixel_values
        for _ in range(max_new_tokens):
            hidden, past = self.forward_hidden(step, past_key_values=past, use_cache=True, pixel_values=px)
            px = None
            scores = self.logits(hidden[:, -1]).float()
            scores[:, ban] = float("-inf")
            token = int(scores.argmax(-1))
            if token == self.eos_id:
                break
            new.append(token)
            step = torch.tensor([[token]], device=self.device)
        return new
