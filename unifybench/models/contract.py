"""The declared backbone contract: what methods, baselines and the forgetting evaluators may call on a loaded
backbone, with declared defaults (no `hasattr` probing). A family's backbone subclasses `Backbone` and fills
in what it can do; a missing capability raises a one-line UserError naming it.

- ids the evaluators read: `bos_id`, `eos_id`, `eot_id`, `pad_id`, `boi_id`, `eoi_id`, `image_token_ids`
  (None where the family has no such token);
- text: `encode_text`, `decode_text`, `decode_answer` (drops end tokens and `skip`, no special tokens);
- chat: `chat_ids(prefix_ids, parts)`, one user turn from a concept-token prefix and parts (str text, an
  image, or already-encoded `list[int]`), in the family's format: its chat adapter (`<family>/chat.py`);
- generation: `generate_text(ids, max_new_tokens)` (greedy), and where the family draws
  (`can_draw`) `generate_images` / `decode_images`;
- hidden states for loglikelihoods (`has_hidden`): `forward_hidden`, `logits`;
- concept-token slots (`takes_concept_tokens`): `input_embeddings`, `output_head` and their setters.
"""
from __future__ import annotations

from typing import Any

from unifybench.errors import UserError


class Backbone:
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None
    pad_id: int | None = None
    boi_id: int | None = None
    eoi_id: int | None = None
    image_token_ids: Any = None        # tensor of image-code ids text generation must never emit, or None
    device: Any = "cpu"
    model: Any = None                  # the underlying torch module (a transformers causal LM for lm-eval's HFLM)
    tokenizer: Any = None
    can_draw: bool = False
    has_hidden: bool = False
    takes_concept_tokens: bool = False

    def _missing(self, what: str):
        raise UserError(f"{type(self).__name__} has no {what} (no adapter for this model yet)")

    # --- text ---
    def encode_text(self, text: str) -> list[int]:
        self._missing("encode_text")

    def decode_text(self, ids: list[int]) -> str:
        """Text of `ids` without special tokens."""
        if self.tokenizer is None:
            self._missing("tokenizer")
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def decode_answer(self, ids: list[int], skip: set[int] | frozenset = frozenset()) -> str:
        """A generated answer as text: end tokens and `skip` (concept tokens, self-prompting) dropped."""
        drop = set(skip) | {self.eot_id, self.eos_id}
        return self.decode_text([t for t in ids if t not in drop]).strip()

    # --- chat ---
    def chat_ids(self, prefix_ids: list[int] | None, parts: list) -> list[int]:
        self._missing("chat adapter (chat_ids)")

    def generate_text(self, ids, max_new_tokens: int, **kw) -> list[int]:
        self._missing("generate_text")

    def encode_images(self, images):
        self._missing("encode_images")

    # --- drawing ---
    def generate_images(self, *a, **kw):
        self._missing("image generation")

    def decode_images(self, codes):
        self._missing("image decoding")

    # --- hidden states ---
    def forward_hidden(self, ids, **kw):
        self._missing("forward_hidden")

    def logits(self, hidden):
        self._missing("logits")

    # --- concept-token slots ---
    def input_embeddings(self):
        self._missing("input embeddings")

    def output_head(self):
        self._missing("output head")

    def set_input_embeddings(self, module) -> None:
        self._missing("input embeddings")

    def set_output_head(self, module) -> None:
        self._missing("output head")


def require(backbone: Backbone, *capabilities: str, what: str) -> None:
    """One-line UserError unless `backbone` declares each capability flag (`has_hidden`, `can_draw`, ...)."""
    missing = [c for c in capabilities if not getattr(type(backbone), c, False)]
    if missing:
        raise UserError(f"{what} needs a backbone with {', '.join(missing)}; "
                        f"{type(backbone).__name__} has none (no adapter for this model yet)")
