"""Forgetting evaluators: they evaluate a MODEL (the base backbone, or the backbone with a concept's tokens
attached), not a method's predictions of benchmark items.

The runner hook (:func:`unifybench.forgetting.run_forgetting`) calls :meth:`ModelEvaluator.evaluate_model`
once for the base model (no concept tokens, no prefix) and, per concept, once with the concept's tokens
attached and no prefix ("plain") and, when ``with_prompt`` is on, once more with the concept's personalized
prompt (token ids) in front of every query ("prompt"). The papers only ever ran the plain condition, where a
soft-prompt checkpoint can only change an output if a retrained output-head row gets decoded.

``evaluate_model`` returns ``{"value", "n", "n_failed", ...metrics, "samples": [...]}``; the hook moves
``samples`` to ``<run>/forgetting/samples/...jsonl`` and keeps the rest.

Backbones are duck-typed. Loglikelihood (MMLU) needs ``forward_hidden(ids, attention_mask)``,
``logits(hidden)``, ``encode_text(text)`` and ``bos_id``; generation (POPE, MMBench, the Yo'Chameleon
replica) additionally needs ``generate_text``, ``encode_images``, ``boi_id``/``eoi_id``/``eot_id`` and a
``tokenizer`` (:class:`unifybench.models.chameleon.ChameleonBackbone` has all of them). A backbone whose
questions are not Chameleon's interleaved `<s> text <img> <eot>` (Show-o's image-first MMU format) builds
them itself with ``chat_ids(prefix_ids, parts)`` and decodes with ``decode_text(ids)``. A backbone without
what it needs gets a one-line UserError naming what is missing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, Evaluator

CONDITIONS = ("plain", "prompt")


def set_offline() -> None:
    """No hub, no internet: lm-eval and datasets must never try the network (set by the code, not the user)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def require(backbone, *names: str, what: str) -> None:
    missing = [n for n in names if not hasattr(backbone, n)]
    if missing:
        raise UserError(f"{what} needs a backbone with {', '.join(missing)}; "
                        f"{type(backbone).__name__} has none (no adapter for this model yet)")


BUNDLED = "bundled:"   # a `data` value naming a folder under unifybench/data/ (the tiny preset's mini sets)


def data_root(evaluator: str, param: str | None, env_var: str, hint: str) -> Path:
    """The data folder from the evaluator parameter `data`, else from `env_var`; a one-line error otherwise.
    `bundled:mini_forgetting/pope` names a folder shipped in the package (recorded so, not as a local path)."""
    if isinstance(param, str) and param.startswith(BUNDLED):
        from unifybench.data.unifybench import MINI_ROOT
        return MINI_ROOT.parent / param[len(BUNDLED):]
    source = "data="
    path = param
    if not path and os.environ.get(env_var):
        path, source = os.environ[env_var], env_var
    if not path:
        raise UserError(f"evaluator {evaluator!r} needs its data: set {env_var}=PATH ({hint})")
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"evaluator {evaluator!r}: data folder {p} (from {source}) does not exist")
    return p


class ModelEvaluator(Evaluator):
    """An evaluator of a model object. `tasks` is empty, so the per-item scoring loop of the runner skips it."""

    tasks: frozenset[str] = frozenset()
    kind = "model"
    env_var: str = ""                      # UNIFYBENCH_<X>_ROOT for the data folder
    defaults: dict[str, Any] = {"data": None, "with_prompt": True, "limit": 0}
    tiny_data: dict[str, Any] = {}         # params of the bundled mini set (bench/make_mini_forgetting.py)

    def for_tiny_run(self) -> None:
        """The tiny preset reads the bundled mini set in this evaluator's real format, unless the user gave
        data (parameter `data` or the environment variable)."""
        if self.tiny_data and not self.params.get("data") and not os.environ.get(self.env_var):
            self.params.update(self.tiny_data)

    def score(self, concept, items, predictions, ctx):  # pragma: no cover - a guard, not a code path
        raise UserError(f"evaluator {self.name!r} evaluates a model, not predictions: it runs in the run's "
                        f"forgetting stage")

    def conditions(self) -> tuple[str, ...]:
        return CONDITIONS if self.params.get("with_prompt", True) else ("plain",)

    def data_files(self) -> list[Path]:
        """Files whose content determines the result (hashed into the resume key)."""
        return []

    def evaluate_model(self, backbone, prefix_ids: list[int] | None, ctx: EvalContext) -> dict[str, Any]:
        raise NotImplementedError


# ------------------------------------------------------------------------------ generation helpers

def build_prompt(backbone, prefix_ids: list[int] | None, parts: list) -> list[int]:
    """`<s> [prefix] part... <eot>`: a str part is encoded as text, any other part is an image (PIL) block.

    With a prefix, a text part that comes first gets a leading space (as the methods write
    `<personalized prompt> <question>`); an image right after the prefix needs none. A backbone with its own
    question format (`chat_ids`) builds it.
    """
    if hasattr(backbone, "chat_ids"):
        return backbone.chat_ids(prefix_ids, parts)
    ids = [backbone.bos_id]
    if prefix_ids:
        ids += list(prefix_ids)
    for n, part in enumerate(parts):
        if isinstance(part, str):
            text = (" " + part) if (n == 0 and prefix_ids and not part.startswith(" ")) else part
            ids += backbone.encode_text(text)
        else:
            ids += [backbone.boi_id] + backbone.encode_images([part])[0].tolist() + [backbone.eoi_id]
    return ids + [backbone.eot_id]


def decode_answer(backbone, ids: list[int], skip: set[int] | None = None) -> str:
    drop = set(skip or ()) | {backbone.eot_id, getattr(backbone, "eos_id", None)}
    kept = [t for t in ids if t not in drop]
    if hasattr(backbone, "decode_text"):   # ids past the tokenizer (image codes, concept tokens) are dropped there
        return backbone.decode_text(kept).strip()
    return backbone.tokenizer.decode(kept, skip_special_tokens=True).strip()


def answer_text(backbone, prefix_ids: list[int] | None, parts: list, max_new_tokens: int,
                skip: set[int] | None = None) -> str:
    """Greedy text-only answer to `parts` (text and images), decoded without special tokens."""
    import torch
    require(backbone, "generate_text", "encode_images", "encode_text", "boi_id", "eoi_id", "eot_id", "tokenizer",
            what="a generative forgetting evaluator")
    ids = build_prompt(backbone, prefix_ids, parts)
    out = backbone.generate_text(torch.tensor([ids]), max_new_tokens=max_new_tokens)
    return decode_answer(backbone, out, set(prefix_ids or ()) | set(skip or ()))
