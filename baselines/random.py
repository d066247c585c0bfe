"""The tables' Random row: a seeded coin flip for every recognition question."""
from __future__ import annotations

import random
from pathlib import Path

from unifybench.data.schema import REC, Concept, Item, Prediction
from unifybench.environment import derive_seed
from unifybench.methods.base import Method


class RandomBaseline(Method):
    name = "random"
    tasks = frozenset({REC})

    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        preds = []
        for item in items:
            # One draw per item, seeded by the item id: independent of order and of other items.
            rng = random.Random(derive_seed(self.ctx.seed, "random", item.id))
            preds.append(Prediction(item.id, item.concept, item.task, item.prompt,
                                    text="Yes." if rng.random() < 0.5 else "No."))
        return preds
