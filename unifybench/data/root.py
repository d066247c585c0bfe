"""Where a data folder comes from: the one resolver for benchmarks (`--data-root`) and the forgetting
evaluators (their `data=` parameter); and the one rule that a path a data file names stays inside it.

The explicit value wins, else the environment variable; a missing or nonexistent folder is a one-line
`UserError` that names where the path came from.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PureWindowsPath

from unifybench.errors import DataError, UserError


def root_env_var(name: str) -> str:
    """The environment variable that may hold `name`'s data folder: UNIFYBENCH_<NAME>_ROOT."""
    return "UNIFYBENCH_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_ROOT"


def resolve_root(given: str | Path | None, source: str, env_var: str, missing: str, what: str) -> Path:
    """`given` (from `source`, e.g. "--data-root"), else `$env_var`; `missing` when neither is set, and
    "`what` PATH (from SOURCE) does not exist" when the folder is not there."""
    path = given
    if not path and os.environ.get(env_var):
        path, source = os.environ[env_var], env_var
    if not path:
        raise UserError(missing)
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} {p} (from {source}) does not exist")
    return p


def check_inside(folder: Path, path: Path, file, field: str | None = None, what: str = "the data root",
                 every_link: bool = False) -> Path:
    """`path` when it stays inside `folder` once `..` and symlinks are resolved; otherwise a one-line
    DataError naming the data `file` (and `field`) that led to it. Data files name images relative to the
    data, so a benchmark never reads (or sends to a judge, or embeds in a report) a file from elsewhere.
    Symlinks are followed on the file and its folder (resolving every image is slow on big releases);
    `every_link` resolves the whole path (the report: few images, named by a results file)."""
    path, folder = Path(path), Path(folder)
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(folder))     # `..` and absolute paths
        if every_link or path.is_symlink() or path.parent.is_symlink():
            path.resolve().relative_to(folder.resolve())
    except (ValueError, OSError, RuntimeError):
        raise DataError(file, f"image {path} leaves {what} {folder}"
                              + (f" (a symlink to {path.resolve()})" if path.is_symlink() else ""),
                        field=field) from None
    return Path(path)


def relative_inside(folder: Path, name: str, file, field: str | None = None, what: str = "the data root",
                    every_link: bool = False) -> Path:
    """`folder / name` for a relative `name` (from data `file`'s `field`) that stays inside `folder`; an
    absolute `name` or one that leaves it (`../`, a symlink out) is a one-line DataError naming file and field."""
    if Path(name).is_absolute() or PureWindowsPath(name).drive:
        raise DataError(file, f"absolute path {name!r}; name images relative to {what}", field=field)
    return check_inside(folder, Path(folder) / name, file, field, what, every_link)
