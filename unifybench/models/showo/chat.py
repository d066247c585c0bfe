"""Show-o's chat adapter: a question in UniCTokens' MMU format (image first, then `USER: ... ASSISTANT:`),
the one place this format is built (`ShowoBackbone.chat_ids`)."""
from __future__ import annotations

from unifybench.errors import UserError


def chat_ids(backbone, prefix_ids: list[int] | None, parts: list) -> list[int]:
    """A question as Show-o reads it (what UniCTokens' evaluation builds): `<|mmu|> <|soi|> image <|eoi|>
    <|endoftext|> USER: [prefix]question ASSISTANT:`. `parts` are text (joined, stripped) and at most one
    PIL image; with none, the text alone after `<|endoftext|>`. `prefix_ids` (a personalized prompt such
    as `<sks> is <tokens>.\n`) open the user turn.

    Without a prefix the turn is tokenized as one string, `"USER: " + question + " ASSISTANT:"`, as Show-o
    and UniCTokens tokenize it (so "USER: Is" is `USER`, `:`, `ĠIs`, not `USER`, `:`, `Ġ`, `Is`). Ids cannot
    be re-tokenized with the text around them, so with a prefix "USER: ", the prefix and the question are
    joined as ids (the methods build their own exact prompt; this is the forgetting evaluators' "prompt"
    condition, which the papers never ran)."""
    images = [p for p in parts if not isinstance(p, str)]
    if len(images) > 1:
        raise UserError(f"Show-o reads one image per question, not {len(images)}")
    text = "".join(p for p in parts if isinstance(p, str)).strip()
    head = backbone.mmu_prefix(backbone.encode_images(images)[0]) if images else [backbone.eot_id]
    if not prefix_ids:
        return head + backbone.encode_text("USER: " + text + " ASSISTANT:")
    return (head + backbone.encode_text("USER: ") + list(prefix_ids) + backbone.encode_text(text)
            + backbone.encode_text(" ASSISTANT:"))
