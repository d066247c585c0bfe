"""Image-prompt (IP) baseline: the concept's reference photos in the prompt (Chameleon/Anole).

UniCTokens Table 1 "Chameleon+IP" and the Yo'Chameleon baselines (evaluation/recognition.py, anole.py): the
first `n_reference_images` training photos of the *target* concept (sorted by name) open the user turn
("Here are photos of <name>: <img>...<img>"), then the question (and the query image) or the generation
prompt. Unlike the released recognition script, the references always show the concept being asked about,
never the query image's own concept (see the project notes, Yo'Chameleon section 2.1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unifybench.baselines.common import ChameleonRunner
from unifybench.baselines.text_prompt import PromptBaseline, TextPromptConfig
from unifybench.data.schema import GEN, KNOWLEDGE_GEN, MC, REC, TEXT_QA, VQA, Benchmark, Concept


@dataclass
class ImagePromptConfig(TextPromptConfig):
    n_reference_images: int = 4                          # training photos of the concept shown before each question
    reference_prefix: str = "Here are photos of {name}:"  # the text that introduces them


class ImagePromptBaseline(PromptBaseline):
    config_cls = ImagePromptConfig

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> None:
        return None

    def context_segments(self, concept: Concept) -> list:
        cfg = self.config
        refs = [Path(p) for p in concept.train_images[:cfg.n_reference_images]]
        if not refs:
            return []
        return [cfg.reference_prefix.format(name=self.name_of(concept)), *refs, "\n"]


class ChameleonImagePrompt(ImagePromptBaseline):
    name = "chameleon-ip"
    tasks = frozenset({REC, VQA, TEXT_QA, MC, GEN, KNOWLEDGE_GEN})
    runner_cls = ChameleonRunner
    presets = {"tiny": dict(backbone="tiny", n_reference_images=1, max_new_tokens=8, gen_prompts_limit=1,
                            images_per_prompt=1)}
