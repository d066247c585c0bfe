"""Option orders of a multiple-choice question, for circular evaluation.

A loader turns each question into one :class:`Item` per order with :func:`circular_items`: rotation ``k``
shifts the option texts by ``k`` places (the letters stay A, B, ...; ``answer`` follows its text), the id is
``"<base id>@<k>"`` and ``meta`` holds ``("base_id", ...)``, ``("rotation", "<k>")`` and
``("n_rotations", "<N>")``; :func:`order_info` reads that back for the scorer
(``unifybench.evaluators.multiple_choice``). It lives in the data layer because loaders write it.
"""
from __future__ import annotations

import dataclasses

from unifybench.data.schema import Item

ROTATION_SEP = "@"


def circular_items(item: Item, n_rotations: int | None = None) -> list[Item]:
    """`item` in each circular order of its options (rotation 0 first, as given); see the module doc."""
    letters = [letter for letter, _ in item.options]
    texts = [text for _, text in item.options]
    if len(letters) < 2:
        raise ValueError(f"item {item.id}: a multiple-choice item needs at least 2 options")
    if item.answer not in letters:
        raise ValueError(f"item {item.id}: answer {item.answer!r} is not one of the option letters {letters}")
    n_opt = len(letters)
    n = n_opt if n_rotations is None else int(n_rotations)
    if not 1 <= n <= n_opt:
        raise ValueError(f"item {item.id}: n_rotations must be between 1 and {n_opt}")
    right = letters.index(item.answer)
    out = []
    for k in range(n):
        shifted = texts[k:] + texts[:k]      # position j shows the original option (j + k) mod N
        meta = tuple((key, v) for key, v in item.meta if key not in ("base_id", "rotation", "n_rotations"))
        meta += (("base_id", item.id), ("rotation", str(k)), ("n_rotations", str(n)))
        out.append(dataclasses.replace(item, id=f"{item.id}{ROTATION_SEP}{k}", options=tuple(zip(letters, shifted)),
                                       answer=letters[(right - k) % n_opt], meta=meta))
    return out


def order_info(item: Item) -> tuple[str, int, int | None]:
    """(base id, rotation, number of rotations or None) of an item; a plain item is its own question."""
    meta = dict(item.meta)
    if "base_id" in meta:
        n = meta.get("n_rotations")
        return meta["base_id"], int(meta.get("rotation", 0)), int(n) if n is not None else None
    return item.id, 0, None
