"""Pieces the baselines (and Yo'LLaVA) share: question text for an item, the concept's name in prompts."""
from __future__ import annotations

import hashlib
from pathlib import Path

from unifybench.data.schema import MC, PLACEHOLDER, Concept, Item

MC_SUFFIX = "Answer with the option's letter from the given choices directly."


def question_text(item: Item, name: str = PLACEHOLDER) -> str:
    """The item's question with the concept written as `name`; multiple choice lists its options."""
    text = item.prompt.replace(PLACEHOLDER, name)
    if item.task == MC and item.options:
        lines = [f"{letter}. {option.replace(PLACEHOLDER, name)}" for letter, option in item.options]
        text = "\n".join([text, *lines, MC_SUFFIX])
    return text


def concept_name(concept: Concept, fmt: str = "<{name}>") -> str:
    """How a training-free baseline names the concept in text (Yo'LLaVA style `<bo>`)."""
    return fmt.format(name=concept.name)


def files_digest(paths: list[Path]) -> str:
    """sha256 over the bytes of `paths`, in order (cache keys that follow the content, not the names)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()
