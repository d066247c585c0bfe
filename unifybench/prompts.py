"""The text every method, baseline and evaluator writes about a concept: a question with the concept's
name in place of the placeholder (and its options for multiple choice), the concept's name as a
training-free baseline spells it, the class noun in place of the placeholder, a judge's view of the
concept. One place, so a method and the evaluator that scores it read the same words.
"""
from __future__ import annotations

from unifybench.data.schema import MC, PLACEHOLDER, Concept, Item

# Recognition training conversations (our own wording; Yo'Chameleon and Yo'LLaVA train on the same):
# a question about a photo, and the answers for a positive and a negative photo.
QUESTIONS = ("Is <sks> in this photo?", "Can you see <sks> in this image?", "Does this picture show <sks>?",
             "Is <sks> present in this photo?", "Do you recognize <sks> in this image?")
YES = ("Yes, <sks> is in this photo.", "Yes, I can see <sks> here.", "Yes, this is <sks>.")
NO = ("No, <sks> is not in this photo.", "No, I cannot see <sks> here.", "No, this is not <sks>.")

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


def with_class_noun(prompt: str, noun: str, identifier: str = "") -> str:
    """`prompt` with the placeholder written as "`identifier` `noun`" (the noun alone without an identifier).

    DreamBench prompts already carry the class noun after the placeholder ("a <sks> dog in the jungle"):
    the pair is replaced first, so the text is "a sks dog in the jungle", not "a sks dog dog ...".
    Shared by CLIP-T (no identifier) and the Stable Diffusion baselines (DreamBooth's "sks dog").
    """
    subject = f"{identifier} {noun}" if identifier else noun
    return prompt.replace(f"{PLACEHOLDER} {noun}", subject).replace(PLACEHOLDER, subject)


def concept_text(text: str, concept: Concept, concept_as: str) -> str:
    """`text` with the placeholder written as `concept_as` ("<{name}>", "{class_noun}", ...)."""
    return text.replace(PLACEHOLDER, concept_as.format(name=concept.name, class_noun=concept.class_noun))
