"""Chameleon/Anole's chat adapter: one user turn `<s> [prefix] part... <eot>`, the one place this format is
built (methods, baselines and the forgetting evaluators all go through `ChameleonBackbone.chat_ids`)."""
from __future__ import annotations


def image_block(backbone, image) -> list[int]:
    """`<racm3:break> codes <eoss>`: one PIL image as Chameleon reads it inline."""
    return [backbone.boi_id] + backbone.encode_images([image])[0].tolist() + [backbone.eoi_id]


def chat_ids(backbone, prefix_ids: list[int] | None, parts: list) -> list[int]:
    """`<s> [prefix] part... <eot>`: a str part is encoded as text, a `list[int]` part is already encoded (an
    image block, text with the identifier spliced in), any other part is an image (PIL) block. With a
    prefix, a str part that comes first gets a leading space (as the methods write `<personalized prompt>
    <question>`); an image right after the prefix needs none."""
    ids = [backbone.bos_id] + list(prefix_ids or [])
    for n, part in enumerate(parts):
        if isinstance(part, str):
            text = (" " + part) if (n == 0 and prefix_ids and not part.startswith(" ")) else part
            ids += backbone.encode_text(text)
        elif isinstance(part, list):
            ids += part
        else:
            ids += image_block(backbone, part)
    return ids + [backbone.eot_id]
