"""Build the bundled mini benchmark (unifybench/data/mini/) from the DreamBench photos.

    python bench/make_mini.py [--src ../shared/data/dreambench] [--out unifybench/data/mini] [--check]

Deterministic: the same source folder and Pillow version give the same bytes. The output folder is
rebuilt from scratch on every run (everything in it is generated here). `--check` builds into a temporary
folder and compares it with --out file by file (exit 1 on any difference), for CI.

The texts (info, extra facts, questions, answers, knowledge prompts, training conversations) are written
for this project by hand from what the photos show; every extra fact is invented.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "dreambench"
DEFAULT_OUT = REPO / "unifybench" / "data" / "mini"
MAX_SIDE = 256
JPEG_QUALITY = 85
SIZE_LIMIT = 3 * 1024 * 1024

# DreamBench subject -> (train source files, test source files). Near-duplicate shots are kept on one
# side of the split (cat 02/03 are one photo shifted; backpack 04/05 are one scene).
SPLITS = {
    "dog": (["00", "01", "02"], ["03", "04"]),
    "cat": (["00", "02", "03"], ["01", "04"]),
    "backpack": (["00", "02", "03"], ["04", "05"]),
    "bear_plushie": (["00", "01", "02"], ["03", "04"]),
}
# Easy negatives (and the local retrieval pool): photos of other DreamBench subjects, incl. other dogs/cats.
RANDOM_SOURCES = ["dog2/00", "dog6/00", "cat2/00", "backpack_dog/00", "wolf_plushie/00", "teapot/00",
                  "duck_toy/00", "can/00"]

# Everything a concept says, with the concept written "<name>" as in UnifyBench.
CONCEPTS = {
    "dog": {
        "info": {
            "class": "dog",
            "info": "<dog> is a fluffy Pembroke Welsh Corgi with orange-and-white fur, a white chest and muzzle, "
                    "large upright ears and a cheerful open-mouthed smile.",
            "extra_info": ["<dog> wears a red collar on weekends.",
                           "<dog> sleeps in a blue dog bed by the front door."],
            "conversation_type": "animal",
            "generation_type": "live_subject",
        },
        "vqa": [
            ("0.jpg", "What color is the wall behind <dog>?", "Orange."),
            ("0.jpg", "What is <dog> sitting on?", "A white stone ledge."),
            ("0.jpg", "Is <dog> looking at the camera?", "No, <dog> is looking to the side."),
            ("1.jpg", "Is <dog>'s mouth open in this photo?", "Yes, its mouth is open and its tongue is out."),
            ("1.jpg", "Is <dog> indoors or outdoors here?", "Outdoors, with green trees in the background."),
        ],
        "text_only": [
            ("What breed is <dog>?", "<dog> is a Pembroke Welsh Corgi."),
            ("What colors is <dog>'s fur?", "Orange and white."),
            ("What shape are <dog>'s ears?", "Large, pointed and upright."),
            ("What does <dog> wear on weekends?", "A red collar."),
            ("Where does <dog> sleep?", "In a blue dog bed by the front door."),
        ],
        "t2i": ["A photo of <dog>.",
                "A photo of <dog> on a weekend walk in the park.",
                "A photo of <dog> sleeping at home by the front door."],
        "conversations": {
            "0.jpg": [("Can you describe <dog>?",
                       "<dog> is a fluffy corgi with orange-and-white fur, big upright ears and a white chest."),
                      ("What is <dog>'s expression usually like?", "<dog> usually looks happy, with its mouth open.")],
            "1.jpg": [("Tell me about <dog>'s weekend look.", "On weekends <dog> wears a red collar.")],
            "2.jpg": [("Where is <dog>'s bed?", "<dog>'s blue dog bed is by the front door."),
                      ("Is <dog> a big dog?", "No, <dog> is a small, short-legged corgi.")],
        },
    },
    "cat": {
        "info": {
            "class": "cat",
            "info": "<cat> is an orange tabby cat with striped ginger fur, a white chin and chest, amber eyes "
                    "and long white whiskers.",
            "extra_info": ["<cat> wears a small silver bell on a green collar at home.",
                           "<cat>'s favorite toy is a yellow knitted mouse."],
            "conversation_type": "animal",
            "generation_type": "live_subject",
        },
        "vqa": [
            ("0.jpg", "Is <cat> sitting or lying down?", "Sitting upright."),
            ("0.jpg", "What is <cat> sitting on?", "Grass and dirt on the ground outdoors."),
            ("1.jpg", "What color are <cat>'s eyes?", "Amber."),
            ("1.jpg", "Is the background behind <cat> bright or dark?", "Dark."),
        ],
        "text_only": [
            ("What kind of cat is <cat>?", "An orange tabby cat."),
            ("What color is <cat>'s chest?", "White."),
            ("What hangs on <cat>'s collar at home?", "A small silver bell."),
            ("What is <cat>'s favorite toy?", "A yellow knitted mouse."),
        ],
        "t2i": {"personalized_driven_generation": ["A photo of <cat> relaxing at home.",
                                                   "A photo of <cat> playing with its favorite toy."]},
        "conversations": {
            "0.jpg": [("Can you describe <cat>?",
                       "<cat> is a ginger tabby cat with dark stripes, a white chest and amber eyes.")],
            "1.jpg": [("What does <cat> wear indoors?", "A green collar with a small silver bell."),
                      ("What pattern does <cat>'s fur have?", "Orange tabby stripes.")],
            "2.jpg": [("What does <cat> like to play with?", "<cat> loves its yellow knitted mouse."),
                      ("What are <cat>'s whiskers like?", "Long and white.")],
        },
    },
    "backpack": {
        "info": {
            "class": "backpack",
            "info": "<backpack> is a raspberry-red backpack with a zippered front pocket, two shoulder straps, "
                    "a small label patch and a few colorful enamel pins on the front pocket.",
            "extra_info": ["<backpack> is covered by a yellow rain cover on rainy days.",
                           "<backpack> has a silver star-shaped keychain clipped to its top handle."],
            "conversation_type": "object",
            "generation_type": "object",
        },
        "vqa": [
            ("0.jpg", "Where is <backpack> hanging?", "From a fallen, mossy tree trunk in a forest."),
            ("0.jpg", "What color is <backpack>?", "Raspberry red."),
            ("1.jpg", "What is on the front pocket of <backpack>?", "A few colorful pins and a small label patch."),
            ("1.jpg", "Is anyone wearing <backpack> in this photo?", "No, it is hanging from a log."),
        ],
        "text_only": [
            ("What color is <backpack>?", "Raspberry red."),
            ("How does <backpack>'s front pocket close?", "With a zipper."),
            ("What covers <backpack> on rainy days?", "A yellow rain cover."),
            ("What is clipped to <backpack>'s top handle?", "A silver star-shaped keychain."),
        ],
        "t2i": ["A photo of <backpack>.",
                "A photo of <backpack> on a rainy day.",
                "A close-up photo of <backpack>'s top handle."],
        "conversations": {
            "0.jpg": [("Can you describe <backpack>?",
                       "<backpack> is a raspberry-red backpack with a zippered front pocket and colorful pins.")],
            "1.jpg": [("How is <backpack> protected from rain?", "It gets a yellow rain cover on rainy days."),
                      ("What decorates <backpack>?", "A few enamel pins, one of them rainbow-colored.")],
            "2.jpg": [("Is there anything on <backpack>'s handle?", "Yes, a silver star-shaped keychain."),
                      ("How many shoulder straps does <backpack> have?", "Two.")],
        },
    },
    "bear_plushie": {
        "info": {
            "class": "stuffed animal",
            "info": "<bear_plushie> is a brown teddy bear plushie with a cream muzzle, a dark brown nose, white "
                    "paw pads, a 'Get Well' patch on its tummy and a light-blue ice pack on its head.",
            "extra_info": ["<bear_plushie> wears a red knitted scarf in winter.",
                           "<bear_plushie> sits on a green armchair in the living room."],
            "conversation_type": "object",
            "generation_type": "object",
        },
        "vqa": [
            ("0.jpg", "What is <bear_plushie> sitting on?", "Green grass."),
            ("0.jpg", "What is on top of <bear_plushie>'s head?", "A light-blue ice pack."),
            ("1.jpg", "What is behind <bear_plushie>?", "A red brick wall."),
            ("1.jpg", "What does the patch on <bear_plushie>'s tummy say?", "Get Well."),
            ("1.jpg", "Is <bear_plushie> raising an arm?", "Yes, one arm is raised to its head."),
        ],
        "text_only": [
            ("What kind of toy is <bear_plushie>?", "A brown teddy bear plushie."),
            ("What color is <bear_plushie>'s muzzle?", "Cream."),
            ("What does <bear_plushie> wear in winter?", "A red knitted scarf."),
            ("Where does <bear_plushie> sit in the living room?", "On a green armchair."),
        ],
        "t2i": {"personalized_driven_generation": ["A photo of <bear_plushie> on a snowy winter day.",
                                                   "A photo of <bear_plushie> in the living room."]},
        "conversations": {
            "0.jpg": [("Can you describe <bear_plushie>?",
                       "<bear_plushie> is a brown teddy bear with a blue ice pack on its head and a 'Get Well' "
                       "patch.")],
            "1.jpg": [("What does <bear_plushie> wear when it is cold?", "A red knitted scarf."),
                      ("What color are <bear_plushie>'s paw pads?", "White.")],
            "2.jpg": [("Where is <bear_plushie>'s usual spot?", "A green armchair in the living room."),
                      ("What is on <bear_plushie>'s tummy?", "A patch that says 'Get Well'.")],
        },
    },
}

ATTRIBUTION_HEAD = """\
# Attribution

The photos in this folder come from the **DreamBooth dataset** ("DreamBench"), released under the
Creative Commons Attribution 4.0 International license (full text in `LICENSE.md`):

> Nataniel Ruiz, Yuanzhen Li, Varun Jampani, Yael Pritch, Michael Rubinstein, Kfir Aberman.
> *DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven Generation.* CVPR 2023.
> Dataset: https://github.com/google/dreambooth

Changes: a subset of the photos was selected, each was shrunk to at most {max_side} pixels on its longer
side and re-encoded as JPEG (quality {quality}), and the files were renamed into the UnifyBench layout (table
below). The DreamBench prompt lists in `prompts_to_eval.json` are taken from the dataset's
`prompts_and_classes.txt`, with the subject token and class token written as `<sks>`.

The texts in `concept/**.json` (descriptions, questions, answers, knowledge prompts, training
conversations) were written for the UnifyBench project from what the photos show; every `extra_info` fact
is invented and describes no real animal or object. They are provided under the same CC-BY 4.0 terms.
Built by `bench/make_mini.py`; do not edit by hand.

## Photographers and sources

As credited in DreamBench's `references_and_licenses.txt`. Photos from Unsplash are also under the
Unsplash license (https://unsplash.com/license); the others were taken by the DreamBooth authors.

| file here | DreamBench file | credit | source |
|---|---|---|---|
"""


def parse_references(text: str) -> dict[str, dict]:
    """Subject -> {"credit": str, "files": {"00": source text}} from references_and_licenses.txt."""
    out: dict[str, dict] = {}
    current = None
    for line in re.split(r"^Licenses\s*$", text, flags=re.MULTILINE)[0].splitlines():
        line = line.strip()
        m = re.match(r"^([a-z][a-z0-9_]*):\s*(.*)$", line)
        if m and not re.match(r"^\d", line):
            current = out.setdefault(m.group(1), {"credit": m.group(2).strip(), "files": {}})
            continue
        if current is None or not line:
            continue
        m = re.match(r"^\(credit:\s*(.*)\)$", line)
        if m:
            current["credit"] = m.group(1).strip()
            continue
        m = re.match(r"^(\d\d):\s*(.*)$", line)
        if m:
            current["files"][m.group(1)] = m.group(2).strip()
    return out


def save_jpeg(src: Path, dst: Path) -> None:
    from PIL import Image, ImageOps
    with Image.open(src) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, "JPEG", quality=JPEG_QUALITY, optimize=True)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build(src: Path, out: Path) -> None:
    from unifybench.data.unifybench import parse_dreambench_prompts

    refs = parse_references((src / "references_and_licenses.txt").read_text(encoding="utf-8"))
    credits: list[tuple[str, str]] = []   # (file here, DreamBench file)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    train_lists = {}
    for name, (train_src, test_src) in SPLITS.items():
        spec = CONCEPTS[name]
        tdir, sdir = out / "concept" / "train" / name, out / "concept" / "test" / name
        for folder, sources in ((tdir, train_src), (sdir, test_src)):
            for i, stem in enumerate(sources):
                dst = folder / f"{i}.jpg"
                save_jpeg(src / name / f"{stem}.jpg", dst)
                credits.append((dst.relative_to(out).as_posix(), f"{name}/{stem}.jpg"))
        train_lists[name] = [f"{i}.jpg" for i in range(len(train_src))]
        write_json(tdir / "info.json", spec["info"])
        write_json(tdir / "conversations.json",
                   {k: [{"query": q, "answer": a} for q, a in turns] for k, turns in spec["conversations"].items()})
        write_json(sdir / "vqa.json", [{"image": img, "question": q, "answer": a} for img, q, a in spec["vqa"]])
        write_json(sdir / "text_only.json", [{"question": q, "answer": a} for q, a in spec["text_only"]])
        write_json(sdir / "t2i_conditions.json", spec["t2i"])
    write_json(out / "concept" / "train" / "train_images.json", train_lists)
    write_json(out / "concepts_list.json", list(SPLITS))

    for i, source in enumerate(RANDOM_SOURCES):
        dst = out / "random_images" / f"{i}.jpg"
        save_jpeg(src / f"{source}.jpg", dst)
        credits.append((dst.relative_to(out).as_posix(), f"{source}.jpg"))

    prompts = parse_dreambench_prompts((src / "prompts_and_classes.txt").read_text(encoding="utf-8"))
    if sorted(prompts) != ["live_subject", "object"] or any(len(v) != 25 for v in prompts.values()):
        raise SystemExit(f"unexpected prompt lists in {src / 'prompts_and_classes.txt'}")
    write_json(out / "prompts_to_eval.json", {"object": prompts["object"], "live_subject": prompts["live_subject"]})

    shutil.copyfile(src / "LICENSE.md", out / "LICENSE.md")
    rows = []
    for here, there in credits:
        subject, stem = there.split("/")[0], Path(there).stem
        ref = refs.get(subject)
        if ref is None:
            raise SystemExit(f"no credit for {subject} in references_and_licenses.txt")
        rows.append(f"| `{here}` | `{there}` | {ref['credit']} | {ref['files'].get(stem, '-')} |")
    text = ATTRIBUTION_HEAD.format(max_side=MAX_SIDE, quality=JPEG_QUALITY) + "\n".join(rows) + "\n"
    (out / "ATTRIBUTION.md").write_text(text, encoding="utf-8")

    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if size > SIZE_LIMIT:
        raise SystemExit(f"{out} is {size} bytes, over the {SIZE_LIMIT} byte limit")


def compare(a: Path, b: Path) -> list[str]:
    fa = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    diffs = [f"only in the fresh build: {f}" for f in sorted(set(fa) - set(fb))]
    diffs += [f"only in {b}: {f}" for f in sorted(set(fb) - set(fa))]
    diffs += [f"differs: {f}" for f in sorted(set(fa) & set(fb)) if not filecmp.cmp(a / f, b / f, shallow=False)]
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="DreamBench folder (default %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="rebuild in a temporary folder and compare with --out")
    args = parser.parse_args(argv)
    if not (args.src / "prompts_and_classes.txt").is_file():
        print(f"make_mini: {args.src} is not a DreamBench folder", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "mini"
            build(args.src, fresh)
            diffs = compare(fresh, args.out)
        for d in diffs:
            print(d)
        print(f"make_mini: {args.out} {'differs from' if diffs else 'matches'} a fresh build")
        return 1 if diffs else 0
    build(args.src, args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"make_mini: wrote {args.out} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
