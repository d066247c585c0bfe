"""Loader for the UnifyBench folder layout (UniCTokens, NeurIPS 2025) and the bundled mini benchmark.

Layout read (relative to the root; see the project notes on UnifyBench, section 1)::

    concepts_list.json                      ["bo", "mam", ...]
    concept/train/train_images.json         optional: {"bo": ["0.png", ...], ...}
    concept/train/<c>/info.json             {"class", "info", "extra_info", "conversation_type",
                                             "generation_type", optional "category"}
    concept/train/<c>/*.png|jpg             training images
    concept/train/<c>/cropped/*             optional cropped training images ("mask" files skipped)
    concept/train/<c>/conversations.json    optional: {"<image key>": [{"query", "answer"}, ...]}
    concept/test/<c>/*.png|jpg              test images (recognition positives)
    concept/test/<c>/vqa.json               optional: [{"image": "<file in this folder>", "question", "answer"}]
    concept/test/<c>/text_only.json         optional: [{"question", "answer"}]
    concept/test/<c>/t2i_conditions.json    optional: ["A photo of <c>.", "<knowledge prompt>", ...]
                                            (element 0 is skipped when it is that plain prompt; every other
                                            prompt tests all extra_info facts; item keys are list indices)
                                            or {"personalized_driven_generation": [...]} (i-th <-> extra_info[i])
    random_images/                          easy negatives shared by all concepts
    prompts_to_eval.json | prompts_and_classes.txt   optional DreamBench prompt lists; the bundled copy
                                            is used when the root has neither

The public UnifyBench release does not document the schema of vqa.json and text_only.json (the UniCTokens
code only reads files derived from them), so this loader defines it as above; "query" is accepted as an
alias of "question". The concept may be written as ``<c>``, ``<sks>`` or a bare ``sks`` in every text;
all texts (prompts, answers, info, facts) are normalised to :data:`unifybench.data.schema.PLACEHOLDER`.

Loading never opens an image (it only lists and stats files); :meth:`UnifyBench.validate` does.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from unifybench.data.schema import (GEN, KNOWLEDGE_GEN, PLACEHOLDER, REC, TEXT_QA, VQA, Benchmark, Concept,
                                    Item)
from unifybench.data.root import check_inside, relative_inside
from unifybench.errors import DataError, UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
MINI_ROOT = Path(__file__).parent / "mini"
CATEGORIES = ("person", "pet", "object")
GENERATION_TYPES = ("object", "live_subject")
REC_PROMPT = f"Is {PLACEHOLDER} in this photo?"
KNOWLEDGE_DICT_KEY = "personalized_driven_generation"
_PLAIN_PHOTO = re.compile(r"^\s*a photo of <sks>\s*\.?\s*$", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------- helpers

def natural_key(name: str) -> tuple:
    """Sort key that puts "2.png" before "10.png" (digit runs compare as numbers), then by raw name."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts), name


def list_images(folder: Path, skip_masks: bool = False, root: Path | None = None) -> list[Path]:
    """Image files directly inside `folder`, in natural name order (empty when the folder is missing); with
    `root`, an image that resolves outside it (a symlink out of the data) is a DataError naming it."""
    if not folder.is_dir():
        return []
    if root is not None:
        check_inside(root, folder, folder)           # the folder itself may be a symlink out
    files = []
    with os.scandir(folder) as entries:             # DirEntry knows symlinks without a stat per file
        for e in entries:
            if (Path(e.name).suffix.lower() in IMAGE_SUFFIXES and not e.name.startswith(".")
                    and not (skip_masks and "mask" in e.name.lower()) and e.is_file()):
                p = folder / e.name
                if root is not None and e.is_symlink():
                    check_inside(root, p, p)
                files.append(p)
    return sorted(files, key=lambda p: natural_key(p.name))


def normalize_placeholder(text: str, concept: str) -> str:
    """Write the concept as PLACEHOLDER: accepts "<concept>", "<sks>", bare "sks" and DreamBench "{0} {1}"."""
    text = text.replace(f"<{concept}>", PLACEHOLDER)
    text = re.sub(r"\{0\}\s+\{1\}", PLACEHOLDER, text)
    text = text.replace("{0}", PLACEHOLDER)
    return re.sub(r"(?<![\w<])sks(?![\w>])", PLACEHOLDER, text)


def check_concept_name(name, path, field: str | None = None) -> str:
    """`name` when it is safe as a folder name under an output directory; DataError(path, field) otherwise.

    Refused: a non-string, an empty or blank name, surrounding whitespace, "." and "..", a path separator
    ("/" or "\\"), an absolute or drive path ("C:..."), "#" (the image-sample separator in ids) and
    control characters. Every loader checks every concept name, whether from a folder or from a file.
    """
    if not isinstance(name, str):
        raise DataError(path, f"a concept name must be a string, got a {_type_name(type(name))}", field=field)
    why = ("it is empty" if not name.strip() else
           "it has leading or trailing spaces" if name != name.strip() else
           "it would escape the output folder" if name in (".", "..") or "/" in name or "\\" in name
           or re.match(r"^[A-Za-z]:", name) else
           "it contains '#'" if "#" in name else
           "it contains a control character" if any(ord(ch) < 32 or ord(ch) == 127 for ch in name) else None)
    if why:
        raise DataError(path, f"concept name {name!r} is refused: {why}", field=field)
    return name


def parse_dreambench_prompts(text: str) -> dict[str, list[str]]:
    """The object and live-subject prompt lists of DreamBench's prompts_and_classes.txt, with PLACEHOLDER."""
    out: dict[str, list[str]] = {}
    sections = {"object": "Object Prompts", "live_subject": "Live Subject Prompts"}
    for key, title in sections.items():
        start = text.find(title)
        if start < 0:
            continue
        end = min([i for i in (text.find(t, start + len(title)) for t in sections.values()) if i > start]
                  or [len(text)])
        prompts = re.findall(r"""['"]([^'"]*)['"]\s*\.format\(""", text[start:end])
        out[key] = [normalize_placeholder(p, "sks") for p in prompts]
    return out


def _read_json(path: Path, expected: type, what: str):
    if not path.is_file():
        raise DataError(path, f"{what} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(path, f"{what} is not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(data, expected):
        raise DataError(path, f"{what} must be a JSON {_type_name(expected)}, got {_type_name(type(data))}")
    return data


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {dict: "object", list: "list", str: "string", int: "number", float: "number",
            bool: "boolean", type(None): "null"}.get(t, t.__name__)


def _string(path: Path, value, field: str, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        got = "missing" if value is None else f"a {_type_name(type(value))}" if not isinstance(value, str) else "empty"
        raise DataError(path, f"must be a non-empty string, got {got}", field=field)
    return value


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# ------------------------------------------------------------------------------------------ parsed data

@dataclass
class _ConceptData:
    concept: Concept
    vqa: list[tuple[str, Path, str]] = field(default_factory=list)           # question, image, answer
    text_qa: list[tuple[str, str]] = field(default_factory=list)             # question, answer
    knowledge: list[tuple[int, str, tuple[str, ...]]] = field(default_factory=list)  # index, prompt, facts
    knowledge_form: str = ""                                                  # "list" | "dict" | ""
    conversations: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Data:
    concepts: list[_ConceptData]
    random_images: list[Path]
    prompts: dict[str, list[str]]
    files: list[Path]


# ---------------------------------------------------------------------------------------------- loader

class UnifyBench(Benchmark):
    """UnifyBench (UniCTokens): rec, vqa, text_qa, gen (DreamBench prompts) and knowledge_gen per concept."""

    name = "unifybench"

    def __init__(self, root: str | Path, images_per_prompt: int = 4):
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(root, "benchmark root does not exist")
        if not root.is_dir():
            raise DataError(root, "benchmark root is not a folder")
        if not isinstance(images_per_prompt, int) or images_per_prompt < 1:
            raise UserError(f"images_per_prompt must be a positive integer, got {images_per_prompt!r}")
        self.root = root.resolve()
        self.images_per_prompt = images_per_prompt
        self._data: _Data | None = None
        self._problems: list[str] = []          # per-concept problems of the last failed load
        self._partial: list[_ConceptData] = []  # the concepts that did load then

    # ---- public API

    def concepts(self) -> list[Concept]:
        return [cd.concept for cd in self._load().concepts]

    def items(self, concept: Concept) -> list[Item]:
        data = self._load()
        cd = self._concept_data(concept)
        c = cd.concept
        items = self._rec_items(c, data)
        vqa_src = _rel(self._test_dir(c.name) / "vqa.json", self.root)
        items += [self._item(c, VQA, str(i), prompt=q, image=img, answer=a, meta=(("source", vqa_src),))
                  for i, (q, img, a) in enumerate(cd.vqa)]
        text_src = _rel(self._test_dir(c.name) / "text_only.json", self.root)
        items += [self._item(c, TEXT_QA, str(i), prompt=q, answer=a, meta=(("source", text_src),))
                  for i, (q, a) in enumerate(cd.text_qa)]
        items += [self._item(c, GEN, str(i), prompt=p, n_images=self.images_per_prompt,
                             meta=(("generation_type", c.generation_type),))
                  for i, p in enumerate(data.prompts[c.generation_type])]
        t2i_src = _rel(self._test_dir(c.name) / "t2i_conditions.json", self.root)
        items += [self._item(c, KNOWLEDGE_GEN, str(i), prompt=p, facts=facts, n_images=self.images_per_prompt,
                             meta=(("source", t2i_src), ("form", cd.knowledge_form)))
                  for i, p, facts in cd.knowledge]
        return items

    def train_conversations(self, concept: Concept) -> list[tuple[str, str]]:
        return list(self._concept_data(concept).conversations)

    def random_images(self) -> list[Path]:
        return list(self._load().random_images)

    def data_files(self) -> list[Path]:
        return list(self._load().files)

    def validate(self) -> list[str]:
        """Open every image with PIL; one problem line per unreadable file or concept without images."""
        from PIL import Image

        try:
            data = self._load()
            loaded, problems = data.concepts, []
            images: set[Path] = set(data.random_images)
        except DataError:
            if not self._problems:
                raise  # the file every concept depends on is broken: nothing more to list
            loaded, problems = self._partial, list(self._problems)
            images = set(list_images(self.root / "random_images", root=self.root))
        for cd in loaded:
            c = cd.concept
            if not c.train_images:
                problems.append(f"{self._train_dir(c.name)}: concept {c.name!r} has no training images")
            if not c.test_images:
                problems.append(f"{self._test_dir(c.name)}: concept {c.name!r} has no test images")
            images.update(c.train_images, c.test_images, c.cropped_images, (img for _, img, _ in cd.vqa))
        for path in sorted(images):
            try:
                with Image.open(path) as im:
                    im.verify()
                with Image.open(path) as im:   # verify() does not decode; a truncated file fails here
                    im.load()
            except Exception as e:  # noqa: BLE001 - every failure is one reported line
                problems.append(f"{path}: unreadable image ({type(e).__name__}: {e})")
        return problems

    # ---- loading

    def _train_dir(self, name: str) -> Path:
        return self.root / "concept" / "train" / name

    def _test_dir(self, name: str) -> Path:
        return self.root / "concept" / "test" / name

    def _concept_data(self, concept: Concept | str) -> _ConceptData:
        name = concept if isinstance(concept, str) else concept.name
        for cd in self._load().concepts:
            if cd.concept.name == name:
                return cd
        raise UserError(f"benchmark {self.name!r} has no concept {name!r}")

    def _load(self) -> _Data:
        if self._data is not None:
            return self._data
        files: list[Path] = []
        list_path = self.root / "concepts_list.json"
        names = _read_json(list_path, list, "concepts_list.json")
        files.append(list_path)
        if not names:
            raise DataError(list_path, "lists no concept (expected a list of concept folder names)")
        seen: set[str] = set()
        for i, n in enumerate(names):
            check_concept_name(n, list_path, field=f"[{i}]")
            if n in seen:
                raise DataError(list_path, f"concept {n!r} is listed twice", field=f"[{i}]")
            seen.add(n)

        train_lists: dict = {}
        ti_path = self.root / "concept" / "train" / "train_images.json"
        if ti_path.exists():
            train_lists = _read_json(ti_path, dict, "train_images.json")
            files.append(ti_path)

        # Every concept is loaded even after one fails, so `validate` can list all their problems.
        concepts, problems, first = [], [], None
        for n in names:
            try:
                for d in (self._train_dir(n), self._test_dir(n)):
                    if not d.is_dir():
                        raise DataError(d, f"concept {n!r} is listed in concepts_list.json but this folder is missing")
                concepts.append(self._load_concept(n, train_lists, ti_path, files))
            except DataError as e:
                problems.append(str(e))
                first = first or e
        if first is not None:
            self._problems, self._partial = problems, concepts
            if len(problems) > 1:
                first.args = (f"{first} (and {len(problems) - 1} more problems; see `unifybench validate`)",)
            raise first

        random_images = list_images(self.root / "random_images", root=self.root)
        prompts = self._load_prompts(files)
        for cd in concepts:
            if not prompts.get(cd.concept.generation_type):
                raise DataError(files[-1], f"no prompts for generation_type {cd.concept.generation_type!r} "
                                           f"(used by concept {cd.concept.name!r})",
                                field=cd.concept.generation_type)   # files[-1] is the prompt list read
        self._data = _Data(concepts, random_images, prompts, sorted(files))
        return self._data

    def _load_concept(self, n: str, train_lists: dict, ti_path: Path, files: list[Path]) -> _ConceptData:
        tdir, sdir = self._train_dir(n), self._test_dir(n)
        info_path = tdir / "info.json"
        info = _read_json(info_path, dict, "info.json")
        files.append(info_path)
        class_noun = _string(info_path, info.get("class"), "class").strip()
        text = normalize_placeholder(_string(info_path, info.get("info"), "info", required=False), n)
        extra = info.get("extra_info", [])
        if isinstance(extra, str):
            extra = [extra]
        if not isinstance(extra, list):
            raise DataError(info_path, f"must be a list of strings, got a {_type_name(type(extra))}",
                            field="extra_info")
        facts = tuple(normalize_placeholder(_string(info_path, f, f"extra_info[{j}]"), n)
                      for j, f in enumerate(extra))
        conv_type = _string(info_path, info.get("conversation_type"), "conversation_type", required=False)
        gen_type = info.get("generation_type")
        if gen_type is None:
            gen_type = "live_subject" if conv_type in ("human", "animal") else "object"
        if gen_type not in GENERATION_TYPES:
            raise DataError(info_path, f"must be one of {', '.join(GENERATION_TYPES)}, got {gen_type!r}",
                            field="generation_type")
        category = info.get("category")
        if category is None:
            category = "person" if conv_type == "human" else "pet" if gen_type == "live_subject" else "object"
        elif category not in CATEGORIES:
            raise DataError(info_path, f"must be one of {', '.join(CATEGORIES)}, got {category!r}",
                            field="category")

        if n in train_lists:
            listed = train_lists[n]
            if not isinstance(listed, list):
                raise DataError(ti_path, f"must be a list of file names, got a {_type_name(type(listed))}", field=n)
            train = []
            for j, f in enumerate(listed):
                # `../cat/0.jpg` would train on another concept's photo: entries stay in the concept's folder.
                p = relative_inside(tdir, _string(ti_path, f, f"{n}[{j}]"), ti_path, f"{n}[{j}]",
                                    f"concept {n!r}'s train folder")
                if not p.is_file():
                    raise DataError(ti_path, f"image {p} does not exist", field=f"{n}[{j}]")
                train.append(p)
            train.sort(key=lambda p: natural_key(p.name))
        else:
            train = list_images(tdir, root=self.root)
        test = list_images(sdir, root=self.root)

        concept = Concept(name=n, category=category, class_noun=class_noun, info=text, extra_info=facts,
                          generation_type=gen_type, train_images=tuple(train), test_images=tuple(test),
                          cropped_images=tuple(list_images(tdir / "cropped", skip_masks=True)),
                          info_path=info_path)
        cd = _ConceptData(concept)
        cd.vqa = self._load_vqa(n, sdir, files)
        cd.text_qa = self._load_text_qa(n, sdir, files)
        cd.knowledge, cd.knowledge_form = self._load_knowledge(n, sdir, facts, files)
        cd.conversations = self._load_conversations(n, tdir, files)
        return cd

    def _qa_entry(self, path: Path, entry, where: str, n: str) -> tuple[str, str]:
        if not isinstance(entry, dict):
            raise DataError(path, f"must be an object, got a {_type_name(type(entry))}", field=where)
        qkey = "question" if "question" in entry or "query" not in entry else "query"
        q = _string(path, entry.get(qkey), f"{where}.{qkey}")
        a = _string(path, entry.get("answer"), f"{where}.answer")
        return normalize_placeholder(q, n).strip(), normalize_placeholder(a, n).strip()

    def _load_vqa(self, n: str, sdir: Path, files: list[Path]) -> list[tuple[str, Path, str]]:
        path = sdir / "vqa.json"
        if not path.exists():
            return []
        entries = _read_json(path, list, "vqa.json")
        files.append(path)
        out = []
        for i, e in enumerate(entries):
            q, a = self._qa_entry(path, e, f"[{i}]", n)
            name = _string(path, e.get("image"), f"[{i}].image")
            if Path(name).is_absolute():
                raise DataError(path, f"absolute path {name!r}; name the image relative to {sdir}", field=f"[{i}].image")
            image = sdir / name                                         # the test folder's file, else the root's
            if not image.is_file() and (self.root / name).is_file():
                image = self.root / name
            check_inside(self.root, image, path, f"[{i}].image")      # `../` or a symlink out of the data
            if not image.is_file():
                raise DataError(path, f"image {image} does not exist", field=f"[{i}].image")
            out.append((q, image, a))
        return out

    def _load_text_qa(self, n: str, sdir: Path, files: list[Path]) -> list[tuple[str, str]]:
        path = sdir / "text_only.json"
        if not path.exists():
            return []
        entries = _read_json(path, list, "text_only.json")
        files.append(path)
        return [self._qa_entry(path, e, f"[{i}]", n) for i, e in enumerate(entries)]

    def _load_knowledge(self, n: str, sdir: Path, facts: tuple[str, ...],
                        files: list[Path]) -> tuple[list[tuple[int, str, tuple[str, ...]]], str]:
        path = sdir / "t2i_conditions.json"
        if not path.exists():
            return [], ""
        data = _read_json(path, (list, dict), "t2i_conditions.json")
        files.append(path)
        out = []
        if isinstance(data, list):
            # UniCTokens eval form: element 0 is the plain "A photo of <c>." (face eval), the rest test all facts.
            for i, p in enumerate(data):
                prompt = normalize_placeholder(_string(path, p, f"[{i}]"), n).strip()
                if i == 0 and _PLAIN_PHOTO.match(prompt):
                    continue
                out.append((i, prompt, facts))
            return out, "list"
        prompts = data.get(KNOWLEDGE_DICT_KEY)
        if not isinstance(prompts, list):
            got = "missing" if prompts is None else f"a {_type_name(type(prompts))}"
            raise DataError(path, f"must be a list of prompts, got {got}", field=KNOWLEDGE_DICT_KEY)
        for i, p in enumerate(prompts):
            where = f"{KNOWLEDGE_DICT_KEY}[{i}]"
            prompt = normalize_placeholder(_string(path, p, where), n).strip()
            if i >= len(facts):
                raise DataError(path, f"prompt {i} has no matching extra_info[{i}] in info.json "
                                      f"({len(facts)} facts)", field=where)
            out.append((i, prompt, (facts[i],)))
        return out, "dict"

    def _load_conversations(self, n: str, tdir: Path, files: list[Path]) -> list[tuple[str, str]]:
        path = tdir / "conversations.json"
        if not path.exists():
            return []
        data = _read_json(path, dict, "conversations.json")
        files.append(path)
        out: list[tuple[str, str]] = []
        for key, turns in data.items():
            if not isinstance(turns, list):
                raise DataError(path, f"must be a list of {{query, answer}} objects, got a "
                                      f"{_type_name(type(turns))}", field=key)
            for j, t in enumerate(turns):
                q, a = self._qa_entry(path, t, f"{key}[{j}]", n)
                q = re.sub(r"^\s*<image>\s*", "", q)
                if (q, a) not in out:
                    out.append((q, a))
        return out

    def _load_prompts(self, files: list[Path]) -> dict[str, list[str]]:
        for root in (self.root, MINI_ROOT):
            path = root / "prompts_to_eval.json"
            if path.exists():
                data = _read_json(path, dict, "prompts_to_eval.json")
                prompts = {}
                for key in GENERATION_TYPES:
                    value = data.get(key, [])
                    if not isinstance(value, list):
                        raise DataError(path, f"must be a list of prompts, got a {_type_name(type(value))}",
                                        field=key)
                    prompts[key] = [normalize_placeholder(_string(path, p, f"{key}[{i}]"), "sks").strip()
                                    for i, p in enumerate(value)]
                files.append(path)
                return prompts
            path = root / "prompts_and_classes.txt"
            if path.exists():
                files.append(path)
                return parse_dreambench_prompts(path.read_text(encoding="utf-8"))
        raise DataError(MINI_ROOT / "prompts_to_eval.json", "no DreamBench prompt list found")

    # ---- items

    def _item(self, c: Concept, task: str, key: str, **kw) -> Item:
        return Item(id=f"{self.name}/{c.name}/{task}/{key}", concept=c.name, task=task, **kw)

    def _rec_items(self, c: Concept, data: _Data) -> list[Item]:
        entries: list[tuple[Path, bool, str]] = [(p, True, "positive") for p in c.test_images]
        for other in data.concepts:
            if other.concept.name != c.name:
                entries += [(p, False, "other_concept") for p in other.concept.test_images]
        entries += [(p, False, "random") for p in data.random_images]
        items = [self._item(c, REC, _rel(p, self.root), prompt=REC_PROMPT, image=p, label=label,
                            meta=(("kind", kind),))
                 for p, label, kind in entries]
        return sorted(items, key=lambda it: natural_key(it.id))


class UnifyBenchMini(UnifyBench):
    """Bundled 4-concept mini benchmark in the UnifyBench layout (DreamBench photos, CC-BY 4.0)."""

    name = "unifybench-mini"

    def __init__(self, images_per_prompt: int = 4):
        super().__init__(MINI_ROOT, images_per_prompt=images_per_prompt)
