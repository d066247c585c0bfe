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
    clip_rows, rec_rows = [], []
    for ci, concept in enumerate(CONCEPTS):
        for pi, prompt in enumerate(PROMPTS):
            item = f"{benchmark}/{concept}/gen/{pi}"
            for k in range(IMAGES_PER_PROMPT):
                rel = f"concepts/{concept}/images/{pi}_{k}.png"
                (run / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 48), (40 * ci + 20, 60 * pi + 30, 100 * k + 50)).save(run / rel)
                clip_rows.append({"id": f"{item}#{k}", "concept": concept, "task": "gen", "prompt": prompt,
                                  "image": rel, "score": 0.5 + 0.1 * k})
        rec_rows.append({"id": f"{benchmark}/{concept}/rec/0", "concept": concept, "task": "rec",
                         "prompt": "Is <sks> in this photo?", "answer": "Yes <b>", "score": 1.0})
        rec_rows.append({"id": f"{benchmark}/{concept}/rec/1", "concept": concept, "task": "rec",
                         "prompt": "Is <sks> in this photo?", "answer": "", "score": None,
                         "failed": "empty answer"})
    (run / "samples").mkdir(parents=True)
    (run / "samples" / "clip_i.jsonl").write_text("".join(json.dumps(r) + "\n" for r in clip_rows))
    (run / "samples" / "recognition.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rec_rows))
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
    assert n_refs > 0 and n_images == n_refs + len(CONCEPTS) * len(PROMPTS) * IMAGES_PER_PROMPT
    # the page's load script ran in Chromium and found every image decoded
    assert dom.body.get("data-images-loaded") == str(n_images), dom.body
    assert dom.body.get("data-images-broken") == "0"
