"""What a results file records about the machine and the code, and how runs are seeded."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import random
import subprocess
from pathlib import Path

import unifybench.version

LIBRARIES = ("torch", "torchvision", "transformers", "open_clip_torch", "onnxruntime", "onnxruntime-gpu",
             "insightface", "lm_eval", "nltk", "sacrebleu", "openai", "numpy", "pillow", "safetensors")


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_hash() -> str | None:
    """The commit of the source tree this package runs from (None when not a git checkout)."""
    root = Path(unifybench.version.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


# The installed package's import roots (pyproject's package-dir): their .py files are the code of a run.
SOURCE_PACKAGES = ("unifybench", "unifybench.methods", "unifybench.evaluators", "unifybench.baselines")


def source_roots() -> list[Path]:
    """The folders the package's modules are imported from (one per import root, deduplicated)."""
    import importlib
    roots: list[Path] = []
    for name in SOURCE_PACKAGES:
        for folder in importlib.import_module(name).__path__:
            folder = Path(folder).resolve()
            if not any(folder == r or r in folder.parents for r in roots):
                roots.append(folder)
    return roots


def source_fingerprint(roots: list[Path] | None = None, extra: list[Path] = ()) -> str:
    """sha256 over every .py file under `roots` (default: the installed package) and the `extra` files (a
    user's own method module), by relative name and content: editing any module changes it. ~150 small
    files, read in milliseconds, so it is computed afresh every run rather than cached."""
    h = hashlib.sha256()
    for root in roots if roots is not None else source_roots():
        root = Path(root)
        for path in sorted(root.rglob("*.py")):
            h.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    for path in extra:
        h.update(f"extra:{Path(path).name}\0".encode())
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()


def source_dirty(roots: list[Path] | None = None) -> bool | None:
    """True when the package runs from a git checkout with uncommitted changes (or new files) under its
    source folders; False when clean; None when it is not a git checkout."""
    roots = [Path(r) for r in (roots if roots is not None else source_roots())]
    if not roots:
        return None
    try:
        top = subprocess.run(["git", "-C", str(roots[0]), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", top.stdout.strip(), "status", "--porcelain", "--",
                                 *[str(r) for r in roots]], capture_output=True, text=True, timeout=10)
        if status.returncode != 0:
            return None
        return any(line.strip() and line.rstrip().endswith(".py") for line in status.stdout.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(device: str, dtype: str) -> dict:
    import torch
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": device, "dtype": dtype,
            "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None,
            "libraries": library_versions()}


def derive_seed(seed: int, *parts: str) -> int:
    """A per-unit seed that does not depend on the order units run in (or on which rank runs them)."""
    digest = hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
