"""Writes Yo'LLaVA-format data folders for the tests, in the exact file formats of the project notes (section 1
of shared/notes/yochameleon_yollava.md): train|test/<c>/N.png, the nested yollava-visual-qa.json, text_qa.json
("option" singular, bare "sks"), subject-detailed-captions.json, and both training-conversation forms.

`write_small` makes a 4-concept folder with real 1x1 PNGs (validate() can open them); `write_release_sized`
makes the release's 40 concepts with its image and question counts, as zero-byte files (loading never opens
an image, so they are enough to time the index).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

# The release's per-concept (train, test) image counts and visual-question counts (notes, 1.2 and 1.3).
RELEASE = {
    "bo": (10, 10, 8), "brown-duck": (10, 10, 4), "butin": (5, 5, 2), "cat-cup": (5, 5, 4),
    "chua-thien-mu": (5, 5, 2), "ciin": (5, 5, 3), "denisdang": (10, 10, 5), "dragon": (10, 10, 1),
    "duck-banana": (10, 10, 3), "dug": (5, 5, 3), "elephant": (10, 10, 3), "fire": (10, 10, 9),
    "henry": (4, 6, 4), "khanhvy": (10, 10, 8), "lamb": (10, 10, 6), "mam": (10, 10, 2),
    "marie-cat": (9, 10, 4), "mydieu": (5, 5, 5), "neurips-cup": (10, 10, 3), "nha-tho-hanoi": (6, 6, 2),
    "nha-tho-hcm": (5, 5, 4), "oong": (10, 10, 10), "phuc-map": (10, 10, 6), "pig-cup": (7, 8, 6),
    "pusheen-cup": (6, 7, 4), "shiba-black": (11, 10, 3), "shiba-gray": (10, 11, 4), "shiba-sleep": (10, 10, 3),
    "shiba-yellow": (10, 10, 3), "thao": (10, 10, 3), "thap-but": (5, 5, 1), "thap-cham": (5, 5, 4),
    "thuytien": (10, 10, 4), "tokyo-keyboard": (5, 5, 1), "toodles-galore": (10, 10, 5), "viruss": (10, 10, 6),
    "water": (9, 10, 6), "willinvietnam": (10, 10, 9), "yellow-duck": (10, 10, 2), "yuheng": (5, 5, 5),
}
NO_CAPTION = ("neurips-cup", "nha-tho-hanoi", "nha-tho-hcm")

_PNG: bytes | None = None


def png_bytes() -> bytes:
    global _PNG
    if _PNG is None:
        from PIL import Image
        buf = io.BytesIO()
        Image.new("RGB", (1, 1), (200, 120, 40)).save(buf, format="PNG")
        _PNG = buf.getvalue()
    return _PNG


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def write_images(root: Path, counts: dict[str, tuple[int, int]], real: bool) -> None:
    data = png_bytes() if real else b""
    for c, (n_train, n_test) in counts.items():
        for split, n in (("train", n_train), ("test", n_test)):
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                (folder / f"{k}.png").write_bytes(data)


def vqa_entry(question: str, a: str, b: str, correct: str) -> dict:
    return {"question": question, "options": {"A": a, "B": b}, "correct_answer": correct}


def text_entry(question: str, a: str, b: str, correct: str) -> dict:
    return {"question": question, "option": {"A": a, "B": b}, "correct_answer": correct}


def write_small(root: Path) -> Path:
    """bo (pet; 11 train incl. 10.png, 3 test), mam (pet), thao (person), cat-cup (object, no caption).

    Visual QA (nested, 4 questions), text QA (bo: 10 questions with 9 answers at "A", the release's skew in
    small; the others 1 each), captions for 3 of 4, conversations for bo ([YL] form) and mam ([YC] form).
    """
    write_images(root, {"bo": (11, 3), "mam": (2, 3), "thao": (2, 2), "cat-cup": (2, 2)}, real=True)
    img = "./yollava-data/test/{}/{}.png"
    write_json(root / "yollava-visual-qa.json", {
        "bo": {img.format("bo", 2): vqa_entry("What animal does <sks> resemble?", "Cat", "Dog", "B"),
               img.format("bo", 0): vqa_entry("What is <sks> lying on?", "A carpet", "A sofa", "A")},
        "mam": {img.format("mam", 1): vqa_entry("What color are <sks>'s eyes?", "Yellow", "Blue", "A")},
        "cat-cup": {img.format("cat-cup", 0): vqa_entry("What is <sks> made of?", "Paper", "Ceramic", "B")},
    })
    bo_text = {str(k): text_entry(f"Question {k} about sks?", f"right {k}", f"wrong {k}", "A") for k in range(10)}
    bo_text["0"] = text_entry("Is sks a dog or a cat?", "Dog", "Cat", "A")
    bo_text["4"] = text_entry("Does sks wear a hat?", "Yes", "No", "B")      # the one "B" answer
    write_json(root / "text_qa.json", {
        "bo": bo_text,
        "mam": {"0": text_entry("Is sks a cat or a dog?", "Cat", "Dog", "A")},
        "thao": {"0": text_entry("Does sks wear glasses?", "Yes", "No", "A")},
        "cat-cup": {"0": text_entry("Is sks a cup?", "Yes", "No", "A")},
    })
    write_json(root / "subject-detailed-captions.json", {
        "bo": "<sks> is a Shiba Inu dog with cream and reddish-brown fur.",
        "mam": "<sks> is a fluffy grey tabby cat with captivating yellow eyes.",
        "thao": "<sks> is a young woman with long black hair.",
    })
    write_json(root / "example_training_data" / "bo" / "text-only-conversation.json", {
        "./data/train/bo/0.png": [{"Human": "What color is <bo>'s fur?", "AI": "<bo> has cream fur."},
                                  {"Human": "What is <bo>'s shape?", "AI": "<bo> is round."}],
        "./data/train/bo/1.png": [{"Human": "What color is <bo>'s fur?", "AI": "<bo> has cream fur."},
                                  {"Human": "What is <bo>'s shape?", "AI": "<bo> looks fluffy."}],
    })
    write_json(root / "train" / "mam" / "json" / "text_conversation.json", [
        {"image": ["/data/train/mam/0.png"],
         "conversations": [{"from": "human", "value": "What color are <sks>'s eyes?"},
                           {"from": "bot", "value": "<sks> has yellow eyes."}]},
        {"image": ["/data/train/mam/1.png"],
         "conversations": [{"from": "human", "value": "<image>\nIs <sks> in this photo?"},
                           {"from": "bot", "value": "Yes, <sks> is in this photo."},
                           {"from": "human", "value": "Draw <sks>."}, {"from": "bot", "value": "<image>"}]},
    ])
    return root


def write_release_sized(root: Path) -> Path:
    """The release's 40 concepts (327 train + 333 test zero-byte images), 170 visual and 400 text questions
    (396 text answers at "A", the 4 "B" in bo), captions for 37 concepts."""
    write_images(root, {c: (tr, te) for c, (tr, te, _) in RELEASE.items()}, real=False)
    vqa = {c: {f"./yollava-data/test/{c}/{k}.png": vqa_entry(f"Question {k} about <sks>?", "one", "two", "AB"[k % 2])
               for k in range(nq)} for c, (_, _, nq) in RELEASE.items()}
    write_json(root / "yollava-visual-qa.json", vqa)
    text = {c: {str(k): text_entry(f"Is sks thing {k}?", "yes", "no",
                                   "B" if c == "bo" and k in (1, 4, 5, 9) else "A") for k in range(10)}
            for c in RELEASE}
    write_json(root / "text_qa.json", text)
    write_json(root / "subject-detailed-captions.json",
               {c: f"<sks> is the concept {c}." for c in RELEASE if c not in NO_CAPTION})
    return root
