"""Show-o's chat adapter: a question in UniCTokens' MMU format (image first, then `USER: ... ASSISTANT:`),
the one place this format is built (`ShowoBackbone.chat_ids`)."""
from __future__ import annotations

from unifybench.errors import UserError


def chat_ids(backbone, prefix_ids: list[int] | None, parts: list) -> list[int]:
    """A question as Show-o reads it (what UniCTokens' evaluation builds): `<|mmu|> <|soi|> image <|eoi|>
    <|endoftext|> USER: [prefix]question ASSISTANT:`. `parts` are text (joined, stripped) and at most one
    PIL image; with none, the text alone after `<|endoftext|>`. `prefix_ids` (a personalized prompt such
    as `<sks> is <tokens>.\n`) open the user turn."""
    images = [p for p in parts if not isinstance(p, str)]
    if len(images) > 1:
        raise UserError(f"Show-o reads one image per question, not {len(images)}")
    text = "".join(p for p in parts if isinstance(p, str)).strip()
    head = backbone.mmu_prefix(backbone.encode_images(images)[0]) if images else [backbone.eot_id]
    return (head + backbone.encode_text("USER: ") + list(prefix_ids or []) + backbone.encode_text(text)
            + backbone.encode_text(" ASSISTANT:"))
