"""Loader for the Yo'LLaVA dataset (NeurIPS 2024; reused by Yo'Chameleon as ``yochameleon-data``).

Files read, relative to the root (see the project notes on Yo'LLaVA and Yo'Chameleon, section 1)::

    train/<c>/N.png, test/<c>/N.png     one folder per concept (40 in the release); every image file directly
                                        inside, natural order ("2.png" before "10.png"), never filesystem order;
                                        sub-folders (negative_example/, json/) are not images of the concept
    yollava-visual-qa.json              visual A/B questions, nested: {concept: {image path: {"question",
                                        "options": {"A", "B"}, "correct_answer"}}} (170 in the release; the image
                                        path may be "./yollava-data/test/<c>/<n>.png", "test/<c>/<n>.png" or an
                                        absolute path). The *flat* form the Yo'LLaVA README shows ({image path:
                                        {...}}, no concept level) is wrong for the real file but accepted too: the
                                        concept is then the image's folder, and a warning says which form was read
    text_qa.json                        text-only A/B questions (Yo'Chameleon baselines/text_qa.json; 400 in the
                                        release): {concept: {"0": {"question", "option": {"A", "B"},
                                        "correct_answer"}, ...}} -- "option" singular as in the real file,
                                        "options" accepted as well; the concept is written as a bare "sks"
    subject-detailed-captions.json      {concept: "<sks> is ..."} (37 of the 40 concepts in the release); a
                                        concept without a caption is listed in ``missing_captions`` and by
                                        ``warnings()`` / ``unifybench validate``, and its ``Concept.info`` is ""
    train/<c>/json/text_conversation.json               optional training conversations, Yo'Chameleon
                                        (LLaVA) form: [{"image": [...], "conversations": [{"from": "human",
                                        "value"}, {"from": "bot"|"gpt", "value"}, ...]}]
    example_training_data/<c>/text-only-conversation.json   optional, Yo'LLaVA form:
                                        {"<image path>": [{"Human": ..., "AI": ...}, ...]}
                                        (either file may hold either form; both give text-only (question, answer)
                                        pairs through ``train_conversations``)
    categories.json                     optional, a UnifyBench addition: {concept: "person"|"pet"|"object"} or
                                        {concept: {"category": ..., "class": "<class noun>"}}
    prompts_to_eval.json | prompts_and_classes.txt   optional DreamBench prompt lists (else the bundled copy)

The three question/caption files are also looked up under ``baselines/`` (where Yo'Chameleon keeps them).

Categories: the 10 humans of the release are "person" (class noun "person"); ``bo`` (a Shiba Inu dog) and
``mam`` (a tabby cat) are "pet"; the notes pin no other concept, so the rest default to "object" (class noun
"object") until ``categories.json`` says otherwise. Persons and pets get DreamBench's live-subject prompts.

Items per concept, in this order (ids ``yollava/<c>/<task>/<key>``):

* ``rec``: "Is <sks> in this photo?" over every test image: the concept's own are positives, every other
  concept's are negatives (this dataset has no random images); key = the image path relative to the root.
* ``mc`` visual questions (key ``visual/<image path>``) then text questions (key ``text/<index>``), each
  expanded by :func:`unifybench.data.option_orders.circular_items` into one item per option rotation
  (``...@0``, ``...@1``): the text QA has the answer at "A" for 396 of 400 questions, so only the rotations
  keep an always-"A" answerer from scoring 0.99. ``meta`` "kind" is "visual_qa" or "text_qa".
* ``gen``: the DreamBench prompt list of the concept's generation type (key ``dreambench/<i>``,
  ``images_per_prompt`` images each), then Yo'Chameleon's "A photo of <sks>." (key ``photo``,
  ``photo_images`` images, 100 in Yo'Chameleon's protocol).

Loading lists folders and reads the JSON files; it never opens an image. Every problem found is collected:
``concepts()``/``items()`` raise the first one (a DataError naming file and field, with the count of the
others), ``validate()`` returns them all, plus every image that does not decode.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from unifybench.data.schema import GEN, MC, PLACEHOLDER, REC, Benchmark, Concept, Item
from unifybench.data.unifybench import (MINI_ROOT, REC_PROMPT, _type_name, check_concept_name, list_images,
                                        natural_key, normalize_placeholder, parse_dreambench_prompts)
from unifybench.data.problems import Problems as _Problems, read_json_file, text_field as _text
from unifybench.data.root import check_inside
from unifybench.errors import DataError, UserError

VISUAL_QA_FILE = "yollava-visual-qa.json"
TEXT_QA_FILE = "text_qa.json"
CAPTIONS_FILE = "subject-detailed-captions.json"
CATEGORIES_FILE = "categories.json"
YC_CONVERSATION = ("json", "text_conversation.json")               # under train/<c>/
YL_CONVERSATION = ("example_training_data", "text-only-conversation.json")   # <dir>/<c>/<file>
PHOTO_PROMPT = f"A photo of {PLACEHOLDER}."

PERSONS = frozenset({"thuytien", "viruss", "ciin", "khanhvy", "oong", "thao", "willinvietnam", "denisdang",
                     "phuc-map", "yuheng"})
PETS = {"bo": "dog", "mam": "cat"}
CATEGORIES = ("person", "pet", "object")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ANSWER_ROLES = ("bot", "gpt", "assistant", "ai")


def parse_mc_entry(problems: _Problems, path: Path, entry, where: str, concept: str):
    """(question, options, answer letter) of one A/B entry, or None after recording what is wrong.

    The options may be under "options" (visual QA) or "option" (text QA); with N options the letters are the
    first N of A, B, C, ...; the answer is "correct_answer" (or "answer"), one of those letters.
    """
    if not isinstance(entry, dict):
        problems.add(path, f"must be an object with question, options and correct_answer, got a "
                           f"{_type_name(type(entry))}", field=where)
        return None
    ok = True
    question = _text(problems, path, entry.get("question"), f"{where}.question")
    ok &= question is not None
    key = "options" if "options" in entry else "option" if "option" in entry else None
    options = entry.get(key) if key else None
    opts: list[tuple[str, str]] = []
    if key is None:
        problems.add(path, "question has no options (neither 'options' nor 'option')", field=f"{where}.options")
        ok = False
    elif not isinstance(options, dict):
        problems.add(path, f"must be an object {{letter: text}}, got a {_type_name(type(options))}",
                     field=f"{where}.{key}")
        ok = False
    elif len(options) < 2:
        problems.add(path, f"a multiple-choice question needs at least 2 options, got {len(options)}",
                     field=f"{where}.{key}")
        ok = False
    else:
        expected = _LETTERS[:len(options)]
        for letter, text in options.items():
            if not (isinstance(letter, str) and len(letter) == 1 and letter in expected):
                problems.add(path, f"unknown option letter {letter!r} (with {len(options)} options the letters are "
                                   f"{', '.join(expected)})", field=f"{where}.{key}")
                ok = False
                continue
            t = _text(problems, path, text, f"{where}.{key}.{letter}")
            ok &= t is not None
            opts.append((letter, normalize_placeholder(t or "", concept).strip()))
    akey = "correct_answer" if "correct_answer" in entry or "answer" not in entry else "answer"
    answer = entry.get(akey)
    if answer is None:
        problems.add(path, "the correct answer is missing", field=f"{where}.{akey}")
        return None
    if not isinstance(answer, str):
        problems.add(path, f"must be an option letter, got a {_type_name(type(answer))}", field=f"{where}.{akey}")
        return None
    if not ok:
        return None
    letter = answer.strip().upper()
    if letter not in dict(opts):
        problems.add(path, f"answer {answer!r} is not among the options {', '.join(sorted(dict(opts)))}",
                     field=f"{where}.{akey}")
        return None
    return normalize_placeholder(question, concept).strip(), tuple(sorted(opts)), letter


def _strip_image_tag(text: str) -> str:
    return re.sub(r"\s*<image>\s*", " ", text).strip()


def parse_conversations(problems: _Problems, path: Path, data, concept: str) -> list[tuple[str, str]]:
    """Text (question, answer) pairs of a training-conversation file in either form (see the module doc)."""
    pairs: list[tuple[str, str]] = []

    def add(q, a):
        q, a = normalize_placeholder(_strip_image_tag(q), concept), normalize_placeholder(a.strip(), concept)
        if (q, a) not in pairs:
            pairs.append((q, a))

    if isinstance(data, dict):                     # Yo'LLaVA: {image: [{"Human", "AI"}, ...]}
        for key, turns in data.items():
            if not isinstance(turns, list):
                problems.add(path, f"must be a list of {{Human, AI}} turns, got a {_type_name(type(turns))}",
                             field=key)
                continue
            for j, t in enumerate(turns):
                where = f"{key}[{j}]"
                if not isinstance(t, dict):
                    problems.add(path, f"must be an object with Human and AI, got a {_type_name(type(t))}",
                                 field=where)
                    continue
                q = _text(problems, path, t.get("Human"), f"{where}.Human")
                a = _text(problems, path, t.get("AI"), f"{where}.AI")
                if q is not None and a is not None:
                    add(q, a)
        return pairs
    if not isinstance(data, list):
        problems.add(path, f"must be a JSON object (Yo'LLaVA form) or list (LLaVA form), got "
                           f"{_type_name(type(data))}")
        return pairs
    for i, entry in enumerate(data):                # Yo'Chameleon / LLaVA: [{"conversations": [...]}]
        convs = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(convs, list):
            got = (f"a {_type_name(type(entry))}" if not isinstance(entry, dict) else
                   "missing" if convs is None else f"a {_type_name(type(convs))}")
            problems.add(path, f"must be a list of {{from, value}} turns, got {got}", field=f"[{i}].conversations")
            continue
        question = None
        for j, turn in enumerate(convs):
            where = f"[{i}].conversations[{j}]"
            if not isinstance(turn, dict):
                problems.add(path, f"must be an object with from and value, got a {_type_name(type(turn))}",
                             field=where)
                break
            role = str(turn.get("from", "")).lower()
            value = _text(problems, path, turn.get("value"), f"{where}.value")
            if value is None:
                break
            if role == "human" and question is None:
                question = value
            elif role in _ANSWER_ROLES and question is not None:
                if "<image>" not in question and value.strip() != "<image>":   # text-only pairs
                    add(question, value)
                question = None
            else:
                problems.add(path, f"turns must alternate human, bot starting with human; got {role!r}",
                             field=f"{where}.from")
                break
    return pairs


def resolve_image(root: Path, key: str) -> Path | None:
    """The file an image path of the QA file names: as given, without its first folder ("./yollava-data/..."),
    or from its "test"/"train" part on. None when none of these exists."""
    posix = key.strip().replace("\\", "/")
    if PurePosixPath(posix).is_absolute():
        return Path(posix) if Path(posix).is_file() else None
    parts = [p for p in PurePosixPath(posix).parts if p not in (".", "")]
    candidates = [parts, parts[1:]]
    for i, p in enumerate(parts):
        if p in ("test", "train"):
            candidates.append(parts[i:])
    for c in candidates:
        if c:
            path = root.joinpath(*c)
            if path.is_file():
                return path
    return None


def _stays_inside(root: Path, path: Path) -> bool:
    """Whether `path` resolves inside `root` (a symlinked test image pointing elsewhere does not)."""
    try:
        check_inside(root, path, path)
    except DataError:
        return False
    return True


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# ---------------------------------------------------------------------------------------------- data

@dataclass
class _MC:
    key: str                    # "visual/<image rel path>" or "text/<index>"
    question: str
    options: tuple[tuple[str, str], ...]
    answer: str
    image: Path | None
    source: str                 # file relative to the root


@dataclass
class _Data:
    concepts: list[Concept]
    mc: dict[str, list[_MC]]
    conversations: dict[str, list[tuple[str, str]]]
    prompts: dict[str, list[str]]
    files: list[Path]
    problems: _Problems
    warnings: list[str] = field(default_factory=list)
    missing_captions: list[str] = field(default_factory=list)
    visual_qa_form: str = ""    # "nested" | "flat" | "nested+flat" | "" (file absent)


class YoLLaVA(Benchmark):
    """Yo'LLaVA: 40 concepts; recognition, visual and text A/B questions (circular), generation prompts."""

    name = "yollava"

    def __init__(self, root: str | Path, images_per_prompt: int = 4, photo_images: int = 100):
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(root, "benchmark root does not exist")
        if not root.is_dir():
            raise DataError(root, "benchmark root is not a folder")
        for n, v in (("images_per_prompt", images_per_prompt), ("photo_images", photo_images)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"{n} must be a positive integer, got {v!r}")
        self.root = root.resolve()
        self.images_per_prompt = images_per_prompt
        self.photo_images = photo_images
        self._data: _Data | None = None

    # ---- public API

    def concepts(self) -> list[Concept]:
        return list(self._ready().concepts)

    def items(self, concept: Concept) -> list[Item]:
        data = self._ready()
        c = self.concept(concept if isinstance(concept, str) else concept.name)
        items = self._rec_items(c, data)
        from unifybench.data.option_orders import circular_items
        for q in data.mc.get(c.name, []):
            kind = "visual_qa" if q.image is not None else "text_qa"
            base = self._item(c, MC, q.key, prompt=q.question, image=q.image, options=q.options, answer=q.answer,
                              meta=(("kind", kind), ("source", q.source)))
            items += circular_items(base)
        gen_type = c.generation_type
        items += [self._item(c, GEN, f"dreambench/{i}", prompt=p, n_images=self.images_per_prompt,
                             meta=(("generation_type", gen_type), ("protocol", "dreambench")))
                  for i, p in enumerate(data.prompts.get(gen_type, []))]
        items.append(self._item(c, GEN, "photo", prompt=PHOTO_PROMPT, n_images=self.photo_images,
                                meta=(("generation_type", gen_type), ("protocol", "yochameleon"))))
        return items

    def train_conversations(self, concept: Concept) -> list[tuple[str, str]]:
        name = concept if isinstance(concept, str) else concept.name
        self.concept(name)
        return list(self._ready().conversations.get(name, []))

    def caption(self, concept: Concept | str) -> str | None:
        """The detailed caption with the placeholder, or None for a concept the captions file lacks."""
        c = self.concept(concept if isinstance(concept, str) else concept.name)
        return None if c.name in self._ready().missing_captions else c.info

    @property
    def missing_captions(self) -> list[str]:
        """Concepts without a detailed caption (3 of 40 in the release: never skipped without a word)."""
        return list(self._ready().missing_captions)

    @property
    def visual_qa_form(self) -> str:
        return self._ready().visual_qa_form

    def warnings(self) -> list[str]:
        """What is incomplete but legal: missing captions, absent optional files, the flat visual-QA form."""
        return list(self._load().warnings)

    def data_files(self) -> list[Path]:
        return list(self._ready().files)

    def _images(self, folder: Path, problems: _Problems) -> tuple[Path, ...]:
        """`list_images(folder)` less any image that resolves outside the data root (a symlink out), each
        recorded as a problem."""
        kept = []
        for p in list_images(folder):
            try:
                kept.append(check_inside(self.root, p, p))
            except DataError as e:
                problems.add_error(e)
        return tuple(kept)

    def validate(self) -> list[str]:
        """Every problem: each schema problem (file, field, what), concepts without images, undecodable images."""
        from PIL import Image

        data = self._load()
        problems = data.problems.lines()
        images: list[Path] = []
        for c in data.concepts:
            for split, imgs in (("train", c.train_images), ("test", c.test_images)):
                if not imgs:
                    problems.append(str(DataError(self.root / split / c.name,
                                                  f"concept {c.name!r} has no {split} images")))
            images += list(c.train_images) + list(c.test_images)
        for path in images:
            try:
                with Image.open(path) as im:
                    im.verify()
                with Image.open(path) as im:   # verify() does not decode the pixels; load() does
                    im.load()
            except Exception as e:  # noqa: BLE001 - every failure is one reported line
                problems.append(f"{path}: image does not decode ({type(e).__name__}: {e})")
        return problems

    # ---- loading

    def _ready(self) -> _Data:
        data = self._load()
        data.problems.raise_first()
        return data

    def _find(self, name: str) -> Path | None:
        for p in (self.root / name, self.root / "baselines" / name):
            if p.exists():
                return p
        return None

    def _load(self) -> _Data:
        if self._data is not None:
            return self._data
        problems = _Problems()
        warnings: list[str] = []
        files: list[Path] = []
        folders: dict[str, dict[str, Path]] = {}
        for split in ("train", "test"):
            base = self.root / split
            if not base.is_dir():
                problems.add(base, f"the {split} folder (one sub-folder per concept) is missing")
                continue
            for d in base.iterdir():
                if d.is_dir() and not d.name.startswith("."):
                    try:
                        check_concept_name(d.name, d)
                    except DataError as e:
                        problems.add_error(e)
                        continue
                    folders.setdefault(d.name, {})[split] = d
        names = sorted(folders, key=natural_key)
        for n in names:
            for split in ("train", "test"):
                if split not in folders[n] and (self.root / split).is_dir():
                    other = "test" if split == "train" else "train"
                    problems.add(self.root / split / n, f"concept {n!r} has a {other} folder but no {split} folder")
        names = [n for n in names if len(folders[n]) == 2]
        if not names and (self.root / "train").is_dir() and (self.root / "test").is_dir():
            problems.add(self.root / "test", "no concept folders (expected test/<concept>/ and train/<concept>/)")
        known = set(names)

        categories = self._load_categories(known, problems, files)
        captions = self._load_captions(known, problems, files, warnings)
        missing = [n for n in names if captions is None or n not in captions]
        if captions is not None:
            cap = self._find(CAPTIONS_FILE) or self.root / CAPTIONS_FILE
            warnings += [str(DataError(cap, f"no caption for concept {n!r} ({len(names) - len(missing)} of "
                                            f"{len(names)} concepts have one); its Concept.info is empty", field=n))
                         for n in missing]

        concepts = []
        for n in names:
            cat, noun = categories.get(n, (None, None))
            cat = cat or ("person" if n in PERSONS else "pet" if n in PETS else "object")
            noun = noun or ("person" if cat == "person" else PETS.get(n, cat if cat == "pet" else "object"))
            concepts.append(Concept(
                name=n, category=cat, class_noun=noun, info=captions.get(n, "") if captions else "",
                generation_type="object" if cat == "object" else "live_subject",
                train_images=self._images(folders[n]["train"], problems),
                test_images=self._images(folders[n]["test"], problems)))

        mc: dict[str, list[_MC]] = {n: [] for n in names}
        form = self._load_visual_qa(known, mc, problems, files, warnings)
        self._load_text_qa(known, mc, problems, files, warnings)
        conversations = {n: self._load_conversations(n, problems, files) for n in names}
        prompts = self._load_prompts(problems, files)
        self._data = _Data(concepts=concepts, mc=mc, conversations=conversations, prompts=prompts,
                           files=sorted(set(files)), problems=problems, warnings=warnings,
                           missing_captions=missing, visual_qa_form=form)
        return self._data

    def _concept_key(self, problems: _Problems, path: Path, key, known: set[str], field: str) -> str | None:
        try:
            check_concept_name(key, path, field=field)
        except DataError as e:
            problems.add_error(e)
            return None
        if key not in known:
            problems.add(path, f"concept {key!r} has no folders train/{key}/ and test/{key}/", field=field)
            return None
        return key

    def _load_categories(self, known, problems, files) -> dict[str, tuple[str | None, str | None]]:
        path = self.root / CATEGORIES_FILE
        if not path.exists():
            return {}
        data = read_json_file(path, problems)
        files.append(path)
        out = {}
        for key, value in (data or {}).items():
            n = self._concept_key(problems, path, key, known, key)
            if n is None:
                continue
            if not isinstance(value, (str, dict)):
                problems.add(path, f"must be a category string or an object, got a {_type_name(type(value))}",
                             field=key)
                continue
            cat, noun = (value, None) if isinstance(value, str) else (value.get("category"), value.get("class"))
            if cat is not None and cat not in CATEGORIES:
                problems.add(path, f"must be one of {', '.join(CATEGORIES)}, got {cat!r}",
                             field=key if isinstance(value, str) else f"{key}.category")
                continue
            if noun is not None and (not isinstance(noun, str) or not noun.strip()):
                problems.add(path, "must be a non-empty string", field=f"{key}.class")
                continue
            out[n] = (cat, noun.strip() if noun else None)
        return out

    def _load_captions(self, known, problems, files, warnings) -> dict[str, str] | None:
        path = self._find(CAPTIONS_FILE)
        if path is None:
            warnings.append(str(DataError(self.root / CAPTIONS_FILE,
                                          "file is absent: no concept has a detailed caption")))
            return None
        data = read_json_file(path, problems)
        files.append(path)
        out = {}
        for key, value in (data or {}).items():
            n = self._concept_key(problems, path, key, known, key)
            text = _text(problems, path, value, key) if n is not None else None
            if text is not None:
                out[n] = normalize_placeholder(text, n).strip()
        return out

    def _load_visual_qa(self, known, mc, problems, files, warnings) -> str:
        path = self._find(VISUAL_QA_FILE)
        if path is None:
            warnings.append(str(DataError(self.root / VISUAL_QA_FILE, "file is absent: no visual questions")))
            return ""
        data = read_json_file(path, problems)
        files.append(path)
        source = _rel(path, self.root)
        forms = set()
        seen: dict[Path, str] = {}

        def add(concept_key, image_key, entry, where):
            image = resolve_image(self.root, image_key)
            if image is None:
                problems.add(path, f"image {image_key!r} does not exist under {self.root}", field=where)
                return
            image = Path(os.path.normpath(image))
            if image.parent.parent != self.root / "test" or not _stays_inside(self.root, image):
                problems.add(path, f"image {image_key!r} is not a test image (test/<concept>/...) of this root",
                             field=where)
                return
            n = concept_key
            if n is None:                           # flat form: the concept is the image's folder
                n = self._concept_key(problems, path, image.parent.name, known, where)
                if n is None:
                    return
            elif image.parent.name != n:
                problems.add(path, f"image {image_key!r} is a test image of {image.parent.name!r}, not of {n!r}",
                             field=where)
                return
            if image in seen:
                problems.add(path, f"image {image_key!r} has a question already (as {seen[image]!r})", field=where)
                return
            parsed = parse_mc_entry(problems, path, entry, where, n)
            if parsed is not None:
                seen[image] = image_key
                q, options, answer = parsed
                mc[n].append(_MC(f"visual/{_rel(image, self.root)}", q, options, answer, image, source))

        for key, value in (data or {}).items():
            if isinstance(value, dict) and ("question" in value or "correct_answer" in value):
                forms.add("flat")                   # the README's form: {image path: entry}
                add(None, key, value, f'["{key}"]')
                continue
            forms.add("nested")
            n = self._concept_key(problems, path, key, known, key)
            if n is None:
                continue
            if not isinstance(value, dict):
                problems.add(path, f"must be an object {{image path: question}}, got a {_type_name(type(value))}",
                             field=key)
                continue
            for image_key, entry in value.items():
                add(n, image_key, entry, f'{key}["{image_key}"]')
        if "flat" in forms:
            warnings.append(str(DataError(path, "read in the flat form of the Yo'LLaVA README (no concept level); "
                                                "each question's concept is its image's folder")))
        for n in mc:
            mc[n].sort(key=lambda q: natural_key(q.key))
        return "+".join(sorted(forms, reverse=True))

    def _load_text_qa(self, known, mc, problems, files, warnings) -> None:
        path = self._find(TEXT_QA_FILE)
        if path is None:
            warnings.append(str(DataError(self.root / TEXT_QA_FILE, "file is absent: no text-only questions")))
            return
        data = read_json_file(path, problems)
        files.append(path)
        source = _rel(path, self.root)
        for key, value in (data or {}).items():
            n = self._concept_key(problems, path, key, known, key)
            if n is None:
                continue
            if isinstance(value, list):
                value = {str(i): e for i, e in enumerate(value)}
            if not isinstance(value, dict):
                problems.add(path, f"must be an object {{index: question}}, got a {_type_name(type(value))}",
                             field=key)
                continue
            for idx in sorted(value, key=natural_key):
                parsed = parse_mc_entry(problems, path, value[idx], f"{key}.{idx}", n)
                if parsed is not None:
                    q, options, answer = parsed
                    mc[n].append(_MC(f"text/{idx}", q, options, answer, None, source))

    def _load_conversations(self, n: str, problems, files) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for path in (self.root / "train" / n / YC_CONVERSATION[0] / YC_CONVERSATION[1],
                     self.root / YL_CONVERSATION[0] / n / YL_CONVERSATION[1]):
            if not path.exists():
                continue
            data = read_json_file(path, problems, (dict, list))
            files.append(path)
            if data is not None:
                for p in parse_conversations(problems, path, data, n):
                    if p not in pairs:
                        pairs.append(p)
        return pairs

    def _load_prompts(self, problems, files) -> dict[str, list[str]]:
        for root in (self.root, MINI_ROOT):
            path = root / "prompts_to_eval.json"
            if path.exists():
                data = read_json_file(path, problems) or {}
                files.append(path)
                out = {}
                for key in ("object", "live_subject"):
                    value = data.get(key)
                    if not isinstance(value, list) or not value:
                        problems.add(path, f"must be a non-empty list of prompts, got "
                                           f"{'missing' if value is None else _type_name(type(value))}", field=key)
                        continue
                    out[key] = [normalize_placeholder(t, "sks").strip() for i, p in enumerate(value)
                                if (t := _text(problems, path, p, f"{key}[{i}]")) is not None]
                return out
            path = root / "prompts_and_classes.txt"
            if path.exists():
                files.append(path)
                out = parse_dreambench_prompts(path.read_text(encoding="utf-8", errors="replace"))
                for key in ("object", "live_subject"):
                    if not out.get(key):
                        problems.add(path, "no prompts found", field=key)
                return out
        return {}

    # ---- items

    def _item(self, c: Concept, task: str, key: str, **kw) -> Item:
        return Item(id=f"{self.name}/{c.name}/{task}/{key}", concept=c.name, task=task, **kw)

    def _rec_items(self, c: Concept, data: _Data) -> list[Item]:
        items = []
        prefix = f"{self.name}/{c.name}/{REC}/test/"
        for other in data.concepts:
            label = other.name == c.name
            meta = (("kind", "positive" if label else "other_concept"),)
            items += [Item(id=f"{prefix}{other.name}/{p.name}", concept=c.name, task=REC, prompt=REC_PROMPT,
                           image=p, label=label, meta=meta) for p in other.test_images]
        return items
