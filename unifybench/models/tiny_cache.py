"""Building a tiny model folder once, atomically, in a shared cache."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable


def build_once(dest: Path, build: Callable[[Path], None], complete: Callable[[Path], bool] = Path.is_dir) -> Path:
    """`dest`, built by `build(tmp)` in a temporary folder beside it and renamed into place.

    Readers see either nothing or a complete folder; a concurrent builder winning the rename is fine;
    a half-made folder left by an old crash is replaced.
    """
    dest = Path(dest)
    if complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        for p in [tmp, *tmp.rglob("*")]:  # mkdtemp and some writers make owner-only files: keep the cache readable
            p.chmod(0o755 if p.is_dir() else 0o644)
        if dest.exists() and not complete(dest):
            shutil.rmtree(dest, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not complete(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def tiny_root(cache_dir: Path | None = None) -> Path:
    """Where every tiny builder puts its folder: `<cache_dir>/tiny/` (the run's cache; default
    `~/.cache/unifybench`). The one convention for every family and encoder."""
    return (Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "unifybench") / "tiny"


def unreadable_text_ids(tokenizer, first_text_id: int = 0, end: int | None = None) -> list[int]:
    """Text tokens (ids `first_text_id`..`end`) that decode, alone, to nothing readable: blanks (spaces,
    newlines), control characters, or a lone piece of a multi-byte character (byte-level BPE shows it as
    U+FFFD). A tiny model steered away from them answers in visible words."""
    end = len(tokenizer) if end is None else end
    out = []
    for i in range(first_text_id, end):
        text = tokenizer.decode([i])
        if not text.strip() or "\ufffd" in text or not text.strip().isprintable():
            out.append(i)
    return out


def no_early_stop(head, stop_ids: Iterable[int]) -> None:
    """Zero the output-head rows (and biases) of the end-of-turn / end-of-text tokens of a tiny random model
    (and of the text tokens that decode to nothing readable, `unreadable_text_ids`).

    Their logit is then exactly 0 while the hundreds of random text logits beside it always include positive
    ones, so greedy decoding never picks them: tiny answers are visible random words up to `max_new_tokens`,
    and the text path (decode, detokenise, parse, score) is exercised. A seeded tiny model otherwise answers
    the empty string (or only spaces) whenever its random head happens to rank end-of-turn or a blank first,
    which looks exactly like a broken pipeline. Real checkpoints are never touched: this runs in the tiny
    builders only, and the rows are saved with the tiny weights (the real loading path reads them).
    """
    import torch
    with torch.no_grad():
        for i in stop_ids:
            head.weight[i].zero_()
            if getattr(head, "bias", None) is not None:
                head.bias[i] = 0.0
