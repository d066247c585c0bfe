"""Where the tests find the development folder ``../shared`` (the papers' text, the real DreamBench copy).

A user's clone has no such folder, so every test that reads it asks here and skips, with the reason
shown, when the thing it needs is absent. ``UNIFYBENCH_SHARED_ROOT`` overrides the location (CI points it
at an empty folder once to prove those tests skip instead of failing); ``UNIFYBENCH_DREAMBENCH_ROOT``, the
variable the DreamBench loader itself reads, points the real-DreamBench tests at a user's own download.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV_SHARED = "UNIFYBENCH_SHARED_ROOT"
ENV_DREAMBENCH = "UNIFYBENCH_DREAMBENCH_ROOT"


def shared_root() -> Path:
    return Path(os.environ.get(ENV_SHARED) or REPO.parent / "shared")


def dreambench_root() -> Path:
    """The real DreamBench: the user's download when they name one, else the development copy."""
    return Path(os.environ.get(ENV_DREAMBENCH) or shared_root() / "data" / "dreambench")


def require_dreambench() -> Path:
    root = dreambench_root()
    if not (root / "prompts_and_classes.txt").is_file():
        pytest.skip(f"the real DreamBench is not at {root} (set {ENV_DREAMBENCH} to a download, "
                    "or keep ../shared beside the repository)")
    return root


def require_papers() -> Path:
    papers = shared_root() / "papers"
    if not papers.is_dir():
        pytest.skip(f"the papers' text is not at {papers} (it sits in ../shared beside the repository)")
    return shared_root()
