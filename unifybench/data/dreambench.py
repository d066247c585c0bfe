"""Loader for DreamBench (the DreamBooth dataset, Ruiz et al., CVPR 2023): 30 subjects, 25 prompts each.

Files read, relative to the root (the layout of DreamBooth's ``dataset/`` folder; a downscaled copy lives in
the project's ``shared/data/dreambench``)::

    prompts_and_classes.txt     the "subject_name,class" table (one "name,class" line per subject), then the
                                "Object Prompts" and "Live Subject Prompts" lists, one
                                ``'a {0} {1} in the jungle'.format(unique_token, class_token),`` line per prompt
    <subject>/*.jpg|png         the subject's photos (4-6 each, 158 in all), natural name order

The root is the ``root`` argument, else the environment variable ``UNIFYBENCH_DREAMBENCH_ROOT``; there is no
other default.

A subject is *live* when its class is an animal or a person (DreamBench: the classes "cat" and "dog", 9
subjects) and gets the live-subject prompts; every other subject (21) gets the object prompts. Category:
"pet" for animals, "person" for people, "object" otherwise.

Items: one ``gen`` item per prompt (``dreambench/<subject>/gen/<i>``, ``images_per_prompt`` images each, 4 by
default: 30 x 25 x 4 = 3000 images). The prompt carries the placeholder and the class noun, as DreamBooth
writes it with its rare token: ``'a {0} {1} in the jungle'`` -> ``"a <sks> dog in the jungle"``; a method
substitutes its identifier for ``<sks>``. ``meta`` keeps the original template and the generation type.

DreamBench has no train/test split: ``train_images`` and ``test_images`` are the same list, the subject's
photos (the references of CLIP-I and DINO, and a method's training images).

Loading reads the text file and lists folders, never opening an image; every problem found is collected:
``concepts()``/``items()`` raise the first one (a DataError naming the file and field, with the count of the
others), ``validate()`` returns them all plus every photo that does not decode.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from unifybench.data.schema import GEN, PLACEHOLDER, Benchmark, Concept, Item
from unifybench.data.unifybench import check_concept_name, list_images, natural_key
from unifybench.errors import DataError, UserError

ENV_ROOT = "UNIFYBENCH_DREAMBENCH_ROOT"
PROMPTS_FILE = "prompts_and_classes.txt"
TABLE_HEADER = "subject_name,class"
SECTIONS = {"object": "Object Prompts", "live_subject": "Live Subject Prompts"}
ANIMAL_CLASSES = frozenset({"cat", "dog", "puppy", "kitten", "bird", "parrot", "horse", "rabbit", "bunny",
                            "hamster", "guinea pig", "fish", "turtle", "lizard", "pig", "cow", "sheep", "goat"})
PERSON_CLASSES = frozenset({"person", "man", "woman", "boy", "girl", "child", "baby", "people"})
_PROMPT_LINE = re.compile(r"""^\s*(['"])(?P<text>.*)\1\s*\.format\(\s*unique_token\s*,\s*class_token\s*\)\s*,?\s*$""")


def is_live(class_noun: str) -> bool:
    """True for the animal and person classes (DreamBench's live subjects: cat, dog)."""
    return class_noun.strip().lower() in ANIMAL_CLASSES | PERSON_CLASSES


def render_prompt(template: str, class_noun: str) -> str:
    """DreamBooth's ``'a {0} {1} ...'`` with the placeholder for {0} and the class noun for {1}."""
    return template.replace("{0}", PLACEHOLDER).replace("{1}", class_noun)


@dataclass
class _Data:
    concepts: list[Concept]
    prompts: dict[str, list[str]]          # generation type -> templates with {0} and {1}
    problems: list[tuple[str, str, str | None]] = field(default_factory=list)

    def raise_first(self) -> None:
        if self.problems:
            p, m, f = self.problems[0]
            more = len(self.problems) - 1
            if more:
                m += f" (and {more} more problem{'s' if more > 1 else ''}; see `unifybench validate`)"
            raise DataError(p, m, f)


def parse_prompts_and_classes(text: str, path: Path, problems: list) -> tuple[list[tuple[str, str, int]],
                                                                             dict[str, list[str]]]:
    """([(subject, class, line number)], {generation type: [template]}); problems are appended, not raised.

    Fields in the messages: "subject_name,class" for the table, "line N" for a bad line, the section title
    for a missing or empty prompt list.
    """
    lines = text.splitlines()
    rows: list[tuple[str, str, int]] = []
    header = next((i for i, ln in enumerate(lines) if ln.strip().replace(" ", "") == TABLE_HEADER), None)
    if header is None:
        problems.append((str(path), f"the class table (a {TABLE_HEADER!r} header line) is missing", TABLE_HEADER))
    else:
        for i in range(header + 1, len(lines)):
            ln = lines[i].strip()
            if not ln:
                if rows:
                    break
                continue
            if ln in ("Prompts",) or ln in SECTIONS.values():
                break
            name, sep, cls = (part.strip() for part in ln.partition(","))
            if not sep or not cls or "," in cls:
                problems.append((str(path), f"expected 'subject_name,class', got {ln!r}", f"line {i + 1}"))
                continue
            rows.append((name, cls, i + 1))

    prompts: dict[str, list[str]] = {}
    starts = {key: next((i for i, ln in enumerate(lines) if ln.strip() == title), None)
              for key, title in SECTIONS.items()}
    for key, title in SECTIONS.items():
        start = starts[key]
        if start is None:
            problems.append((str(path), f"the {title!r} section is missing", title))
            continue
        found: list[str] = []
        inside = False
        for i in range(start + 1, len(lines)):
            ln = lines[i].strip()
            if not inside:
                if re.match(r"^prompt_list\s*=\s*\[$", ln):
                    inside = True
                elif ln in SECTIONS.values():
                    break
                continue
            if ln == "]":
                break
            if not ln:
                continue
            m = _PROMPT_LINE.match(lines[i])
            if not m:
                problems.append((str(path), f"not a prompt line of the form "
                                            f"'...{{0}} {{1}}...'.format(unique_token, class_token): {ln!r}",
                                 f"line {i + 1}"))
                continue
            template = m.group("text")
            if "{0}" not in template or "{1}" not in template:
                problems.append((str(path), f"prompt {template!r} lacks {{0}} (the subject token) or {{1}} "
                                            f"(the class noun)", f"line {i + 1}"))
                continue
            found.append(template)
        if not found:
            problems.append((str(path), f"no prompts in the {title!r} list", title))
        prompts[key] = found
    return rows, prompts


class DreamBench(Benchmark):
    """DreamBench (DreamBooth): 30 subjects, 25 object or live-subject prompts each, 4 images per prompt."""

    name = "dreambench"

    def __init__(self, root: str | Path | None = None, images_per_prompt: int = 4):
        if root is None or root == "":
            root = os.environ.get(ENV_ROOT) or None
        if root is None:
            raise UserError(f"benchmark 'dreambench' needs its data folder: pass --data-root PATH or set "
                            f"{ENV_ROOT}")
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(root, "benchmark root does not exist")
        if not root.is_dir():
            raise DataError(root, "benchmark root is not a folder")
        if not isinstance(images_per_prompt, int) or isinstance(images_per_prompt, bool) or images_per_prompt < 1:
            raise UserError(f"images_per_prompt must be a positive integer, got {images_per_prompt!r}")
        self.root = root.resolve()
        self.images_per_prompt = images_per_prompt
        self._data: _Data | None = None

    # ---- public API

    def concepts(self) -> list[Concept]:
        return list(self._ready().concepts)

    def items(self, concept: Concept) -> list[Item]:
        data = self._ready()
        c = self.concept(concept if isinstance(concept, str) else concept.name)
        return [Item(id=f"{self.name}/{c.name}/{GEN}/{i}", concept=c.name, task=GEN,
                     prompt=render_prompt(t, c.class_noun), n_images=self.images_per_prompt,
                     meta=(("generation_type", c.generation_type), ("template", t)))
                for i, t in enumerate(data.prompts.get(c.generation_type, []))]

    def prompts(self, generation_type: str) -> list[str]:
        """The templates of one list ("object" or "live_subject"), with DreamBooth's {0} and {1}."""
        return list(self._ready().prompts.get(generation_type, []))

    def data_files(self) -> list[Path]:
        return [self.root / PROMPTS_FILE]

    def validate(self) -> list[str]:
        """Every problem of the prompt file and the folders, then every photo that does not decode."""
        from PIL import Image

        data = self._load()
        problems = [str(DataError(p, m, f)) for p, m, f in data.problems]
        for c in data.concepts:
            for path in c.train_images:
                try:
                    with Image.open(path) as im:
                        im.verify()
                    with Image.open(path) as im:
                        im.load()
                except Exception as e:  # noqa: BLE001 - every failure is one reported line
                    problems.append(f"{path}: image does not decode ({type(e).__name__}: {e})")
        return problems

    # ---- loading

    def _ready(self) -> _Data:
        data = self._load()
        data.raise_first()
        return data

    def _load(self) -> _Data:
        if self._data is not None:
            return self._data
        path = self.root / PROMPTS_FILE
        problems: list[tuple[str, str, str | None]] = []
        if not path.is_file():
            problems.append((str(path), "file is missing (the subject -> class table and the prompt lists)", None))
            self._data = _Data([], {}, problems)
            return self._data
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            problems.append((str(path), f"not UTF-8 text ({e.reason})", None))
            self._data = _Data([], {}, problems)
            return self._data
        rows, prompts = parse_prompts_and_classes(text, path, problems)
        concepts: list[Concept] = []
        seen: set[str] = set()
        for name, cls, line in rows:
            try:
                check_concept_name(name, path, field=f"line {line}")
            except DataError as e:
                problems.append((e.path, str(e).split(": ", 1)[1], e.field))
                continue
            if name in seen:
                problems.append((str(path), f"subject {name!r} is listed twice", f"line {line}"))
                continue
            seen.add(name)
            folder = self.root / name
            images = list_images(folder, root=self.root)
            if not folder.is_dir():
                problems.append((str(folder), f"subject {name!r} (line {line} of {PROMPTS_FILE}) has no folder",
                                 None))
                continue
            if not images:
                problems.append((str(folder), f"subject {name!r} has no images", None))
                continue
            noun = cls.strip()
            live = is_live(noun)
            category = ("person" if noun.lower() in PERSON_CLASSES else "pet") if live else "object"
            concepts.append(Concept(name=name, category=category, class_noun=noun,
                                    generation_type="live_subject" if live else "object",
                                    train_images=tuple(images), test_images=tuple(images)))
        if not rows and not any(f == TABLE_HEADER for _, _, f in problems):
            problems.append((str(path), "the class table lists no subject", TABLE_HEADER))
        for d in sorted(self.root.iterdir(), key=lambda p: natural_key(p.name)) if rows else ():
            if d.is_dir() and not d.name.startswith(".") and d.name not in seen and list_images(d):
                problems.append((str(d), f"folder of images not listed in the class table of {PROMPTS_FILE}", None))
        concepts.sort(key=lambda c: natural_key(c.name))
        self._data = _Data(concepts, prompts, problems)
        return self._data
