"""Tiny data in the real formats for the forgetting evaluators (cais/mmlu, POPE/LLaVA, MMBench dev TSV)."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image

INSTR = "\nAnswer the question using a single word or phrase."


def png(color, size=16) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def png_b64(color) -> str:
    buf = io.BytesIO()
    png(color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_mmlu(root: Path, subjects=("abstract_algebra", "anatomy"), n=4, fmt="jsonl") -> Path:
    for s, subject in enumerate(subjects):
        d = root / subject
        d.mkdir(parents=True, exist_ok=True)
        rows = [{"question": f"Which number is {i + s} times two?", "subject": subject,
                 "choices": [str(2 * (i + s)), str(i + s), "7", "dog"], "answer": (i + s) % 4} for i in range(n)]
        # rotate so the right text is at `answer`
        for r in rows:
            right = r["choices"][0]
            others = r["choices"][1:]
            r["choices"] = others[:r["answer"]] + [right] + others[r["answer"]:]
        dev = [{"question": "What is one plus one?", "subject": subject, "choices": ["3", "2", "1", "0"], "answer": 1}]
        if fmt == "jsonl":
            (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (d / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
        else:
            import pandas as pd
            pd.DataFrame(rows).to_parquet(d / "test-00000-of-00001.parquet")
            pd.DataFrame(dev).to_parquet(d / "dev-00000-of-00001.parquet")
    (root / "all").mkdir(exist_ok=True)  # the hub snapshot's pooled folder is skipped
    return root


POPE_OBJECTS = {"random": [("dog", "yes"), ("car", "no")],
                "popular": [("cat", "yes"), ("person", "no")],
                "adversarial": [("bowl", "yes"), ("spoon", "no")]}


def write_pope(root: Path, shuffle_labels: bool = False) -> Path:
    """llava_pope_test.jsonl + coco_pope_<cat>.json (label lines) + val2014/ images."""
    images = root / "val2014"
    images.mkdir(parents=True, exist_ok=True)
    questions, qid = [], 0
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for c, (cat, objs) in enumerate(POPE_OBJECTS.items()):
        labels = []
        for k, (obj, label) in enumerate(objs):
            name = f"COCO_val2014_{c:06d}{k:06d}.jpg"
            png(colors[c]).save(images / name, format="PNG")
            qid += 1
            text = f"Is there a {obj} in the image?"
            questions.append({"question_id": qid, "image": name, "text": text + INSTR, "category": cat})
            labels.append({"question_id": k + 1, "image": name, "text": text, "label": label})
        if shuffle_labels:
            labels.reverse()
        (root / f"coco_pope_{cat}.json").write_text("".join(json.dumps(l) + "\n" for l in labels))
    (root / "llava_pope_test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    return root


MMB_QUESTIONS = [
    # index, question, hint, options, answer, category
    (0, "What colour is the square?", "", ["red", "green", "blue", "yellow"], "A", "color"),
    (1, "Which animal barks?", "Think of pets.", ["cat", "dog", "fish"], "B", "animals"),
    (2, "How many sides has a triangle?", "", ["four", "three"], "B", "math"),
]


def write_mmbench(path: Path, copies: bool = False, image_ref: bool = True) -> Path:
    """A dev-format TSV; with `copies`, the rotated orders are rows `index + k * 1e6` (official layout)."""
    import pandas as pd
    rows = []
    for index, q, hint, opts, ans, cat in MMB_QUESTIONS:
        ks = range(len(opts)) if copies else [0]
        right = "ABCD".index(ans)
        for k in ks:
            shifted = opts[k:] + opts[:k]
            row = {"index": index + k * 1_000_000, "question": q, "hint": hint,
                   "answer": "ABCD"[(right - k) % len(opts)], "category": cat,
                   "image": png_b64((40 * index, 100, 200))}
            for j, letter in enumerate("ABCD"):
                row[letter] = shifted[j] if j < len(shifted) else ""
            rows.append(row)
    if image_ref:  # the last question's image points at question 0's row (VLMEvalKit-style)
        rows[-1]["image"] = "0"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path
