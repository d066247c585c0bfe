"""Soft positives and hard negatives from a local image pool, ranked by CLIP similarity (and the CLIP that ranks them).

LAION is not reachable offline, so the pool is a folder of images or a list file the user points to.
Ranking is by cosine similarity to the concept's training images, descending (the direction the
Yo'Chameleon paper states; its code's ascending sort of an opaque score is ambiguous, see the notes).
"""
from __future__ import annotations

from pathlib import Path

import torch

from unifybench.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def list_pool(pool: str | Path) -> list[Path]:
    """Images of a pool: a folder (sorted by name) or a text file with one path per line."""
    pool = Path(pool)
    if pool.is_dir():
        return sorted(p for p in pool.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if pool.is_file():
        paths = []
        for n, line in enumerate(pool.read_text().splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line) if Path(line).is_absolute() else pool.parent / line
                if not p.exists():
                    raise UserError(f"{pool}: line {n}: image {p} does not exist")
                paths.append(p)
        return paths
    raise UserError(f"retrieval pool {pool} is neither a folder nor a list file")


def rank_pool(clip_model, query_images: list[Path], pool: list[Path], cache_dir: Path | None) -> list[tuple[Path, float]]:
    """Pool images with their cosine to the mean of the L2-normalised query embeddings, most similar first."""
    from unifybench.models.encoders.clip import embed_images_cached
    if not query_images or not pool:
        return []
    q = torch.nn.functional.normalize(embed_images_cached(clip_model, query_images, cache_dir).float(), dim=-1)
    query = torch.nn.functional.normalize(q.mean(0), dim=0)
    emb = torch.nn.functional.normalize(embed_images_cached(clip_model, pool, cache_dir).float(), dim=-1)
    sims = (emb @ query).tolist()
    # Ties broken by path so the order never depends on the filesystem.
    return sorted(zip(pool, sims), key=lambda ps: (-ps[1], str(ps[0])))


def allocate_tokens(n_images: int, k: int) -> list[int]:
    """Generation tokens for each of `n_images` ranked soft positives (most similar first).

    The ranked list is cut into k-1 contiguous chunks (the first ones one longer when it does not
    divide); chunk 0 gets k-1 tokens, the last chunk 1 token. The real images get all k.
    """
    if n_images <= 0:
        return []
    chunks = max(k - 1, 1)
    base, extra = divmod(n_images, chunks)
    tokens = []
    for i in range(chunks):
        size = base + (1 if i < extra else 0)
        tokens += [max(k - 1 - i, 1)] * size
    return tokens


def _missing(who: str, purpose: str) -> str:
    return f"{who} needs a CLIP checkpoint to {purpose}: pass --model clip=PATH or --set retrieval_clip=PATH"


def retrieval_clip(explicit: str | None, ctx, tiny: bool, who: str, purpose: str):
    """The CLIP a method ranks images with (`unifybench.models.weights.resolve`: `--model clip=`, else its own
    setting, else the tiny CLIP when `tiny`); anything else is a one-line UserError saying what to pass."""
    from unifybench.models.encoders.clip import load_clip
    from unifybench.models.weights import resolve
    path = resolve("clip", explicit, ctx, tiny=tiny, missing=_missing(who, purpose))
    return load_clip(path, device=ctx.device)


def retrieval_clip_need(explicit: str | None, ctx, tiny: bool, who: str, purpose: str):
    """`retrieval_clip`'s checkpoint as a declared need (`unifybench.needs`): located, not loaded."""
    from unifybench import needs
    return needs.weights("clip", explicit, ctx, f"method {who} (retrieval CLIP)", missing=_missing(who, purpose),
                         tiny=tiny)
