"""Where a data folder comes from: the one resolver for benchmarks (`--data-root`) and the forgetting
evaluators (their `data=` parameter).

The explicit value wins, else the environment variable; a missing or nonexistent folder is a one-line
`UserError` that names where the path came from.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from unifybench.errors import UserError


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
