"""The tables' "Real Images" row: real photos of the concept scored as if they were generated.

`predict` answers every generation item with real photos of the concept (copied under the run folder), so
CLIP-I / DINO / face similarity measure real-vs-real similarity against the concept's references (the
training photos): an upper reference for the generation metrics. By default the photos are the concept's
*test* photos, so no image is ever compared with itself. Preset `unictokens` uses the training photos
themselves, each compared with all training photos including itself (UniCTokens' commented-out
reference-vs-reference code, where the self-pairs of similarity 1 inflate the row). CLIP-T and the
knowledge T2I judge also run on these images when selected; the papers leave those cells empty.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.methods.base import Method


@dataclass
class RealImagesConfig:
    images: str = "test"        # "test": held-out photos (no self-pairs) | "train": the references themselves


class RealImages(Method):
    name = "real-images"
    tasks = frozenset({GEN, KNOWLEDGE_GEN})
    # Photos were not drawn from a prompt: text alignment and the knowledge judge are "-" in the papers.
    not_scored_by = frozenset({"clip_t", "t2i_score"})
    config_cls = RealImagesConfig
    presets = {"unictokens": dict(images="train"), "tiny": {}}

    def setup(self) -> None:
        if self.config.images not in ("test", "train"):
            raise UserError(f"real-images: images must be 'test' or 'train', not {self.config.images!r}")

    def photos(self, concept: Concept) -> list[Path]:
        return list(concept.test_images if self.config.images == "test" else concept.train_images)

    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        photos = self.photos(concept)
        copies: list[str] = []
        if photos:   # copied once per concept: predictions point inside the run folder, as generated images do
            folder = Path(out_dir) / "images"
            folder.mkdir(parents=True, exist_ok=True)
            for k, src in enumerate(photos):
                dst = folder / f"real_{k:03d}{Path(src).suffix.lower()}"
                shutil.copyfile(src, dst)
                copies.append(str(dst.resolve()))
        preds = []
        for item in items:
            if item.task not in self.tasks:
                continue
            if copies:
                preds.append(Prediction(item.id, item.concept, item.task, item.prompt, images=list(copies)))
            else:
                preds.append(Prediction(item.id, item.concept, item.task, item.prompt,
                                        error=f"concept has no {self.config.images} photos"))
        return preds
