"""Forgetting evaluators: they evaluate a MODEL (the base backbone, or the backbone with a concept's tokens
attached), not a method's predictions of benchmark items.

The runner hook (:func:`unifybench.forgetting.run_forgetting`) calls :meth:`ModelEvaluator.evaluate_model`
once for the base model (no concept tokens, no prefix) and, per concept, once with the concept's tokens
attached and no prefix ("plain") and, when ``with_prompt`` is on, once more with the concept's personalized
prompt (token ids) in front of every query ("prompt"). The papers only ever ran the plain condition, where a
soft-prompt checkpoint can only change an output if a retrained output-head row gets decoded.

``evaluate_model`` returns ``{"value", "n", "n_failed", ...metrics, "samples": [...]}``; the hook moves
``samples`` to ``<run>/forgetting/samples/...jsonl`` and keeps the rest.

Backbones follow the declared contract (:class:`unifybench.models.contract.Backbone`): loglikelihood
(MMLU) needs ``has_hidden`` (``forward_hidden``, ``logits``); generation (POPE, MMBench, the Yo'Chameleon
replica) asks the family's chat adapter for the question (``chat_ids(prefix_ids, parts)``), generates with
``generate_text`` and decodes with ``decode_answer``. A backbone without what it needs gets a one-line
UserError naming what is missing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from unifybench.data.root import resolve_root
from unifybench.errors import UserError
from unifybench.evaluators.base import EvalContext, Evaluator

CONDITIONS = ("plain", "prompt")


def set_offline() -> None:
    """No hub, no internet: lm-eval and datasets must never try the network (set by the code, not the user)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


BUNDLED = "bundled:"   # a `data` value naming a folder under unifybench/data/ (the tiny preset's mini sets)


def data_root(evaluator: str, param: str | None, env_var: str, hint: str) -> Path:
    """The data folder from the evaluator parameter `data`, else from `env_var`; a one-line error otherwise.
    `bundled:mini_forgetting/pope` names a folder shipped in the package (recorded so, not as a local path)."""
    if isinstance(param, str) and param.startswith(BUNDLED):
        from unifybench.data.unifybench import MINI_ROOT
        return MINI_ROOT.parent / param[len(BUNDLED):]
    return resolve_root(param, "data=", env_var, f"evaluator {evaluator!r} needs its data: set {env_var}=PATH ({hint})",
                        f"evaluator {evaluator!r}: data folder")


class ModelEvaluator(Evaluator):
    """An evaluator of a model object. `tasks` is empty, so the per-item scoring loop of the runner skips it."""

    tasks: frozenset[str] = frozenset()
    kind = "model"
    env_var: str = ""                      # UNIFYBENCH_<X>_ROOT for the data folder
    defaults: dict[str, Any] = {
        "data": None,                      # the data folder; unset: the UNIFYBENCH_<X>_ROOT variable
        "with_prompt": True,               # also run each query with the concept's personalized prompt in front
        "limit": 0,                        # > 0: only the first N questions
    }
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

    def needs(self, ctx: EvalContext, concepts) -> list:
        """Its data folder (`data_files` raises the one-line error naming the variable when it is missing)."""
        from unifybench import needs

        def locate() -> str:
            files = self.data_files()
            if not files:
                return "no files"
            common = Path(os.path.commonpath([str(f) for f in files]))
            return f"{len(files)} files under {common}"
        return [needs.data(f"evaluator {self.name}", locate)]

    def evaluate_model(self, backbone, prefix_ids: list[int] | None, ctx: EvalContext) -> dict[str, Any]:
        raise NotImplementedError


# ------------------------------------------------------------------------------ generation helpers

def build_prompt(backbone, prefix_ids: list[int] | None, parts: list) -> list[int]:
    """The question in the family's chat format (its chat adapter, `chat_ids`)."""
    return backbone.chat_ids(prefix_ids, parts)


def decode_answer(backbone, ids: list[int], skip: set[int] | None = None) -> str:
    return backbone.decode_answer(ids, set(skip or ()))


def answer_text(backbone, prefix_ids: list[int] | None, parts: list, max_new_tokens: int,
                skip: set[int] | None = None) -> str:
    """Greedy text-only answer to `parts` (text and images), decoded without special tokens."""
    import torch
    ids = build_prompt(backbone, prefix_ids, parts)
    out = backbone.generate_text(torch.tensor([ids]), max_new_tokens=max_new_tokens)
    return decode_answer(backbone, out, set(prefix_ids or ()) | set(skip or ()))
