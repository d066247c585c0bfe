"""What every soft-prompt method shares: the fit (seeded samples, new token rows attached to the frozen
backbone, a seeded order, training, the artifact) and its concept-token artifact (header, backbone hash,
load check).

A subclass sets `self.backbone` (weight_files(), path, the attach protocol), `self.token_ids`,
`self.head_ids` and `self.token_names` in `setup()`, and provides `training_samples(concept, benchmark,
rng)` and `train(params, samples, generator, description) -> epoch losses`.
"""
from __future__ import annotations

from pathlib import Path

from unifybench.data.schema import Concept
from unifybench.errors import UserError
from unifybench.images import open_rgb
from unifybench.methods.base import Method


class SoftPromptMethod(Method):
    load_rgb = staticmethod(open_rgb)   # a training or query photo as RGB; an unreadable file is a user error

    def fit(self, concept: Concept, benchmark, out_dir: Path) -> Path:
        import random

        import torch

        from unifybench.environment import derive_seed
        from unifybench.models.concept_tokens import ConceptTokens, attach
        rng = random.Random(derive_seed(self.ctx.seed, "data", concept.name))
        samples = self.training_samples(concept, benchmark, rng)
        b = self.backbone
        tokens = ConceptTokens.from_base(b.input_embeddings(), b.output_head(), self.token_ids, self.head_ids,
                                         self.token_names)
        attach(b, tokens)
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "order", concept.name))
        losses = self.train(list(tokens.parameters()), samples, gen, f"training {concept.name}")
        return self.save_tokens(tokens, Path(out_dir) / "concept_tokens.safetensors", concept, samples, losses)

    def save_tokens(self, tokens, artifact: Path, concept: Concept, samples: list, losses: list[float]) -> Path:
        """Write the concept tokens with the header that says what made them."""
        kinds = sorted({s.kind for s in samples})
        header = {"method": self.name, "concept": concept.name, "backbone": str(self.backbone.path),
                  "backbone_sha256": self.backbone_hash(), "config": self.describe()["config"],
                  "epoch_losses": losses, "samples": {k: sum(1 for s in samples if s.kind == k) for k in kinds}}
        tokens.save(artifact, header)
        return artifact

    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        from unifybench.models.concept_tokens import ConceptTokens, attach
        tokens, header = ConceptTokens.load(path)
        if (header.get("method") != self.name or tokens.token_ids.tolist() != list(self.token_ids)
                or tokens.head_ids.tolist() != list(self.head_ids)):
            raise UserError(f"{path}: concept tokens of {header.get('method')!r} do not fit this {self.name} setup")
        attach(self.backbone, tokens)
