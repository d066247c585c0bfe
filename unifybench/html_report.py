"""One static HTML page for a run: summary and paper tables, per-concept breakdowns, and per concept a
grid of its reference images beside the images generated for each prompt.

The page is self-contained by default: images are embedded as base64 JPEG thumbnails (long side
`thumb` pixels), so the file can be mailed or archived alone. With ``images="link"`` the page links the
original files by relative path instead (small page; it must stay beside the run folder).

Generated images come from the run's ``samples/*.jsonl`` (rows with ``concept``, ``task``, ``prompt`` and
``image`` or ``images``, relative to the run folder); reference images are the concept's
``train_images`` from the benchmark named in ``config.benchmark``/``config.data_root``. When the
benchmark cannot be loaded the page says why and shows the generated images alone.

The page is the jinja2 template ``templates/report.html`` with autoescaping: every string from a results or
samples file is text on the page, never markup. The results file is validated on load
(:func:`unifybench.resultsfile.validate_doc`); a samples row of the wrong shape is skipped and listed
under Problems, and an image path in a row is embedded or linked only when it stays inside the run folder
(no absolute paths, no ``..``, no symlink out). Question photos, reference answers and labels come from the
benchmark itself (its items by id), not from the samples file.

Page structure (stable, tests rely on it): ``section.concept[data-concept]`` per concept, holding a
``div.grid`` of two columns: ``div.refs`` (``img[data-role=reference]``) beside ``div.prompts``, which
holds one ``div.prompt-row[data-task]`` per prompt with its ``img[data-role=generated]``. After the
page loads, a small script writes ``data-images-loaded`` and ``data-images-broken`` on ``<body>``.
"""
from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unifybench.data.root import check_inside, relative_inside
from unifybench.errors import DataError
from unifybench.resultsfile import ResultsFile

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222;max-width:1600px}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child,td.text{text-align:left}
table.paper-table td:nth-child(-n+2){text-align:left}
tr.line-reproduced td,tr.line-extra td{background:#f4f9ff}tr.tiny td{color:#a33}
caption{font-weight:600;text-align:left;padding:.3em 0}
.notice{background:#fff3cd;border:2px solid #d39e00;padding:.8em 1em;font-weight:600;margin:1em 0}
.muted{color:#777;font-size:.85em}.failed{color:#b00}
dl.run{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dl.run dt{font-weight:600}
.grid{display:grid;grid-template-columns:minmax(180px,auto) 1fr;gap:.5em 1em;align-items:start}
.prompts{display:flex;flex-direction:column;gap:.5em}
.refs{border-right:3px solid #4a7;padding-right:.8em;display:flex;flex-wrap:wrap;gap:4px;
max-width:420px;align-content:flex-start;position:sticky;top:0}
.refs h4,.prompt-row .prompt{margin:0 0 .3em;font-size:.85em;width:100%}
.prompt-row{border-bottom:1px dashed #ddd;padding-bottom:.4em}
.images{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;text-align:center;font-size:.75em;color:#555}
figure img{display:block;border:1px solid #ccc}img.ref{border:2px solid #4a7}
.missing{width:96px;height:96px;border:1px dashed #b00;color:#b00;font-size:.7em;overflow:hidden;
display:flex;align-items:center;justify-content:center;text-align:center}
details{margin:.5em 0}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img'), ok = 0, broken = 0;
  imgs.forEach(function (im) { if (im.complete && im.naturalWidth > 0) { ok++; } else { broken++; } });
  document.body.setAttribute('data-images-loaded', String(ok));
  document.body.setAttribute('data-images-broken', String(broken));
});
"""

MAX_TEXT_ROWS = 200   # answers listed per concept
TEMPLATE = "report.html"


@dataclass
class PromptImages:
    task: str
    prompt: str
    images: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)   # image -> {evaluator: score}


@dataclass
class Answer:
    id: str
    task: str
    prompt: str
    answer: str | None
    scores: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    reference: str | None = None        # from the samples row (e.g. BLEU's); the benchmark's wins
    label: Any = None
    parsed: Any = None                  # the evaluator's reading of the answer (recognition: yes/no)


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    if isinstance(v, int):
        return str(v)
    return "?"          # never a number: validation let something else through; show nothing of it


def inside(root: Path, rel: Any) -> Path | None:
    """`root / rel` when `rel` is a relative path that stays inside `root` (`data.root`'s rule, every
    symlink resolved); None otherwise."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    try:
        return relative_inside(root, rel, root, every_link=True)
    except DataError:
        return None


class ImageEncoder:
    """Embeds (base64 JPEG thumbnail) or links (relative path) an image file; remembers what it did."""

    def __init__(self, mode: str, out_dir: Path, thumb: int):
        if mode not in ("embed", "link"):
            raise ValueError(f"images mode must be 'embed' or 'link', not {mode!r}")
        self.mode, self.out_dir, self.thumb = mode, out_dir, thumb
        self._cache: dict[Path, str | None] = {}
        self.problems: list[str] = []

    def figure(self, path: Path | None, title: str = "", name: str | None = None) -> dict:
        """What the template's `figure` macro shows: src (None: missing), name and title."""
        src = self.src(path) if path is not None else None
        label = name if name is not None else (Path(path).name if path is not None else "")
        return {"src": src, "name": label, "title": title or label}

    def src(self, path: Path) -> str | None:
        path = Path(path)
        if path not in self._cache:
            self._cache[path] = self._make(path)
        return self._cache[path]

    def _make(self, path: Path) -> str | None:
        if not path.is_file():
            self.problems.append(f"missing image {path.name}")
            return None
        if self.mode == "link":
            return Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix()
        try:
            from PIL import Image
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((self.thumb, self.thumb))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
        except Exception as e:  # a broken image must not stop the report
            self.problems.append(f"unreadable image {path.name}: {type(e).__name__}")
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not an object"
    for key in ("concept", "task", "prompt", "answer", "failed", "id"):
        if row.get(key) is not None and not isinstance(row[key], str):
            return f"{key} is {type(row[key]).__name__}, not text"
    if row.get("score") is not None and (not isinstance(row["score"], (int, float)) or isinstance(row["score"], bool)):
        return f"score is {type(row['score']).__name__}, not a number"
    if row.get("image") is not None and not isinstance(row["image"], str):
        return "image is not a path"
    if row.get("images") is not None and (not isinstance(row["images"], list)
                                          or not all(isinstance(i, str) for i in row["images"])):
        return "images is not a list of paths"
    return None


def read_samples(run_dir: Path, problems: list[str] | None = None
                 ) -> tuple[dict[str, list[PromptImages]], dict[str, list[Answer]]]:
    """Per concept: prompts with their generated images, and text answers; in file order.

    Rows of the wrong shape and image paths that leave the run folder are skipped and described in
    `problems`."""
    import json
    problems = problems if problems is not None else []
    images: dict[str, dict[tuple[str, str], PromptImages]] = {}
    answers: dict[str, dict[str, Answer]] = {}
    sdir = run_dir / "samples"
    for f in sorted(sdir.glob("*.jsonl")) if sdir.is_dir() else []:
        ev = f.stem
        # Read leniently, line by line (store.read_jsonl refuses a whole file for one bad line): a torn or
        # foreign row is named and skipped, and the rest of the page is still worth having.
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f"samples/{f.name}: not readable as JSON lines ({type(e).__name__})")
            continue
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"samples/{f.name} line {n}: not JSON; row skipped")
                continue
            why = _row_problem(row)
            if why:
                problems.append(f"samples/{f.name} line {n}: {why}; row skipped")
                continue
            concept = row.get("concept")
            if not concept:
                continue
            task, prompt = row.get("task") or "", row.get("prompt") or ""
            files = [row["image"]] if row.get("image") else list(row.get("images") or [])
            kept = []
            for img in files:
                if inside(run_dir, img) is None:
                    problems.append(f"samples/{f.name} line {n}: image path {img!r} leaves the run folder; not shown")
                else:
                    kept.append(img)
            if files:
                p = images.setdefault(concept, {}).setdefault((task, prompt), PromptImages(task, prompt))
                for img in kept:
                    if img not in p.images:
                        p.images.append(img)
                    p.scores.setdefault(img, {})[ev] = row.get("score")
            else:
                base = str(row.get("id", "")).split("#")[0]
                a = answers.setdefault(concept, {}).setdefault(base, Answer(base, task, prompt, row.get("answer")))
                a.scores[ev] = row.get("score")
                if a.answer is None and row.get("answer") is not None:
                    a.answer = row["answer"]
                if row.get("failed"):
                    a.failed.append(f"{ev}: {row['failed']}")
                if isinstance(row.get("reference"), str) and a.reference is None:
                    a.reference = row["reference"]
                if isinstance(row.get("label"), bool) and a.label is None:
                    a.label = row["label"]
                if isinstance(row.get("parsed"), (str, bool)) and a.parsed is None:
                    a.parsed = row["parsed"]
    return ({c: list(v.values()) for c, v in images.items()}, {c: list(v.values()) for c, v in answers.items()})


@dataclass
class BenchmarkView:
    """What the page takes from the run's benchmark: training photos per concept and items by id."""
    refs: dict[str, list[Path]] = field(default_factory=dict)
    items: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None
    problem: str | None = None


def load_benchmark_view(doc: dict, concepts: list[str]) -> BenchmarkView:
    """The run's benchmark (config.benchmark / config.data_root), or a view saying why it is unavailable."""
    cfg = doc.get("config") or {}
    name = cfg.get("benchmark")
    if not name:
        return BenchmarkView(problem="the results file names no benchmark")
    try:
        from unifybench.runspec import make_benchmark
        bench = make_benchmark(name, cfg.get("data_root"))
        view = BenchmarkView(refs={c.name: list(c.train_images) for c in bench.concepts()},
                             root=bench.root)
        for c in bench.concepts():
            if c.name in concepts:
                view.items.update({i.id: i for i in bench.items(c)})
        return view
    except Exception as e:  # the report is still useful without references
        return BenchmarkView(problem=f"benchmark {name!r} could not be loaded ({type(e).__name__}: {_short(e)})")


def _short(e: Exception) -> str:
    """An error message without the folders in it (they name someone else's machine)."""
    import re
    return re.sub(r"(/[^\s:'\"]+)+", lambda m: Path(m.group(0)).name, str(e))[:200]


def reference_images(doc: dict) -> tuple[dict[str, list[Path]], str | None]:
    """The concepts' training images from the run's benchmark, or ({}, why not)."""
    view = load_benchmark_view(doc, [])
    return view.refs, view.problem


def _ci(res: dict, seed: int) -> tuple[str, bool]:
    ci = res.get("ci95")
    computed = False
    if not isinstance(ci, dict):
        from unifybench.stats import bootstrap_ci
        ci = bootstrap_ci(res.get("per_concept") or {}, seed=seed)
        computed = True
    if ci.get("low") is None:
        return "-", False
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]", computed


def _paper_tables(rf: ResultsFile, spec_names: list[str] | None) -> tuple[list[str], list[str]]:
    """HTML of the paper tables this run belongs in (or of the named specs), and warnings."""
    from unifybench import tables
    parts, warnings = [], []
    names = spec_names if spec_names is not None else tables.spec_names()
    for name in names:
        spec = tables.load_spec(name)
        if spec_names is None:
            if tables.match_row(spec, rf) is None:
                continue
            if all(tables.lookup(spec, c, rf, False)[0] is None for c in spec.columns if c.kind == "metric"):
                continue
        table = tables.build_table(spec, [rf])
        warnings += [tables.plain_text(w) for w in table.warnings]
        parts.append(tables.render_html(table))
    return parts, warnings


def _source(path: Path | str | None, near: Path) -> str | None:
    """A file named as the reader of the page can find it: relative to the page when it is near, else its
    name alone (an absolute path from another machine tells the reader nothing and exposes a home folder)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        rel = Path(os.path.relpath(p.resolve(), near.resolve()))
    except (OSError, ValueError):
        return p.name
    return rel.as_posix() if len(rel.parts) <= 4 and p.exists() else p.name


def _data_root(root: Any) -> str | None:
    if not isinstance(root, str) or not root:
        return None
    p = Path(root)
    return root if p.exists() and not p.is_absolute() else f"{p.name} (folder given as --data-root)"


def _config_tree(doc: dict, page_dir: Path) -> dict:
    """The configuration for the collapsible tree: config, models (file names and hashes), environment."""
    cfg = dict(doc.get("config") or {})
    if "data_root" in cfg:
        cfg["data_root"] = _data_root(cfg["data_root"])
    out: dict[str, Any] = {"config": cfg}
    models = doc.get("models")
    if isinstance(models, dict):
        out["models"] = {role: ({"file": _source(m.get("path"), page_dir), "sha256": m.get("sha256")}
                                if isinstance(m, dict) else m) for role, m in models.items()}
    for key in ("environment", "evaluator_environment", "run_config", "timing", "partial"):
        if doc.get(key) is not None:
            out[key] = doc[key]
    return out


def _env():
    import jinja2
    env = jinja2.Environment(loader=jinja2.PackageLoader("unifybench", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=False, lstrip_blocks=False)
    env.filters["num"] = _num
    return env


def build_report(rf: ResultsFile, out_path: Path, images: str = "embed", thumb: int = 160,
                 specs: list[str] | None = None, max_images_per_prompt: int | None = None) -> str:
    doc = rf.doc
    cfg = doc.get("config") or {}
    method = cfg.get("method") or {}
    seed = cfg.get("seed") or 0
    enc = ImageEncoder(images, out_path.parent, thumb)
    problems: list[str] = []
    gen, answers = read_samples(rf.run_dir, problems)
    results = doc["results"]

    names: list[str] = list(cfg.get("concepts") or [])
    for _, _, res in rf.metrics():
        names += [c for c in (res.get("per_concept") or {}) if c not in names]
    names += [c for c in list(gen) + list(answers) if c not in names]
    bench = load_benchmark_view(doc, names)

    def bench_image(path: Path) -> Path | None:
        """A benchmark photo, only when it lies inside the benchmark's folder."""
        if bench.root is None:
            return None
        try:
            return check_inside(Path(bench.root), Path(path), path, every_link=True)
        except DataError:
            problems.append(f"benchmark image {Path(path).name} lies outside the benchmark folder; not shown")
            return None

    summary = []
    for bname, ev, res in rf.metrics():
        parts = [(ev, res)] + [(f"{ev} [{task}]", sub) for task, sub in (res.get("by_task") or {}).items()
                               if isinstance(sub, dict)]
        for label, r in parts:
            pc = r.get("per_concept") or {}
            ci, computed = _ci(r, seed)
            summary.append({"benchmark": bname, "label": label, "preset": res.get("preset"), "value": r.get("value"),
                            "ci": ci, "ci_computed": computed,
                            "concepts": f"{sum(v is not None for v in pc.values())}/{len(pc)}",
                            "n": r.get("n"), "n_failed": r.get("n_failed"), "n_missing": r.get("n_missing")})

    paper, table_warnings = _paper_tables(rf, specs)
    here = _source(rf.path, out_path.parent) or rf.path.name
    table_warnings = [w.replace(str(rf.path), here) for w in table_warnings]

    per_concept = []
    for bname, evs in results.items():
        rows = [{"concept": c, "cells": [(r.get("per_concept") or {}).get(c) for r in evs.values()]}
                for c in names if any(c in (r.get("per_concept") or {}) for r in evs.values())]
        per_concept.append({"benchmark": bname, "evaluators": list(evs), "rows": rows,
                            "means": [r.get("value") for r in evs.values()]})

    concepts = []
    for c in names:
        prompts = []
        for p in gen.get(c, []):
            shown = p.images if max_images_per_prompt is None else p.images[:max_images_per_prompt]
            figs = [{"img": enc.figure(inside(rf.run_dir, img), title=img),
                     "caption": " · ".join(f"{ev} {_num(v, 3)}" for ev, v in p.scores.get(img, {}).items())}
                    for img in shown]
            prompts.append({"task": p.task, "prompt": p.prompt, "images": figs, "more": len(p.images) - len(shown)})
        refs = [enc.figure(q) for q in (bench_image(r) for r in bench.refs.get(c, [])) if q is not None] \
            if gen.get(c) or bench.refs.get(c) else []
        ans = answers.get(c, [])
        evs = sorted({ev for a in ans for ev in a.scores})
        rows = []
        for a in ans[:MAX_TEXT_ROWS]:
            item = bench.items.get(a.id)
            reference, label, photo = a.reference, a.label, None
            if item is not None:
                if item.answer is not None:
                    reference = item.answer
                if item.label is not None:
                    label = item.label
                if item.image is not None:
                    q = bench_image(item.image)
                    photo = enc.figure(q) if q is not None else None
            if isinstance(label, bool):
                label = "yes" if label else "no"
            rows.append({"id": a.id, "task": a.task, "prompt": a.prompt, "answer": a.answer, "failed": a.failed,
                         "reference": reference, "label": label, "parsed": a.parsed, "photo": photo,
                         "scores": [a.scores.get(ev) for ev in evs]})
        concepts.append({"name": c, "prompts": prompts, "refs": refs, "answers": rows, "n_answers": len(ans),
                         "answer_evaluators": evs,
                         "metric_values": [(ev, (res.get("per_concept") or {}).get(c)) for _, ev, res in rf.metrics()
                                    if c in (res.get("per_concept") or {})]})

    title = (f"UnifyBench report: {method.get('name') or '?'} ({method.get('preset') or '-'}) "
             f"on {cfg.get('benchmark') or '?'}")
    info = [("results", _source(rf.path, out_path.parent)), ("method", method.get("name")),
            ("preset", method.get("preset")), ("benchmark", cfg.get("benchmark")),
            ("data root", _data_root(cfg.get("data_root"))), ("seed", cfg.get("seed")),
            ("device / dtype", f"{cfg.get('device') or '-'} / {cfg.get('dtype') or '-'}"), ("date", doc.get("date")),
            ("git", doc.get("git_hash")), ("unifybench", doc.get("unifybench_version"))]
    partial = doc.get("partial")
    if isinstance(partial, dict):
        partial = partial.get("reason") or "run with --limit"
    elif partial is True:
        partial = "run with --limit"
    return _env().get_template(TEMPLATE).render(
        title=title, css=CSS, script=SCRIPT, thumb=thumb, tiny=bool(doc.get("tiny")),
        notice=doc.get("notice") or "Tiny random models.", partial=partial or None, info=info, summary=summary,
        tables=paper, table_warnings=table_warnings, per_concept=per_concept, concepts=concepts,
        ref_problem=bench.problem, problems=(problems + enc.problems)[:200],
        config=_config_tree(doc, out_path.parent)) + "\n"
