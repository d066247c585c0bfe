"""`unifybench report`: the HTML page's tables and per-concept image grids, checked in the HTML and,
when Chromium is installed, in the DOM a headless Chromium builds from it (images decoded)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unifybench.cli import main as cli_main

CONCEPTS = ["dog", "cat"]
PROMPTS = ["A photo of <sks> on the beach.", "A photo of <sks> in the snow."]
IMAGES_PER_PROMPT = 2


def make_run(root: Path, benchmark: str = "unifybench-mini") -> Path:
    """A run folder by hand: results.json, samples/*.jsonl and generated PNGs (no model runs)."""
    from PIL import Image
    run = root / "run"
    clip_rows, rec_rows, bleu_rows = [], [], []
    for ci, concept in enumerate(CONCEPTS):
        for pi, prompt in enumerate(PROMPTS):
            item = f"{benchmark}/{concept}/gen/{pi}"
            for k in range(IMAGES_PER_PROMPT):
                rel = f"concepts/{concept}/images/{pi}_{k}.png"
                (run / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 48), (40 * ci + 20, 60 * pi + 30, 100 * k + 50)).save(run / rel)
                clip_rows.append({"id": f"{item}#{k}", "concept": concept, "task": "gen", "prompt": prompt,
                                  "image": rel, "score": 0.5 + 0.1 * k})
        # ids of the mini benchmark's own items: the page takes photo, reference and label from them
        rec_rows.append({"id": f"{benchmark}/{concept}/rec/concept/test/{concept}/0.jpg", "concept": concept,
                         "task": "rec", "prompt": "Is <sks> in this photo?", "answer": "Yes <b>", "score": 1.0,
                         "label": True, "parsed": "yes"})
        rec_rows.append({"id": f"{benchmark}/{concept}/rec/random_images/0.jpg", "concept": concept, "task": "rec",
                         "prompt": "Is <sks> in this photo?", "answer": "", "score": None,
                         "failed": "empty answer", "label": False})
        bleu_rows.append({"id": f"{benchmark}/{concept}/vqa/0", "concept": concept, "task": "vqa",
                          "prompt": "What colour is <sks>?", "answer": "Brown.", "score": 0.25})
    (run / "samples").mkdir(parents=True)
    (run / "samples" / "clip_i.jsonl").write_text("".join(json.dumps(r) + "\n" for r in clip_rows))
    (run / "samples" / "recognition.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rec_rows))
    (run / "samples" / "bleu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bleu_rows))
    doc = {"schema_version": 1, "unifybench_version": "0.1.0", "git_hash": "abc", "date": "2026-01-01",
           "tiny": True, "notice": "These numbers come from RANDOM TINY MODELS.",
           "config": {"method": {"name": "yochameleon", "preset": "tiny", "config": {}}, "benchmark": benchmark,
                      "data_root": None, "concepts": CONCEPTS, "seed": 0, "device": "cpu", "dtype": "float32"},
           "results": {benchmark: {
               "clip_i": {"value": 0.55, "n": 8, "n_failed": 0, "n_missing": 0, "preset": "unictokens",
                          "per_concept": {"dog": 0.55, "cat": 0.55}},
               "recognition": {"value": 0.75, "n": 2, "n_failed": 2, "n_missing": 0, "preset": "unictokens",
                               "per_concept": {"dog": 1.0, "cat": 0.5},
                               "ci95": {"low": 0.5, "high": 1.0, "iterations": 10000}}}}}
    (run / "results.json").write_text(json.dumps(doc))
    return run


class Dom(HTMLParser):
    """Collects what the tests look at: concept sections, grids, images by role, and body attributes."""

    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.images: dict[str, list[dict]] = {}   # concept -> img attrs
        self.grids = 0
        self.prompt_rows = 0
        self.body: dict[str, str] = {}
        self.ids: set[str] = set()
        self.tables: list[str] = []
        self._concept = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        cls = (a.get("class") or "").split()
        if tag == "body":
            self.body = a
        if tag == "section" and "concept" in cls:
            self._concept = a["data-concept"]
            self.sections.append(self._concept)
            self.images[self._concept] = []
        if tag == "div" and "grid" in cls:
            self.grids += 1
        if tag == "div" and "prompt-row" in cls:
            self.prompt_rows += 1
        if tag == "img" and self._concept:
            self.images[self._concept].append(a)
        if tag == "table":
            self.tables.append(a.get("class", "") + ":" + a.get("data-spec", ""))


def parse(text: str) -> Dom:
    d = Dom()
    d.feed(text)
    return d


def roles(dom: Dom, concept: str, role: str) -> list[dict]:
    return [a for a in dom.images[concept] if a.get("data-role") == role]


def test_report_page_has_tables_and_a_grid_per_concept(tmp_path, capsys):
    run = make_run(tmp_path)
    out = tmp_path / "report.html"
    assert cli_main(["report", str(run / "results.json"), "--out", str(out), "--spec", "unictokens_table1"]) == 0
    text = out.read_text(encoding="utf-8")
    dom = parse(text)
    assert dom.sections == CONCEPTS and dom.grids == len(CONCEPTS)
    assert dom.prompt_rows == len(CONCEPTS) * len(PROMPTS)
    from unifybench.runspec import make_benchmark
    bench = make_benchmark("unifybench-mini", None)
    for c in CONCEPTS:
        refs = roles(dom, c, "reference")
        assert len(refs) == len(bench.concept(c).train_images) > 0
        gen = roles(dom, c, "generated")
        assert len(gen) == len(PROMPTS) * IMAGES_PER_PROMPT
        assert all(a["src"].startswith("data:image/jpeg;base64,") for a in refs + gen)
    assert "tiny-notice" in dom.ids and "summary" in dom.ids
    assert any(t.startswith("summary") for t in dom.tables)
    assert any(t.startswith("per-concept") for t in dom.tables)
    assert "paper-table:unictokens_table1" in dom.tables
    assert "Yes &lt;b&gt;" in text and "empty answer" in text       # answers are escaped, failures shown
    assert "[0.5000, 1.0000]" in text                                  # ci95 from results.json
    assert "<b>0.940</b>" in text                                      # paper table marks
    assert "A photo of &lt;sks&gt; on the beach." in text


def test_answers_show_reference_label_decision_and_the_question_photo(tmp_path):
    """The answers table takes reference answer, label and photo from the benchmark's own items."""
    run = make_run(tmp_path)
    out = tmp_path / "report.html"
    assert cli_main(["report", str(run), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    rows = answer_rows(text)
    from unifybench.runspec import make_benchmark
    bench = make_benchmark("unifybench-mini", None)
    for c in CONCEPTS:
        items = {i.id: i for i in bench.items(bench.concept(c))}
        vqa = rows[f"unifybench-mini/{c}/vqa/0"]
        assert vqa["reference"] == items[f"unifybench-mini/{c}/vqa/0"].answer != ""
        assert vqa["answer"] == "Brown." and vqa["photo"].startswith("data:image/jpeg;base64,")
        pos = rows[f"unifybench-mini/{c}/rec/concept/test/{c}/0.jpg"]
        assert (pos["label"], pos["parsed"]) == ("yes", "yes") and pos["photo"].startswith("data:image/jpeg")
        neg = rows[f"unifybench-mini/{c}/rec/random_images/0.jpg"]
        assert neg["label"] == "no" and neg["parsed"] == "" and "empty answer" in neg["answer"]
    # the photo is the item's own image: decode the thumbnail and compare with the file, downscaled
    import base64, io
    from PIL import Image
    import numpy as np
    item = bench.items(bench.concept("dog"))
    src = next(i for i in item if i.id == "unifybench-mini/dog/vqa/0").image
    thumb = Image.open(io.BytesIO(base64.b64decode(rows["unifybench-mini/dog/vqa/0"]["photo"].split(",", 1)[1])))
    want = Image.open(src).convert("RGB")
    want.thumbnail((160, 160))
    assert thumb.size == want.size
    assert np.abs(np.asarray(thumb, float) - np.asarray(want, float)).mean() < 8   # JPEG re-encoding only
    # the configuration is a collapsible tree, not a JSON dump; no Markdown marks on the page
    assert '<div class="config"><ul class="tree">' in text and "<details" in text.split('id="configuration"')[1]
    assert "`" not in text.split("<script>")[0] and "**" not in text
    # sources named without the folders of whoever made the run
    assert "papers/" not in text and str(tmp_path) not in text


class AnswerRows(HTMLParser):
    """answers-table rows by item id: cell text per class, and the question photo's src."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-item" in a:
            self._row = self.rows.setdefault(a["data-item"], {"photo": "", "answer": "", "reference": "",
                                                                "label": "", "parsed": ""})
        elif tag == "td" and self._row is not None:
            cls = (a.get("class") or "").split()
            self._cell = next((c for c in ("answer", "reference", "label", "parsed") if c in cls), None)
        elif tag == "img" and self._row is not None and a.get("data-role") == "question":
            self._row["photo"] = a["src"]

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row is not None and self._cell:
            self._row[self._cell] = (self._row[self._cell] + data).strip()


def answer_rows(text: str) -> dict[str, dict[str, str]]:
    p = AnswerRows()
    p.feed(text)
    return p.rows


def test_link_mode_and_missing_files(tmp_path):
    run = make_run(tmp_path)
    (run / "concepts/cat/images/1_1.png").unlink()
    out = tmp_path / "pages" / "r.html"
    assert cli_main(["report", str(run), "--out", str(out), "--images", "link"]) == 0
    dom = parse(out.read_text())
    srcs = [a["src"] for c in CONCEPTS for a in dom.images[c]]
    assert srcs and all(not s.startswith("data:") and (out.parent / s).is_file() for s in srcs)
    assert len(roles(dom, "cat", "generated")) == len(PROMPTS) * IMAGES_PER_PROMPT - 1
    assert "missing image" in out.read_text() and "problems" in dom.ids


def test_unloadable_benchmark_still_gives_a_page(tmp_path):
    run = make_run(tmp_path, benchmark="no-such-benchmark")
    out = tmp_path / "r.html"
    assert cli_main(["report", str(run), "--out", str(out)]) == 0
    dom = parse(out.read_text())
    assert "refs-unavailable" in dom.ids
    assert all(len(roles(dom, c, "reference")) == 0 for c in CONCEPTS)
    assert all(len(roles(dom, c, "generated")) == len(PROMPTS) * IMAGES_PER_PROMPT for c in CONCEPTS)


def test_report_user_errors(tmp_path):
    assert cli_main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r.html")]) == 2


def find_chromium() -> str | None:
    for name in (os.environ.get("UNIFYBENCH_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(find_chromium() is None,
                    reason="Chromium not found (Debian: apt-get install -y chromium)")
def test_headless_chromium_renders_the_grid(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "report.html"
    assert cli_main(["report", str(run), "--out", str(out), "--thumb", "96"]) == 0
    profile = tmp_path / "chromium-profile"
    cmd = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", out.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = parse(proc.stdout)
    assert dom.sections == CONCEPTS and dom.grids == len(CONCEPTS)
    n_images = sum(len(v) for v in dom.images.values())
    n_refs = sum(len(roles(dom, c, "reference")) for c in CONCEPTS)
    n_photos = sum(len(roles(dom, c, "question")) for c in CONCEPTS)
    assert n_refs > 0 and n_photos == 3 * len(CONCEPTS)       # one vqa and two rec questions per concept
    assert n_images == n_refs + n_photos + len(CONCEPTS) * len(PROMPTS) * IMAGES_PER_PROMPT
    # the answers table in the rendered DOM: the benchmark's reference answer and label beside the answer
    rows = answer_rows(proc.stdout)
    assert rows["unifybench-mini/dog/vqa/0"]["reference"] and rows["unifybench-mini/dog/vqa/0"]["photo"]
    assert rows["unifybench-mini/cat/rec/concept/test/cat/0.jpg"]["label"] == "yes"
    # the page's load script ran in Chromium and found every image decoded
    assert dom.body.get("data-images-loaded") == str(n_images), dom.body
    assert dom.body.get("data-images-broken") == "0"


# ---------------------------------------------------------------------------------------------------------
# Issue 15.6: a results.json or samples file from someone else. Each payload is refused on load (exit 2, one
# line naming the file and field) or ends up as text: no element, attribute or script of its own, checked in
# the HTML and in the DOM headless Chromium builds (scripts run). Image paths leaving the run folder are
# never embedded.

XSS = '<script>document.body.setAttribute("data-pwned","1")</script>'
IMG = '<img src=x onerror="document.body.setAttribute(\'data-pwned\',\'1\')">'
ATTR = '" onmouseover="document.body.setAttribute(\'data-pwned\',\'1\')" x="'
CLOSE = '</td></tr></table></details></section><script>document.body.setAttribute("data-pwned","1")</script>'
JINJA = "{{ 7*7 }}{% if true %}jinja{% endif %}"


def edit(run: Path, change) -> None:
    doc = json.loads((run / "results.json").read_text())
    change(doc)
    (run / "results.json").write_text(json.dumps(doc))


def add_rows(run: Path, name: str, rows: list) -> None:
    with open(run / "samples" / name, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts = 0
        self.handlers: list[str] = []
        self.body: dict = {}
        self.imgs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "body":
            self.body = a
        if tag == "img":
            self.imgs.append(a)
        self.handlers += [k for k in a if k.startswith("on")]


def page(text: str) -> Page:
    p = Page()
    p.feed(text)
    return p


def assert_inert(text: str) -> None:
    p = page(text)
    assert p.scripts == 1, "a payload added a <script>"
    assert p.handlers == [], f"a payload added event handlers {p.handlers}"
    assert "data-pwned=" not in text


@pytest.mark.parametrize("field,value", [
    ("value", XSS), ("per_concept", {"dog": IMG}), ("n", "<b>8</b>"), ("ci95", {"low": XSS, "high": 1.0}),
    ("n_failed", 0.5), ("preset", ["<i>x</i>"]),
])
def test_text_in_numeric_fields_is_refused_on_load(tmp_path, capsys, field, value):
    run = make_run(tmp_path)
    edit(run, lambda d: d["results"]["unifybench-mini"]["clip_i"].__setitem__(field, value))
    before = sorted(p.name for p in run.iterdir())
    assert cli_main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.json" in err[0] and field in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "r.html").exists() and sorted(p.name for p in run.iterdir()) == before
    # the other commands that read results files refuse it the same way
    assert cli_main(["table", str(run), "--spec", "unictokens_table1"]) == 2


@pytest.mark.parametrize("where", ["config.method.name", "config.concepts", "tiny"])
def test_wrong_types_in_config_are_refused(tmp_path, capsys, where):
    run = make_run(tmp_path)
    change = {"config.method.name": lambda d: d["config"]["method"].__setitem__("name", {"x": XSS}),
              "config.concepts": lambda d: d["config"].__setitem__("concepts", [1, 2]),
              "tiny": lambda d: d.__setitem__("tiny", "yes")}[where]
    edit(run, change)
    assert cli_main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    assert where in capsys.readouterr().err


def hostile_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run whose text fields all carry markup: names, notice, prompts, answers, evaluator and concept keys."""
    run = make_run(tmp_path)
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    from PIL import Image
    Image.new("RGB", (8, 8), (255, 0, 0)).save(secret)
    os.symlink(secret, run / "concepts" / "dog" / "images" / "link.png")

    def change(d):
        d["notice"] = XSS
        d["config"]["method"]["name"] = IMG
        d["config"]["method"]["config"] = {"lr": ATTR, JINJA: [XSS, None]}
        d["config"]["data_root"] = "/home/someone/private/data"
        d["git_hash"] = CLOSE
        d["results"]["unifybench-mini"][XSS] = {"value": 0.1, "n": 1, "n_failed": 0, "preset": ATTR,
                                                "per_concept": {ATTR: 0.1}}
    edit(run, change)
    add_rows(run, "clip_i.jsonl", [
        {"id": "x#0", "concept": "dog", "task": "gen", "prompt": XSS + JINJA, "image": str(secret), "score": 0.1},
        {"id": "x#1", "concept": "dog", "task": "gen", "prompt": "up", "image": "../outside/secret.png", "score": 0.1},
        {"id": "x#2", "concept": "dog", "task": "gen", "prompt": "link", "image": "concepts/dog/images/link.png"},
        {"id": "x#3", "concept": ATTR, "task": IMG, "prompt": CLOSE, "image": "concepts/dog/images/0_0.png"},
        {"id": "x#4", "concept": "dog", "task": "gen", "score": XSS, "image": "concepts/dog/images/0_0.png"},
        ["not", "an", "object"],
    ])
    add_rows(run, "recognition.jsonl", [
        {"id": "unifybench-mini/dog/rec/9", "concept": "dog", "task": "rec", "prompt": IMG, "answer": CLOSE,
         "failed": XSS, "reference": ATTR, "parsed": IMG, "score": 0.0},
    ])
    return run, secret


def test_hostile_text_is_escaped_and_outside_images_are_not_embedded(tmp_path):
    run, secret = hostile_run(tmp_path)
    out = tmp_path / "r.html"
    assert cli_main(["report", str(run), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert_inert(text)
    assert "&lt;script&gt;" in text and "{{ 7*7 }}" in text and "{% if true %}" in text   # data, not template
    # 3 rows point outside the run folder (absolute, ../, a symlink): none embedded, each named
    from PIL import Image
    import base64, io
    for a in page(text).imgs:
        if a.get("src", "").startswith("data:"):
            im = Image.open(io.BytesIO(base64.b64decode(a["src"].split(",", 1)[1]))).convert("RGB")
            assert im.size != (8, 8), "the image outside the run folder was embedded"
    assert text.count("leaves the run folder") == 3
    assert "score is str" in text and "not an object" in text
    assert "/home/someone" not in text
    # link mode: no link to the outside either
    out2 = tmp_path / "l.html"
    assert cli_main(["report", str(run), "--out", str(out2), "--images", "link"]) == 0
    for a in page(out2.read_text()).imgs:
        target = (out2.parent / a["src"]).resolve()
        assert target != secret.resolve() and run.resolve() in target.parents or "mini" in str(target)


@pytest.mark.skipif(find_chromium() is None, reason="Chromium not found (Debian: apt-get install -y chromium)")
def test_hostile_page_in_headless_chromium(tmp_path):
    run, _ = hostile_run(tmp_path)
    out = tmp_path / "r.html"
    assert cli_main(["report", str(run), "--out", str(out), "--thumb", "64"]) == 0
    cmd = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
           out.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = page(proc.stdout)
    assert "data-images-loaded" in dom.body, "the page's own script did not run"
    assert "data-pwned" not in dom.body, "a payload ran"
    assert dom.scripts == 1 and dom.handlers == []
    assert dom.body.get("data-images-broken") == "0"
