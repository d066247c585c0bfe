"""Concept tokens: the new rows of the input embedding and the output head, as their own parameters.

The reference implementations hand the whole 65k-row embedding and lm_head matrices to AdamW and copy
the untouched rows back after every step, so gradients and optimizer state scale with the vocabulary.
Here the base matrices stay frozen (bit-identical) and two small wrappers splice the concept rows in:
gradients and optimizer state scale with the number of new tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from unifybench.errors import UserError

FORMAT = "unifybench.concept_tokens/1"


class ConceptTokens(nn.Module):
    """Rows for `token_ids` in the input embedding (all of them) and the output head (`head_ids`)."""

    def __init__(self, token_ids: list[int], embed_rows: torch.Tensor, head_ids: list[int],
                 head_rows: torch.Tensor, head_bias: torch.Tensor | None = None,
                 token_names: list[str] | None = None):
        super().__init__()
        if len(token_ids) != embed_rows.shape[0] or len(head_ids) != head_rows.shape[0]:
            raise ValueError("one row per token id")
        if not set(head_ids) <= set(token_ids):
            raise ValueError("head_ids must be a subset of token_ids")
        self.token_names = list(token_names) if token_names else [str(i) for i in token_ids]
        self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long), persistent=False)
        self.register_buffer("head_ids", torch.tensor(head_ids, dtype=torch.long), persistent=False)
        self.embed = nn.Parameter(embed_rows.detach().clone().float())
        self.head = nn.Parameter(head_rows.detach().clone().float())
        self.head_bias = None if head_bias is None else nn.Parameter(head_bias.detach().clone().float())
        self._lookup: torch.Tensor | None = None

    @classmethod
    def from_base(cls, embedding: nn.Embedding, head: nn.Linear, token_ids: list[int],
                  head_ids: list[int], token_names: list[str] | None = None) -> "ConceptTokens":
        """Initialise from the base model's existing rows (e.g. Chameleon's reserved tokens)."""
        ids = torch.tensor(token_ids, device=embedding.weight.device)
        hids = torch.tensor(head_ids, device=head.weight.device)
        bias = head.bias[hids] if getattr(head, "bias", None) is not None else None
        return cls(token_ids, embedding.weight[ids].cpu(), head_ids, head.weight[hids].cpu(),
                   None if bias is None else bias.cpu(), token_names)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Index into `embed` for each id, -1 where the id is not a concept token."""
        size = int(max(int(ids.max()) if ids.numel() else 0, int(self.token_ids.max()))) + 1
        if self._lookup is None or self._lookup.numel() < size or self._lookup.device != ids.device:
            table = torch.full((size,), -1, dtype=torch.long, device=ids.device)
            table[self.token_ids.to(ids.device)] = torch.arange(len(self.token_ids), device=ids.device)
            self._lookup = table
        return self._lookup[ids]

    # --- persistence: safetensors + a small JSON header; never pickle ---
    def save(self, path: str | Path, header: dict) -> None:
        tensors = {"embed": self.embed.detach().cpu().contiguous(),
                   "head": self.head.detach().cpu().contiguous(),
                   "token_ids": self.token_ids.cpu(), "head_ids": self.head_ids.cpu()}
        if self.head_bias is not None:
            tensors["head_bias"] = self.head_bias.detach().cpu().contiguous()
        meta = dict(header, format=FORMAT, token_names=self.token_names)
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata={"unifybench": json.dumps(meta, sort_keys=True)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> tuple["ConceptTokens", dict]:
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("unifybench", "{}"))
                t = {k: f.get_tensor(k) for k in f.keys()}
        except (OSError, ValueError, SafetensorError) as e:
            raise UserError(f"{path}: not a readable concept-token file ({e})") from None
        if meta.get("format") != FORMAT or not {"embed", "head", "token_ids", "head_ids"} <= set(t):
            raise UserError(f"{path}: not a unifybench concept-token file (format {meta.get('format')!r})")
        tokens = cls(t["token_ids"].tolist(), t["embed"], t["head_ids"].tolist(), t["head"],
                     t.get("head_bias"), meta.get("token_names"))
        return tokens, meta


class SplicedEmbedding(nn.Module):
    """base embedding, with the concept rows substituted for concept-token ids."""

    def __init__(self, base: nn.Module, tokens: ConceptTokens):
        super().__init__()
        self.base = base
        self.tokens = tokens

    @property
    def weight(self) -> torch.Tensor:  # code that reads `embed_tokens.weight` sees the base matrix
        return self.base.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.base(ids)
        idx = self.tokens.lookup(ids)
        mask = idx >= 0
        if not bool(mask.any()):
            return out
        rows = self.tokens.embed[idx.clamp(min=0)].to(out.dtype)
        return torch.where(mask.unsqueeze(-1), rows, out)


class SplicedHead(nn.Module):
    """base output head, with the logits of `head_ids` computed from the concept rows."""

    def __init__(self, base: nn.Module, tokens: ConceptTokens):
        super().__init__()
        self.base = base
        self.tokens = tokens

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base, "bias", None)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.base(hidden)
        t = self.tokens
        new = hidden.to(t.head.dtype) @ t.head.t()
        if t.head_bias is not None:
            new = new + t.head_bias
        if logits.requires_grad:  # the base head is trainable elsewhere: keep its graph intact
            return logits.index_copy(-1, t.head_ids.to(logits.device), new.to(logits.dtype))
        # Frozen base head: write the concept columns in place (no second vocabulary-wide copy).
        logits[..., t.head_ids.to(logits.device)] = new.to(logits.dtype)
        return logits


def attach(backbone, tokens: ConceptTokens) -> None:
    """Splice `tokens` into a backbone exposing input_embeddings()/output_head() and their setters."""
    detach(backbone)
    emb, head = backbone.input_embeddings(), backbone.output_head()
    tokens.to(emb.weight.device)
    backbone.set_input_embeddings(SplicedEmbedding(emb, tokens))
    backbone.set_output_head(SplicedHead(head, tokens))


def detach(backbone) -> None:
    """Restore the base modules (a no-op when nothing is attached, or for a backbone that takes no tokens)."""
    from unifybench.models.contract import Backbone
    if not isinstance(backbone, Backbone) or not backbone.takes_concept_tokens:
        return
    emb, head = backbone.input_embeddings(), backbone.output_head()
    if isinstance(emb, SplicedEmbedding):
        backbone.set_input_embeddings(emb.base)
    if isinstance(head, SplicedHead):
        backbone.set_output_head(head.base)
