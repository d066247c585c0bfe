"""What every benchmark hands to methods and evaluators: concepts and task items with stable ids.

Paths are absolute `pathlib.Path`s; lists of images are sorted by file name (never filesystem order).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Task kinds an item can have. A method or baseline declares which of these it can answer.
REC = "rec"                      # yes/no: is the concept in `image`?  (label True/False)
VQA = "vqa"                      # free-form question about `image`, reference `answer`
TEXT_QA = "text_qa"              # free-form question without an image, reference `answer`
MC = "mc"                        # multiple choice: `options` {letter: text}, `answer` = letter
GEN = "gen"                      # generate an image of the concept from `prompt`
KNOWLEDGE_GEN = "knowledge_gen"  # generate an image that shows `facts` the model was told in text
CAPTION = "caption"              # describe `image`; meta "names" lists the concepts the caption should name
TASKS = (REC, VQA, TEXT_QA, MC, GEN, KNOWLEDGE_GEN, CAPTION)
IMAGE_TASKS = frozenset({GEN, KNOWLEDGE_GEN})

# The placeholder for the concept in every prompt; a method substitutes its own identifier.
PLACEHOLDER = "<sks>"


@dataclass(frozen=True)
class Concept:
    name: str                      # folder name, e.g. "bo"
    category: str                  # "person" | "pet" | "object"
    class_noun: str                # e.g. "dog"; replaces the placeholder for CLIP-T
    info: str = ""                 # "<sks> is a Shiba Inu ..." (what a text prompt may say)
    extra_info: tuple[str, ...] = ()   # facts not visible in the photos (knowledge-driven T2I)
    generation_type: str = "object"    # "object" | "live_subject" (DreamBench prompt list)
    train_images: tuple[Path, ...] = ()
    test_images: tuple[Path, ...] = ()
    # Optional extra material (e.g. cropped training images); loaders fill what they have.
    cropped_images: tuple[Path, ...] = ()
    info_path: Path | None = None   # where `info` came from, for error messages


@dataclass(frozen=True)
class Item:
    id: str                        # stable: "<benchmark>/<concept>/<task>/<key>"
    concept: str
    task: str                      # one of TASKS
    prompt: str = ""               # question or generation prompt, with PLACEHOLDER for the concept
    image: Path | None = None      # query image (rec, vqa, mc with image)
    answer: str | None = None      # reference answer (vqa, text_qa) or correct letter (mc)
    label: bool | None = None      # rec: is the concept in the image?
    options: tuple[tuple[str, str], ...] = ()   # mc: ((letter, text), ...)
    facts: tuple[str, ...] = ()    # knowledge_gen: the facts the image must show
    n_images: int = 1              # gen/knowledge_gen: how many images to draw for this prompt
    meta: tuple[tuple[str, str], ...] = ()      # anything else a loader wants to keep (source file...)


@dataclass
class Prediction:
    """One model output for one item: a text, or image files written under the run's folder."""

    id: str
    concept: str
    task: str
    prompt: str = ""
    text: str | None = None
    images: list[str] = field(default_factory=list)   # paths relative to the run folder
    error: str | None = None                          # why the model could not answer (counted)

    def to_json(self) -> dict:
        d = {"id": self.id, "concept": self.concept, "task": self.task, "prompt": self.prompt}
        if self.text is not None:
            d["text"] = self.text
        if self.images:
            d["images"] = list(self.images)
        if self.error is not None:
            d["error"] = self.error
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Prediction":
        return cls(id=d["id"], concept=d["concept"], task=d["task"], prompt=d.get("prompt", ""),
                   text=d.get("text"), images=list(d.get("images", [])), error=d.get("error"))


class Benchmark:
    """A set of concepts and their task items. Subclasses load one dataset layout."""

    name: str = ""
    root: Path | None = None       # the data folder, when the benchmark reads one (data file names are relative to it)

    def concepts(self) -> list[Concept]:
        raise NotImplementedError

    def items(self, concept: Concept) -> list[Item]:
        """Every task item of `concept`, in a stable order."""
        raise NotImplementedError

    def concept(self, name: str) -> Concept:
        for c in self.concepts():
            if c.name == name:
                return c
        from unifybench.errors import UserError
        raise UserError(f"benchmark {self.name!r} has no concept {name!r}")

    def random_images(self) -> list[Path]:
        """Easy negatives shared by all concepts (empty when the benchmark has none)."""
        return []

    def train_conversations(self, concept: Concept) -> list[tuple[str, str]]:
        """Text-only (question, answer) training pairs about the concept, with PLACEHOLDER."""
        return []

    def data_files(self) -> list[Path]:
        """Files whose contents determine the items (hashed into the run's cache keys)."""
        return []

    def validate(self) -> list[str]:
        """Every problem with the benchmark's files (schemas, unreadable images), one line each."""
        return []

    def warnings(self) -> list[str]:
        """Things worth saying that do not stop a run (e.g. files the loader ignores)."""
        return []

    def joint_concepts(self, concept: Concept) -> list[Concept]:
        """The concepts a multi-concept method learns together with `concept` (MC-LLaVA's scenario), in the
        benchmark's order; a benchmark without such groups: the concept alone."""
        return [concept]

    def train_masks(self, concept: Concept) -> dict[Path, Path]:
        """Foreground mask file of each training image that has one (empty when the benchmark ships none)."""
        return {}
