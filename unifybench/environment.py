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
