"""Building a tiny model folder once, atomically, in a shared cache."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


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
