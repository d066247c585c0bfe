"""A small folder in the DreamBench layout (its prompts_and_classes.txt and per-subject photos), written by
the DreamBench loader tests and the malformed-data table."""
from pathlib import Path

FMT = ".format(unique_token, class_token)"
SMALL_TXT = f"""Classes

subject_name,class
teddy,stuffed animal
pup,dog

Prompts

Object Prompts

prompt_list = [
'a {{0}} {{1}} in the jungle'{FMT},
'a red {{0}} {{1}}'{FMT}
]

Live Subject Prompts

prompt_list = [
'a {{0}} {{1}} in the jungle'{FMT},
'a {{0}} {{1}} wearing a red hat'{FMT},
'a {{0}} {{1}} in a chef outfit'{FMT}
]
"""


def write_small(root: Path, png: bytes = b"") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompts_and_classes.txt").write_text(SMALL_TXT, encoding="utf-8")
    for name, n in (("teddy", 3), ("pup", 11)):
        (root / name).mkdir()
        for k in range(n):
            (root / name / f"{k:02d}.jpg" if name == "teddy" else root / name / f"{k}.jpg").write_bytes(png)
    return root
