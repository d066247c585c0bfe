"""Build the bundled mini forgetting sets (unifybench/data/mini_forgetting/): the tiny preset's MMLU, POPE
and MMBench data, each in its real file format, so a tiny forgetting run needs no download.

    python bench/make_mini_forgetting.py [--out unifybench/data/mini_forgetting] [--check]

* ``mmlu/<subject>/{dev,test}.jsonl``: the cais/mmlu record layout (question, subject, choices, answer
  index), questions written for this project;
* ``pope/llava_pope_test.jsonl`` + ``pope/coco_pope_<split>.json``: the POPE/LLaVA question and label
  files, yes/no questions about which object the mini benchmark's test photos show (images named
  relative to ``mini/concept/test``);
* ``mmbench/mmbench_mini.tsv``: the MMBench dev TSV columns with the photos as base64 JPEG (64 px).

Deterministic: the same Pillow gives the same bytes. ``--check`` compares a fresh build with --out.
The numbers these sets give on tiny random models test the pipeline only.
"""
from __future__ import annotations

import argparse
import base64
import csv
import filecmp
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "unifybench" / "data" / "mini_forgetting"
PHOTOS = REPO / "unifybench" / "data" / "mini" / "concept" / "test"
INSTR = "\nAnswer the question using a single word or phrase."

# (question, choices, index of the right one); written for this project
MMLU = {
    "abstract_algebra": [
        ("How many elements does the cyclic group Z_6 have?", ["3", "6", "12", "36"], 1),
        ("Which of these sets is a group under ordinary addition?", ["the positive integers", "the odd integers",
                                                                    "the integers", "the natural numbers"], 2),
        ("What is the order of the element 2 in Z_5 under addition?", ["1", "2", "4", "5"], 3),
        ("The identity element of the integers under addition is", ["0", "1", "-1", "there is none"], 0),
    ],
    "elementary_mathematics": [
        ("What is 7 multiplied by 8?", ["54", "56", "58", "64"], 1),
        ("Which number is prime?", ["21", "27", "29", "33"], 2),
        ("What is one quarter of 20?", ["4", "5", "6", "10"], 1),
        ("How many sides does a hexagon have?", ["5", "6", "7", "8"], 1),
    ],
}
MMLU_DEV = {"abstract_algebra": ("Which integer is the additive inverse of 3?", ["3", "0", "-3", "1/3"], 2),
            "elementary_mathematics": ("What is 2 plus 2?", ["3", "4", "5", "22"], 1)}

OBJECT = {"backpack": "backpack", "bear_plushie": "teddy bear", "cat": "cat", "dog": "dog"}
# POPE's three negative samplings, reduced to the mini's four objects: per split, which other object the
# "no" question asks about (random: any; popular: the most common other object; adversarial: the most
# similar one)
NEGATIVE = {"random": {"backpack": "cat", "bear_plushie": "backpack", "cat": "backpack", "dog": "teddy bear"},
            "popular": {"backpack": "dog", "bear_plushie": "dog", "cat": "dog", "dog": "cat"},
            "adversarial": {"backpack": "teddy bear", "bear_plushie": "dog", "cat": "dog", "dog": "cat"}}


def build(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    for subject, rows in MMLU.items():
        d = out / "mmlu" / subject
        d.mkdir(parents=True)
        write_jsonl(d / "test.jsonl", [{"question": q, "subject": subject, "choices": c, "answer": a}
                                       for q, c, a in rows])
        q, c, a = MMLU_DEV[subject]
        write_jsonl(d / "dev.jsonl", [{"question": q, "subject": subject, "choices": c, "answer": a}])

    pope = out / "pope"
    pope.mkdir(parents=True)
    questions, qid = [], 0
    for split, negative in NEGATIVE.items():
        labels = []
        for concept, obj in OBJECT.items():
            image = f"{concept}/0.jpg"
            for asked, label in ((obj, "yes"), (negative[concept], "no")):
                text = f"Is there a {asked} in the image?"
                qid += 1
                questions.append({"question_id": qid, "image": image, "text": text + INSTR, "category": split})
                labels.append({"question_id": qid, "image": image, "text": text, "label": label})
        write_jsonl(pope / f"coco_pope_{split}.json", labels)
    write_jsonl(pope / "llava_pope_test.jsonl", questions)

    mm = out / "mmbench"
    mm.mkdir(parents=True)
    options = ["backpack", "teddy bear", "cat", "dog"]
    rows = []
    for n, (concept, obj) in enumerate(OBJECT.items()):
        rows.append({"index": n, "question": "Which object is the main subject of the image?", "hint": "",
                     "A": options[0], "B": options[1], "C": options[2], "D": options[3],
                     "answer": "ABCD"[options.index(obj)], "category": "object_localization",
                     "image": jpeg_b64(PHOTOS / concept / "1.jpg")})
    with open(mm / "mmbench_mini.tsv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def jpeg_b64(path: Path) -> str:
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((64, 64))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="build into a temporary folder and compare with --out")
    args = ap.parse_args()
    if not args.check:
        build(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "m"
        build(fresh)
        a = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
        b = sorted(p.relative_to(args.out) for p in args.out.rglob("*") if p.is_file())
        bad = [str(p) for p in a if p not in b or not filecmp.cmp(fresh / p, args.out / p, shallow=False)]
        bad += [str(p) for p in b if p not in a]
        print("\n".join(bad) or "identical", file=sys.stderr)
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
