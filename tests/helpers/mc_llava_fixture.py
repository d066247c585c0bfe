"""Writes an MC-LLaVA-format data folder for the tests, in the exact file formats of the project notes
(shared/notes/mc_llava.md, section 1.3): concept_type.json, scenarios.json, <k>/concept/train/train.json,
train images with their 0/255 `N_mask.png`, test images with vqa.json / choice.json / qa.json, and per
scenario the multi-concept images with position.json, vqa.json, choice.json, qa.json, vqa_position.json,
plus 4o_generate_training_data/<c>/conversation.json and random-images/. Image paths inside the JSON files
are written as the reference code writes them ("../mcdataset/<k>/...").

The images are generated (the real ones are third-party film stills): a coloured figure per concept on a
grey, non-square background; its mask is the figure. Counts are small (3 train, 2 test, 2 multi images)
so that the tiny method runs stay fast; the formats, not the counts, are the release's.

Scenarios: "Alex_Yu" (two_concept) and "Ann_Ben_Yuki" (three_concept): "Yu" is a substring of
"Yuki" and of "Ann_Ben_Yuki", the reference's substring matching would confuse them. In multi image 1 of
"Ann_Ben_Yuki" Ben is absent (null in position.json).
"""
from __future__ import annotations

import json
from pathlib import Path

SCENARIOS = {"two_concept": ["Alex_Yu"], "three_concept": ["Ann_Ben_Yuki"]}
COLOURS = {"Alex": (220, 40, 40), "Yu": (40, 200, 60), "Ann": (40, 80, 220), "Ben": (230, 200, 30),
           "Yuki": (160, 40, 200)}
PREFIX = "../mcdataset"
SIZE = (48, 36)


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def _figure(names: list[str], index: int, size=SIZE):
    """RGB image with one rectangle per concept (shifted by `index`) and the mask of the first one."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", size, (128, 128, 128))
    mask = Image.new("L", size, 0)
    d, dm = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    w = size[0] // max(len(names), 1)
    for j, n in enumerate(names):
        box = (j * w + 2 + index % 3, 4 + index % 5, (j + 1) * w - 3, size[1] - 4)
        d.rectangle(box, fill=COLOURS[n])
        if j == 0:
            dm.rectangle(box, fill=255)
    return img, mask


def write_mc_llava(root: Path, n_train: int = 3, n_test: int = 2, n_multi: int = 2) -> Path:
    root = Path(root)
    types = {}
    for k, scenarios in SCENARIOS.items():
        train_list = {}
        for sc in scenarios:
            members = sc.split("_")
            for n in members:
                types[n] = k
                tdir = root / k / "concept" / "train" / n
                tdir.mkdir(parents=True, exist_ok=True)
                train_list[n] = []
                for i in range(n_train):
                    img, mask = _figure([n], i)
                    img.save(tdir / f"{i}.png")
                    mask.save(tdir / f"{i}_mask.png")
                    train_list[n].append(f"{i}.png")
                write_json(tdir / "caption_llava.json", {f"{i}.png": f"A photo of {n}." for i in range(n_train)})
                sdir = root / k / "concept" / "test" / n
                sdir.mkdir(parents=True, exist_ok=True)
                vqa, choice = {}, {}
                for i in range(n_test):
                    _figure([n], i + 7)[0].save(sdir / f"{i}.png")
                    key = f"{PREFIX}/{k}/concept/test/{n}/{i}.png"
                    vqa[key] = {"Human": f"What colour is <{n}> wearing?", "AI": f"<{n}> is wearing a bright colour."}
                    choice[key] = {"Human": f"What is <{n}> doing? A. Standing B. Swimming",
                                   "AI": "A" if i % 2 == 0 else "B"}
                write_json(sdir / "vqa.json", vqa)
                write_json(sdir / "choice.json", choice)
                write_json(sdir / "qa.json", [
                    {"question": f"<image>\nWhat is <{n}>'s job?\nA. Doctor\nB. Teacher", "answer": "B"},
                    {"question": f"Where does <{n}> live? A. In a city B. On a farm C. At sea", "answer": "A"}])
                write_json(root / "4o_generate_training_data" / n / "conversation.json", {
                    f"{PREFIX}/{k}/concept/train/{n}/0.png": [
                        {"Human": f"<image>\nWho is <{n}>?", "AI": f"<{n}> is a character in the film."},
                        {"Human": f"What does <{n}> like?", "AI": f"<{n}> likes long walks."}]})
            mdir = root / k / "multi" / sc
            mdir.mkdir(parents=True, exist_ok=True)
            position, mvqa, mchoice, vg = {}, {}, {}, {}
            for i in range(n_multi):
                present = [m for m in members if not (sc == "Ann_Ben_Yuki" and i == 1 and m == "Ben")]
                _figure(present, i)[0].save(mdir / f"{i}.png")
                key = f"{PREFIX}/{k}/multi/{sc}/{i}.png"
                position[key] = {m: ([3 + 10 * j, 5] if m in present else None) for j, m in enumerate(members)}
                a, b = members[0], members[-1]
                mvqa[key] = [{"Human": f"What is <{a}> holding?", "AI": f"<{a}> is holding a cup."},
                             {"Human": f"What is <{b}> wearing?", "AI": f"<{b}> wears a coat."},
                             {"Human": f"What are <{a}> and <{b}> doing?", "AI": f"<{a}> and <{b}> are talking."}]
                mchoice[key] = [{"Human": f"Is <{b}> sitting? A. Yes B. No", "AI": "B"},
                                {"Human": f"Where is <{a}>? A. Indoors B. Outdoors", "AI": "A"},
                                {"Human": f"Who is left of <{b}>? A. <{a}> B. Nobody", "AI": "A"}]
                vg[key] = [{"Human": f"Where is <{b}>? A. Right B. Left", "AI": "A"}]
            write_json(mdir / "position.json", position)
            write_json(mdir / "vqa.json", mvqa)
            write_json(mdir / "choice.json", mchoice)
            write_json(mdir / "vqa_position.json", vg)
            write_json(mdir / "qa.json", [{"question": f"Are <{members[0]}> and <{members[1]}> friends? "
                                                       f"A. Yes B. No", "answer": "A"}])
        write_json(root / k / "concept" / "train" / "train.json", train_list)
    write_json(root / "concept_type.json", types)
    write_json(root / "scenarios.json", [sc for scs in SCENARIOS.values() for sc in scs])
    rdir = root / "random-images"
    rdir.mkdir(parents=True, exist_ok=True)
    from PIL import Image
    for i in range(3):
        Image.new("RGB", (40, 40), (20 * i, 100, 200 - 30 * i)).save(rdir / f"{i}.jpg")
    return root
