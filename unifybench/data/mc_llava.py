"""Loader for the MC-LLaVA dataset (An et al., multi-concept personalized LLaVA; the ``mc-llava`` benchmark).

Scenarios (one film or show each) of 2-4 concepts. Files read, relative to the root (project notes on
MC-LLaVA, section 1.3; ``<k>`` is a concept's category folder, e.g. ``two_concept``)::

    concept_type.json                     {concept: "<k>"}: the category folder of every concept
    scenarios.json                        ["A_L_Y", ...]: a scenario is its concepts' names joined by "_" (so
                                          a name never contains "_"); each concept is in exactly one scenario
                                          and all of a scenario's concepts share one category folder
    <k>/concept/train/train.json          optional {concept: [image file names]} (else every non-mask image)
    <k>/concept/train/<c>/N.png           training images; N_mask.png beside each: its foreground mask
    <k>/concept/test/<c>/N.png            single-concept test images
    <k>/concept/test/<c>/vqa.json         open visual QA  {image path: {"Human": question, "AI": answer}}
    <k>/concept/test/<c>/choice.json      visual choice   {image path: {"Human": question with "A. .. B. ..",
                                          "AI": letter}}
    <k>/concept/test/<c>/qa.json          text-only choice [{"question": .., "answer": letter}, ...]
    <k>/multi/<scenario>/N.png            multi-concept test images
    <k>/multi/<scenario>/position.json    {image: {concept: value or null}}: null = the concept is not in it
    <k>/multi/<scenario>/vqa.json, choice.json   {image path: [{"Human", "AI"}, ...]} (several per image)
    <k>/multi/<scenario>/qa.json          text-only choice, as above
    <k>/multi/<scenario>/vqa_position.json   grounding choice {image path: [{"Human", "AI": letter}, ...]}
    4o_generate_training_data/<c>/conversation.json   optional training QA {image path: [{"Human","AI"}, ...]}
                                          (text-only pairs through ``train_conversations``)
    random-images/                        optional easy negatives (CC12M)

**README versus code.** The MC-LLaVA README calls ``qa.json`` the visual file and ``vqa.json`` the text-only
one; the code that produced the numbers reads them the other way round, and so does this loader:
``vqa.json`` is open visual QA (BLEU), ``qa.json`` text-only multiple choice. ``cases.json`` (one code path's
name) is accepted for ``scenarios.json``. Image paths in the QA files may be written as the code writes them
(``../mcdataset/<k>/...``): the part from the category folder on is looked up under the root.

**Items** (ids ``mc-llava/<c>/<task>/<key>``; ``meta`` "type" is the reference's tag: ``si_sq``
single-concept image and query, ``mi_sq`` multi-concept image and single-concept query, ``mi_mq`` both
multi-concept, ``s``/``m`` text-only, ``si``/``mi`` captions; "scenario" and "concepts" (the concepts the
item names, comma-separated) follow). The unit concept is written as :data:`PLACEHOLDER`, the scenario's
other concepts as the dataset writes them (``<B>``). A multi-concept item is filed under ONE concept: the
first of its scenario that it names (else the scenario's first), so no item counts twice.

* ``rec`` "Can you see <sks> in this photo? Answer ... Yes or No.": the concept's own test images (yes),
  the scenario's other concepts' test images (no), the scenario's multi images (``mi_sq``), and, filed
  under the scenario's first concept, every multi image asked about all concepts at once (``mi_mq``).
  Multi-image labels come from ``position.json`` (the reference labels every multi image "Yes" for every
  concept although the file marks some absent: we follow the file).
* ``vqa``: ``vqa.json``; multi entries 0-1 of an image are ``mi_sq``, the rest ``mi_mq`` (the reference's
  rule, so the order in the file matters).
* ``mc`` (plain, no option rotation; ``meta`` "kind" = "choice" | "text" | "grounding"): ``choice.json``,
  ``qa.json`` and ``vqa_position.json``; the question is split into its stem (``prompt``) and its "A. .. B. .."
  options; ``meta`` "query" keeps the question as written.
* ``caption``: every single and multi test image; the prompt names all the scenario's concepts; ``meta``
  "names" lists the concepts a caption should name (``si``: the concept; ``mi``: those ``position.json``
  marks present).

Loading lists folders and reads JSON; it never opens an image. Every problem is collected: ``concepts()``
and ``items()`` raise the first (file, field, what, and the count of the others); ``validate()`` lists all,
plus every image that does not decode.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from unifybench.data.problems import Problems, read_json_file, text_field
from unifybench.data.schema import CAPTION, MC, PLACEHOLDER, REC, VQA, Benchmark, Concept, Item
from unifybench.data.unifybench import _rel, _type_name, check_concept_name, list_images, natural_key
from unifybench.errors import DataError, UserError

CONCEPT_TYPE_FILE = "concept_type.json"
SCENARIOS_FILE = "scenarios.json"
SCENARIOS_ALIAS = "cases.json"
CONVERSATION_DIR = "4o_generate_training_data"
RANDOM_DIR = "random-images"
MC_SUFFIX = "\nIMPORTANT: Answer the question using a single letter."   # the reference's choice suffix
YES_NO = " Answer the question using a single word Yes or No."
REC_PROMPT = "Can you see {names} in this photo?" + YES_NO
CAPTION_PROMPT = ("Can you see {names} in the image? Don't answer the question but remember it, and only "
                  "response a detailed caption for the image. Your caption:")
N_SINGLE_QUERY = 2     # per multi image, entries before this index are mi_sq, the rest mi_mq
_OPTION = re.compile(r"(?:(?<=\s)|^)\(?([A-H])[.)]\s+")
_NAME = re.compile(r"<([^<>\s]+)>")


def is_mask(path: Path) -> bool:
    return path.stem.endswith("_mask")


def split_options(text: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """(stem, ((letter, text), ...)) of a question that lists options "A. .. B. ..", inline or one per line;
    None unless the letters run A, B, ... from the first one found."""
    found = list(_OPTION.finditer(text))
    start = next((i for i, m in enumerate(found) if m.group(1) == "A"), None)
    if start is None:
        return None
    run, want = [], "A"
    for m in found[start:]:
        if m.group(1) == want:
            run.append(m)
            want = chr(ord(want) + 1)
    if len(run) < 2:
        return None
    options = []
    for i, m in enumerate(run):
        end = run[i + 1].start() if i + 1 < len(run) else len(text)
        body = text[m.end():end].strip()
        if not body:
            return None
        options.append((m.group(1), body))
    return text[:run[0].start()].strip(), tuple(options)


@dataclass
class _Scenario:
    name: str
    members: list[str]
    category: str
    folder: Path
    images: list[Path] = field(default_factory=list)
    present: dict[Path, dict[str, bool]] = field(default_factory=dict)   # image -> concept -> in it


@dataclass
class _QA:
    key: str                   # item key
    task: str
    type: str
    question: str              # as written (concept names as <name>)
    answer: str
    image: Path | None
    kind: str = ""
    options: tuple[tuple[str, str], ...] = ()
    stem: str = ""


@dataclass
class _Data:
    concepts: list[Concept]
    scenario_of: dict[str, _Scenario]
    scenarios: list[_Scenario]
    qa: dict[str, list[_QA]]                    # filed under concept
    masks: dict[str, dict[Path, Path]]
    conversations: dict[str, list[tuple[str, str]]]
    random_images: list[Path]
    files: list[Path]
    problems: Problems
    warnings: list[str]


class MCLLaVA(Benchmark):
    """MC-LLaVA: per-scenario concepts; single- and multi-concept recognition, VQA, choice, text QA,
    grounding and captions."""

    name = "mc-llava"
    description = "MC-LLaVA: 2-4 concept scenarios; single/multi-concept recognition, VQA, choice, grounding, captions"

    def __init__(self, root: str | Path):
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(root, "benchmark root does not exist")
        if not root.is_dir():
            raise DataError(root, "benchmark root is not a folder")
        self.root = root.resolve()
        self._data: _Data | None = None

    # ---- public API

    def concepts(self) -> list[Concept]:
        return list(self._ready().concepts)

    def items(self, concept: Concept) -> list[Item]:
        data = self._ready()
        c = self._concept(concept)
        sc = data.scenario_of[c.name]
        items = self._rec_items(c, sc, data)
        for q in data.qa[c.name]:
            named = self._named(q.question, sc)
            meta = [("type", q.type), ("scenario", sc.name), ("concepts", ",".join(named))]
            if q.task == MC:
                meta += [("kind", q.kind), ("query", self._as_unit(q.question, c.name))]
            items.append(Item(id=f"{self.name}/{c.name}/{q.task}/{q.key}", concept=c.name, task=q.task,
                              prompt=self._as_unit(q.stem if q.task == MC else q.question, c.name),
                              image=q.image, answer=self._as_unit(q.answer, c.name),
                              options=tuple((lt, self._as_unit(t, c.name)) for lt, t in q.options),
                              meta=tuple(meta)))
        items += self._caption_items(c, sc, data)
        return items

    def joint_concepts(self, concept: Concept) -> list[Concept]:
        data = self._ready()
        sc = data.scenario_of[self._concept(concept).name]
        by_name = {c.name: c for c in data.concepts}
        return [by_name[n] for n in sc.members]

    def scenario(self, concept: Concept | str) -> str:
        return self._ready().scenario_of[concept if isinstance(concept, str) else concept.name].name

    def train_masks(self, concept: Concept) -> dict[Path, Path]:
        return dict(self._ready().masks.get(self._concept(concept).name, {}))

    def train_conversations(self, concept: Concept) -> list[tuple[str, str]]:
        c = self._concept(concept)
        return [(self._as_unit(q, c.name), self._as_unit(a, c.name))
                for q, a in self._ready().conversations.get(c.name, [])]

    def random_images(self) -> list[Path]:
        return list(self._ready().random_images)

    def data_files(self) -> list[Path]:
        return list(self._ready().files)

    def warnings(self) -> list[str]:
        return list(self._load().warnings)

    def validate(self) -> list[str]:
        """Every problem: each schema problem (file, field, what), concepts without images, undecodable images."""
        from PIL import Image
        data = self._load()
        problems = data.problems.lines()
        images: set[Path] = set(data.random_images)
        for c in data.concepts:
            for split, imgs in (("train", c.train_images), ("test", c.test_images)):
                if not imgs:
                    problems.append(str(DataError(self._concept_dir(c.name, split),
                                                  f"concept {c.name!r} has no {split} images")))
            images.update(c.train_images, c.test_images, data.masks.get(c.name, {}).values())
        for sc in data.scenarios:
            images.update(sc.images)
        for path in sorted(images):
            try:
                with Image.open(path) as im:
                    im.verify()
                with Image.open(path) as im:   # verify() does not decode the pixels; load() does
                    im.load()
            except Exception as e:  # noqa: BLE001 - every failure is one reported line
                problems.append(f"{path}: image does not decode ({type(e).__name__}: {e})")
        return problems

    # ---- naming

    def _concept(self, concept: Concept | str) -> Concept:
        name = concept if isinstance(concept, str) else concept.name
        for c in self._ready().concepts:
            if c.name == name:
                return c
        raise UserError(f"benchmark {self.name!r} has no concept {name!r}")

    @staticmethod
    def _as_unit(text: str, name: str) -> str:
        return text.replace(f"<{name}>", PLACEHOLDER)

    @staticmethod
    def _named(text: str, sc: _Scenario) -> list[str]:
        """The scenario's concepts the text writes as <name>, in scenario order."""
        found = set(_NAME.findall(text))
        return [n for n in sc.members if n in found]

    def _concept_dir(self, name: str, split: str, category: str | None = None) -> Path:
        if category is None and self._data is not None and name in self._data.scenario_of:
            category = self._data.scenario_of[name].category
        return self.root / (category or "?") / "concept" / split / name

    # ---- loading

    def _ready(self) -> _Data:
        data = self._load()
        data.problems.raise_first()
        return data

    def _load(self) -> _Data:
        if self._data is not None:
            return self._data
        problems, warnings, files = Problems(), [], []
        types_path = self.root / CONCEPT_TYPE_FILE
        types = read_json_file(types_path, problems) or {}
        files.append(types_path)
        category: dict[str, str] = {}
        for name, k in types.items():
            try:
                check_concept_name(name, types_path, field=name)
            except DataError as e:
                problems.add_error(e)
                continue
            if not isinstance(k, str) or not k.strip() or "/" in k or "\\" in k or k in (".", ".."):
                problems.add(types_path, f"must be a category folder name, got {k!r}", field=name)
                continue
            if not (self.root / k).is_dir():
                problems.add(types_path, f"category folder {k!r} does not exist under the root", field=name)
                continue
            category[name] = k

        sc_path = self.root / SCENARIOS_FILE
        if not sc_path.exists() and (self.root / SCENARIOS_ALIAS).exists():
            sc_path = self.root / SCENARIOS_ALIAS
        names = read_json_file(sc_path, problems, list) or []
        files.append(sc_path)
        scenarios: list[_Scenario] = []
        scenario_of: dict[str, _Scenario] = {}
        for i, sname in enumerate(names):
            where = f"[{i}]"
            if not isinstance(sname, str) or not sname.strip():
                problems.add(sc_path, f"must be a scenario name (concepts joined by '_'), got {sname!r}", field=where)
                continue
            members = sname.split("_")
            bad = [m for m in members if m not in types]
            if bad:
                problems.add(sc_path, f"scenario {sname!r}: concept {bad[0]!r} is not in {CONCEPT_TYPE_FILE}",
                             field=where)
                continue
            if len(set(members)) != len(members) or len(members) < 1:
                problems.add(sc_path, f"scenario {sname!r} names a concept twice", field=where)
                continue
            twice = [m for m in members if m in scenario_of]
            if twice:
                problems.add(sc_path, f"concept {twice[0]!r} is in scenario {scenario_of[twice[0]].name!r} "
                                      f"and in {sname!r}", field=where)
                continue
            if any(m not in category for m in members):
                continue                                   # its concept_type entry is a problem already
            cats = {category[m] for m in members}
            if len(cats) > 1:
                problems.add(sc_path, f"scenario {sname!r} mixes category folders {sorted(cats)} "
                                      f"({CONCEPT_TYPE_FILE})", field=where)
                continue
            sc = _Scenario(sname, members, cats.pop(), self.root / category[members[0]] / "multi" / sname)
            scenarios.append(sc)
            for m in members:
                scenario_of[m] = sc
        for name in category:
            if name not in scenario_of and not any(name in s.split("_") for s in names if isinstance(s, str)):
                problems.add(types_path, f"concept {name!r} is in no scenario of {sc_path.name}", field=name)

        concepts, masks, qa, conversations = [], {}, {}, {}
        train_lists: dict[str, dict] = {}
        for sc in scenarios:
            for n in sc.members:
                if sc.category not in train_lists:
                    tl = self.root / sc.category / "concept" / "train" / "train.json"
                    train_lists[sc.category] = {}
                    if tl.exists():
                        files.append(tl)
                        train_lists[sc.category] = read_json_file(tl, problems) or {}
                concept, mask = self._load_concept(n, sc, train_lists[sc.category], problems)
                if concept is not None:
                    concepts.append(concept)
                    masks[n] = mask
                    qa[n] = []
                    conversations[n] = self._load_conversations(n, problems, files)
        loaded = {c.name for c in concepts}
        for sc in scenarios:
            if all(m in loaded for m in sc.members):
                self._load_single_qa(sc, qa, problems, files, warnings)
                self._load_multi(sc, qa, problems, files, warnings)
        by_name = {c.name: c for c in concepts}
        concepts = [by_name[m] for sc in scenarios for m in sc.members if m in by_name]
        self._data = _Data(concepts=concepts, scenario_of=scenario_of, scenarios=scenarios, qa=qa, masks=masks,
                           conversations=conversations, random_images=list_images(self.root / RANDOM_DIR, root=self.root),
                           files=sorted(set(files)), problems=problems, warnings=warnings)
        return self._data

    def _load_concept(self, n: str, sc: _Scenario, train_list: dict, problems: Problems):
        train_dir = self.root / sc.category / "concept" / "train" / n
        test_dir = self.root / sc.category / "concept" / "test" / n
        ok = True
        for d in (train_dir, test_dir):
            if not d.is_dir():
                problems.add(d, f"concept {n!r} (scenario {sc.name!r}) has no such folder")
                ok = False
        if not ok:
            return None, {}
        if n in train_list:
            tl = self.root / sc.category / "concept" / "train" / "train.json"
            listed = train_list[n]
            train = []
            if not isinstance(listed, list):
                problems.add(tl, f"must be a list of image file names, got a {_type_name(type(listed))}", field=n)
            else:
                for j, f in enumerate(listed):
                    if not isinstance(f, str) or not f.strip():
                        problems.add(tl, f"must be an image file name, got {f!r}", field=f"{n}[{j}]")
                    elif not (train_dir / f).is_file():
                        problems.add(tl, f"image {train_dir / f} does not exist", field=f"{n}[{j}]")
                    elif is_mask(train_dir / f):
                        problems.add(tl, f"{f!r} is a mask, not a training image", field=f"{n}[{j}]")
                    else:
                        train.append(train_dir / f)
            train.sort(key=lambda p: natural_key(p.name))
        else:
            train = [p for p in list_images(train_dir, root=self.root) if not is_mask(p)]
        mask = {}
        for p in train:
            m = p.with_name(f"{p.stem}_mask{p.suffix}")
            if not m.is_file():
                m = p.with_name(f"{p.stem}_mask.png")
            if m.is_file():
                mask[p] = m
        test = [p for p in list_images(test_dir, root=self.root) if not is_mask(p)]
        return Concept(name=n, category="object", class_noun="object", train_images=tuple(train),
                       test_images=tuple(test)), mask

    def _image(self, problems: Problems, path: Path, key, where: str, folder: Path) -> Path | None:
        """The image a QA file names: as written, under the root, or from its category folder on; it must
        lie directly in `folder`."""
        if not isinstance(key, str) or not key.strip():
            problems.add(path, f"must be an image path, got {key!r}", field=where)
            return None
        posix = key.strip().replace("\\", "/")
        parts = [p for p in PurePosixPath(posix).parts if p not in (".", "")]
        candidates = [Path(posix)] if PurePosixPath(posix).is_absolute() else []
        candidates += [self.root.joinpath(*parts[i:]) for i in range(len(parts)) if parts[i] != ".."]
        if len(parts) == 1:                                # a bare file name: in `folder`
            candidates.append(folder / parts[0])
        for c in candidates:
            if c.is_file() and c.resolve().parent == folder.resolve():
                return folder / c.name
        problems.add(path, f"image {key!r} is not an image of {_rel(folder, self.root)}/", field=where)
        return None

    def _entry(self, problems: Problems, path: Path, entry, where: str) -> tuple[str, str] | None:
        if not isinstance(entry, dict):
            problems.add(path, f"must be an object with Human and AI, got a {_type_name(type(entry))}", field=where)
            return None
        q = text_field(problems, path, entry.get("Human"), f"{where}.Human")
        a = text_field(problems, path, entry.get("AI"), f"{where}.AI")
        return None if q is None or a is None else (re.sub(r"^\s*<image>\s*", "", q).strip(), a.strip())

    def _choice(self, problems: Problems, path: Path, q: _QA, where: str) -> _QA | None:
        parsed = split_options(q.question)
        if parsed is None:
            problems.add(path, "a choice question must list its options as 'A. ... B. ...'", field=where)
            return None
        q.stem, q.options = parsed
        if q.answer not in {lt for lt, _ in q.options}:
            problems.add(path, f"answer {q.answer!r} is not one of the option letters "
                               f"{', '.join(lt for lt, _ in q.options)}", field=where)
            return None
        return q

    def _read(self, path: Path, problems, files, warnings, expected=dict):
        if not path.exists():
            warnings.append(str(DataError(path, "file is absent: no items from it")))
            return None
        files.append(path)
        return read_json_file(path, problems, expected)

    def _load_single_qa(self, sc: _Scenario, qa, problems, files, warnings) -> None:
        for n in sc.members:
            folder = self.root / sc.category / "concept" / "test" / n
            for fname, task in (("vqa.json", VQA), ("choice.json", MC)):
                path = folder / fname
                data = self._read(path, problems, files, warnings)
                for key, entry in (data or {}).items():
                    where = f'["{key}"]'
                    image = self._image(problems, path, key, where, folder)
                    parsed = self._entry(problems, path, entry, where)
                    if image is None or parsed is None:
                        continue
                    prefix = "choice/" if task == MC else ""
                    q = _QA(f"{prefix}single/{_rel(image, self.root)}", task, "si_sq", *parsed, image=image,
                            kind="choice")
                    if task == MC and self._choice(problems, path, q, where) is None:
                        continue
                    qa[n].append(q)
            path = folder / "qa.json"
            for q in self._text_qa(path, "s", "single", problems, files, warnings):
                qa[n].append(q)

    def _text_qa(self, path: Path, type_: str, where_key: str, problems, files, warnings) -> list[_QA]:
        data = self._read(path, problems, files, warnings, list)
        out = []
        for i, entry in enumerate(data or []):
            where = f"[{i}]"
            if not isinstance(entry, dict):
                problems.add(path, f"must be an object with question and answer, got a "
                                   f"{_type_name(type(entry))}", field=where)
                continue
            q = text_field(problems, path, entry.get("question"), f"{where}.question")
            a = text_field(problems, path, entry.get("answer"), f"{where}.answer")
            if q is None or a is None:
                continue
            item = _QA(f"text/{where_key}/{i}", MC, type_, re.sub(r"^\s*<image>\s*", "", q).strip(), a.strip(),
                       None, kind="text")
            if self._choice(problems, path, item, where) is not None:
                out.append(item)
        return out

    def _file_under(self, sc: _Scenario, text: str) -> str:
        named = self._named(text, sc)
        return named[0] if named else sc.members[0]

    def _load_multi(self, sc: _Scenario, qa, problems, files, warnings) -> None:
        if not sc.folder.is_dir():
            problems.add(sc.folder, f"scenario {sc.name!r} has no multi-concept folder")
            return
        sc.images = [p for p in list_images(sc.folder) if not p.stem.endswith("_som")]
        pos_path = sc.folder / "position.json"
        pos = read_json_file(pos_path, problems)   # required: the multi-image labels
        files.append(pos_path)
        listed: set[Path] = set()
        for key, value in (pos or {}).items():
            where = f'["{key}"]'
            image = self._image(problems, pos_path, key, where, sc.folder)
            if image is None:
                continue
            listed.add(image)
            if not isinstance(value, dict):
                problems.add(pos_path, f"must be an object {{concept: position or null}}, got a "
                                       f"{_type_name(type(value))}", field=where)
                continue
            missing = [m for m in sc.members if m not in value]
            extra = [k for k in value if k not in sc.members]
            if missing or extra:
                problems.add(pos_path, f"must give every concept of scenario {sc.name!r} (null when absent); "
                                       + (f"{missing[0]!r} is missing" if missing else f"{extra[0]!r} is not in it"),
                             field=where)
                continue
            sc.present[image] = {m: value[m] is not None for m in sc.members}
        if pos is not None:
            for image in sc.images:
                if image not in listed:
                    problems.add(pos_path, f"multi-concept image {image.name} has no entry", field=image.name)
        for fname, task in (("vqa.json", VQA), ("choice.json", MC), ("vqa_position.json", MC)):
            path = sc.folder / fname
            data = self._read(path, problems, files, warnings)
            for key, entries in (data or {}).items():
                where = f'["{key}"]'
                image = self._image(problems, path, key, where, sc.folder)
                if image is None:
                    continue
                if not isinstance(entries, list):
                    problems.add(path, f"must be a list of {{Human, AI}} objects, got a "
                                       f"{_type_name(type(entries))}", field=where)
                    continue
                for i, entry in enumerate(entries):
                    parsed = self._entry(problems, path, entry, f"{where}[{i}]")
                    if parsed is None:
                        continue
                    grounding = fname == "vqa_position.json"
                    type_ = "mi_sq" if grounding or i < N_SINGLE_QUERY else "mi_mq"
                    prefix = "grounding/" if grounding else "choice/multi/" if task == MC else "multi/"
                    q = _QA(f"{prefix}{_rel(image, self.root)}/{i}", task, type_, *parsed, image=image,
                            kind="grounding" if grounding else "choice")
                    if task == MC and self._choice(problems, path, q, f"{where}[{i}]") is None:
                        continue
                    qa[self._file_under(sc, q.question)].append(q)
        for q in self._text_qa(sc.folder / "qa.json", "m", "multi", problems, files, warnings):
            qa[self._file_under(sc, q.question)].append(q)

    def _load_conversations(self, n: str, problems: Problems, files: list[Path]) -> list[tuple[str, str]]:
        path = self.root / CONVERSATION_DIR / n / "conversation.json"
        if not path.exists():
            return []
        files.append(path)
        data = read_json_file(path, problems) or {}
        pairs: list[tuple[str, str]] = []
        for key, turns in data.items():
            if not isinstance(turns, list):
                problems.add(path, f"must be a list of {{Human, AI}} objects, got a {_type_name(type(turns))}",
                             field=key)
                continue
            for i, t in enumerate(turns):
                parsed = self._entry(problems, path, t, f'["{key}"][{i}]')
                if parsed is not None and parsed not in pairs:
                    pairs.append(parsed)
        return pairs

    # ---- items

    def _names(self, sc: _Scenario, unit: str, members: list[str]) -> list[str]:
        return [PLACEHOLDER if m == unit else f"<{m}>" for m in members]

    def _rec_items(self, c: Concept, sc: _Scenario, data: _Data) -> list[Item]:
        by_name = {x.name: x for x in data.concepts}
        prompt = REC_PROMPT.format(names=PLACEHOLDER)
        base = f"{self.name}/{c.name}/{REC}"
        items = []
        for other in sc.members:
            label = other == c.name
            meta = (("type", "si_sq"), ("scenario", sc.name), ("concepts", c.name),
                    ("kind", "positive" if label else "other_concept"))
            items += [Item(id=f"{base}/single/{_rel(p, self.root)}", concept=c.name, task=REC, prompt=prompt,
                           image=p, label=label, meta=meta) for p in by_name[other].test_images]
        for p in sc.images:
            if p not in sc.present:
                continue
            label = sc.present[p][c.name]
            items.append(Item(id=f"{base}/multi/{_rel(p, self.root)}", concept=c.name, task=REC, prompt=prompt,
                              image=p, label=label, meta=(("type", "mi_sq"), ("scenario", sc.name),
                                                          ("concepts", c.name),
                                                          ("kind", "positive" if label else "absent"))))
        if c.name == sc.members[0] and len(sc.members) > 1:
            everyone = REC_PROMPT.format(names=" and ".join(self._names(sc, c.name, sc.members)))
            for p in sc.images:
                if p in sc.present:
                    label = all(sc.present[p].values())
                    items.append(Item(id=f"{base}/multi-all/{_rel(p, self.root)}", concept=c.name, task=REC,
                                      prompt=everyone, image=p, label=label,
                                      meta=(("type", "mi_mq"), ("scenario", sc.name),
                                            ("concepts", ",".join(sc.members)),
                                            ("kind", "positive" if label else "absent"))))
        return items

    def _caption_items(self, c: Concept, sc: _Scenario, data: _Data) -> list[Item]:
        prompt = CAPTION_PROMPT.format(names=", ".join(self._names(sc, c.name, sc.members)))
        base = f"{self.name}/{c.name}/{CAPTION}"
        common = (("scenario", sc.name), ("concepts", ",".join(sc.members)))
        items = [Item(id=f"{base}/single/{_rel(p, self.root)}", concept=c.name, task=CAPTION, prompt=prompt,
                      image=p, meta=(("type", "si"), *common, ("names", c.name))) for p in c.test_images]
        if c.name == sc.members[0]:
            items += [Item(id=f"{base}/multi/{_rel(p, self.root)}", concept=c.name, task=CAPTION, prompt=prompt,
                           image=p, meta=(("type", "mi"), *common,
                                          ("names", ",".join(m for m in sc.members if sc.present[p][m]))))
                      for p in sc.images if p in sc.present]
        return items
