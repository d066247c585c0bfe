"""The text answers a run wrote (`concepts/<c>/predictions.jsonl`), and the check every tiny run passes: the
tiny backbones are steered to readable text in their saved weights (models/<family>/tiny.py), so no answer
is empty, blank or a lone piece of a character."""
from __future__ import annotations

import json
from pathlib import Path

TEXT_TASKS = ("rec", "vqa", "text_qa", "mc", "caption")


def text_answers(run_dir: Path) -> list[dict]:
    return [p for f in sorted((Path(run_dir) / "concepts").glob("*/predictions.jsonl"))
            for p in map(json.loads, f.read_text().splitlines()) if p["task"] in TEXT_TASKS]


def unreadable(run_dir: Path) -> list[dict]:
    """The text answers that are not visible text (none, in a tiny run)."""
    return [p for p in text_answers(run_dir)
            if not isinstance(p.get("text"), str) or not p["text"].strip() or "\ufffd" in p["text"]]
