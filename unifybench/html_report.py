"""One static HTML page for a run: summary and paper tables, per-concept breakdowns, and per concept a
grid of its reference images beside the images generated for each prompt.

The page is self-contained by default: images are embedded as base64 JPEG thumbnails (long side
`thumb` pixels), so the file can be mailed or archived alone. With ``images="link"`` the page links the
original files by relative path instead (small page; it must stay beside the run folder).

Generated images come from the run's ``samples/*.jsonl`` (rows with ``concept``, ``task``, ``prompt`` and
``image`` or ``images``, relative to the run folder); reference images are the concept's
``train_images`` from the benchmark named in ``config.benchmark``/``config.data_root``. When the
benchmark cannot be loaded the page says why and shows the generated images alone.

Page structure (stable, tests rely on it): ``section.concept[data-concept]`` per concept, holding a
``div.grid`` of two columns: ``div.refs`` (``img[data-role=reference]``) beside ``div.prompts``, which
holds one ``div.prompt-row[data-task]`` per prompt with its ``img[data-role=generated]``. After the
page loads, a small script writes ``data-images-loaded`` and ``data-images-broken`` on ``<body>``.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class PromptImages:
    task: str
    prompt: str
    images: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)   # image -> {evaluator: score}


@dataclass
class Answer:
    task: str
    prompt: str
    answer: str | None
    scores: dict[str, Any] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def _e(s: Any) -> str:
    return html.escape("" if s is None else str(s))


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


class ImageEncoder:
    """Embeds (base64 JPEG thumbnail) or links (relative path) an image file; remembers what it did."""

    def __init__(self, mode: str, out_dir: Path, thumb: int):
        if mode not in ("embed", "link"):
            raise ValueError(f"images mode must be 'embed' or 'link', not {mode!r}")
        self.mode, self.out_dir, self.thumb = mode, out_dir, thumb
        self._cache: dict[Path, str | None] = {}
        self.problems: list[str] = []

    def src(self, path: Path) -> str | None:
        path = Path(path)
        if path not in self._cache:
            self._cache[path] = self._make(path)
        return self._cache[path]

    def _make(self, path: Path) -> str | None:
        if not path.is_file():
            self.problems.append(f"missing image {path}")
            return None
        if self.mode == "link":
            import os
            return Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix()
        try:
            from PIL import Image
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.thumbnail((self.thumb, self.thumb))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=85)
        except Exception as e:  # a broken image must not stop the report
            self.problems.append(f"unreadable image {path}: {e}")
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(enc: ImageEncoder, path: Path, role: str, caption: str = "", title: str = "") -> str:
    src = enc.src(path)
    cls = ' class="ref"' if role == "reference" else ""
    if src is None:
        return f'<figure><div class="missing" data-role="{role}-missing">missing<br>{_e(path.name)}</div></figure>'
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure><img{cls} data-role="{role}" src="{_e(src)}" alt="{_e(path.name)}" '
            f'title="{_e(title or path.name)}" loading="eager" style="max-width:{enc.thumb}px;'
            f'max-height:{enc.thumb}px">{cap}</figure>')


def read_samples(run_dir: Path) -> tuple[dict[str, list[PromptImages]], dict[str, list[Answer]]]:
    """Per concept: prompts with their generated images, and text answers; in file order."""
    from unifybench.store import read_jsonl
    images: dict[str, dict[tuple[str, str], PromptImages]] = {}
    answers: dict[str, dict[str, Answer]] = {}
    sdir = run_dir / "samples"
    for f in sorted(sdir.glob("*.jsonl")) if sdir.is_dir() else []:
        ev = f.stem
        for row in read_jsonl(f):
            concept = row.get("concept")
            if not concept:
                continue
            task, prompt = row.get("task", ""), row.get("prompt", "")
            files = [row["image"]] if row.get("image") else list(row.get("images") or [])
            if files:
                p = images.setdefault(concept, {}).setdefault((task, prompt), PromptImages(task, prompt))
                for img in files:
                    if img not in p.images:
                        p.images.append(img)
                    p.scores.setdefault(img, {})[ev] = row.get("score")
            else:
                base = str(row.get("id", "")).split("#")[0]
                a = answers.setdefault(concept, {}).setdefault(base, Answer(task, prompt, row.get("answer")))
                a.scores[ev] = row.get("score")
                if row.get("failed"):
                    a.failed.append(f"{ev}: {row['failed']}")
    return ({c: list(v.values()) for c, v in images.items()}, {c: list(v.values()) for c, v in answers.items()})


def reference_images(doc: dict) -> tuple[dict[str, list[Path]], str | None]:
    """The concepts' training images from the run's benchmark, or ({}, why not)."""
    cfg = doc.get("config") or {}
    name = cfg.get("benchmark")
    if not name:
        return {}, "the results file names no benchmark"
    try:
        from unifybench.runspec import make_benchmark
        bench = make_benchmark(name, cfg.get("data_root"))
        return {c.name: list(c.train_images) for c in bench.concepts()}, None
    except Exception as e:  # the report is still useful without references
        return {}, f"benchmark {name!r} could not be loaded ({e})"


def _ci(res: dict, seed: int) -> str:
    ci = res.get("ci95")
    computed = ""
    if not isinstance(ci, dict):
        from unifybench.stats import bootstrap_ci
        ci = bootstrap_ci(res.get("per_concept") or {}, seed=seed)
        computed = ' <span class="muted" title="not in results.json; computed for this page">*</span>'
    if ci.get("low") is None:
        return "-"
    return f"[{ci['low']:.4f}, {ci['high']:.4f}]{computed}"


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
        warnings += table.warnings
        parts.append(tables.render_html(table))
    return parts, warnings


def build_report(rf: ResultsFile, out_path: Path, images: str = "embed", thumb: int = 160,
                 specs: list[str] | None = None, max_images_per_prompt: int | None = None) -> str:
    doc = rf.doc
    cfg = doc.get("config") or {}
    method = cfg.get("method") or {}
    seed = cfg.get("seed") or 0
    enc = ImageEncoder(images, out_path.parent, thumb)
    gen, answers = read_samples(rf.run_dir)
    refs, ref_problem = reference_images(doc)
    results = doc["results"]

    concepts: list[str] = list(cfg.get("concepts") or [])
    for _, _, res in rf.metrics():
        concepts += [c for c in (res.get("per_concept") or {}) if c not in concepts]
    concepts += [c for c in list(gen) + list(answers) if c not in concepts]

    title = f"UnifyBench report: {method.get('name', '?')} ({method.get('preset', '-')}) on {cfg.get('benchmark', '?')}"
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title><style>{CSS}</style></head>", "<body>", f"<h1>{_e(title)}</h1>"]
    if doc.get("tiny"):
        out.append(f'<div class="notice tiny" id="tiny-notice">{_e(doc.get("notice") or "Tiny random models.")}</div>')
    info = [("results", rf.path), ("method", method.get("name")), ("preset", method.get("preset")),
            ("benchmark", cfg.get("benchmark")), ("data root", cfg.get("data_root")), ("seed", cfg.get("seed")),
            ("device / dtype", f"{cfg.get('device')} / {cfg.get('dtype')}"), ("date", doc.get("date")),
            ("git", doc.get("git_hash")), ("unifybench", doc.get("unifybench_version"))]
    out.append('<dl class="run">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in info) + "</dl>")

    # summary
    out.append('<h2 id="summary">Summary</h2>')
    out.append('<table class="summary"><thead><tr><th>benchmark</th><th>evaluator</th><th>preset</th><th>value</th>'
               '<th>95% interval</th><th>concepts</th><th>n</th><th>n_failed</th><th>n_missing</th></tr></thead><tbody>')
    for bench, ev, res in rf.metrics():
        parts = [(ev, res)] + [(f"{ev} [{task}]", sub) for task, sub in (res.get("by_task") or {}).items()
                               if isinstance(sub, dict)]
        for label, r in parts:
            pc = r.get("per_concept") or {}
            out.append(f"<tr><td>{_e(bench)}</td><td class=\"text\">{_e(label)}</td>"
                       f"<td class=\"text\">{_e(res.get('preset'))}</td>"
                       f"<td>{_num(r.get('value'))}</td><td>{_ci(r, seed)}</td>"
                       f"<td>{sum(v is not None for v in pc.values())}/{len(pc)}</td><td>{_num(r.get('n'))}</td>"
                       f"<td class=\"{'failed' if r.get('n_failed') else ''}\">{_num(r.get('n_failed'))}</td>"
                       f"<td>{_num(r.get('n_missing'))}</td></tr>")
    out.append('</tbody></table><p class="muted">Values are means over concepts; intervals are '
               'percentile bootstraps clustered by concept (* computed for this page when results.json has none).</p>')

    # paper tables
    paper, table_warnings = _paper_tables(rf, specs)
    if paper:
        out.append('<h2 id="paper-tables">Paper tables</h2>')
        out += paper
        out += [f'<p class="muted">{_e(w)}</p>' for w in table_warnings]

    # per-concept breakdown
    for bench, evs in results.items():
        out.append(f'<h2 id="per-concept-{_e(bench)}">Per concept: {_e(bench)}</h2>')
        out.append('<table class="per-concept"><thead><tr><th>concept</th>'
                   + "".join(f"<th>{_e(ev)}</th>" for ev in evs) + "</tr></thead><tbody>")
        names = [c for c in concepts if any(c in (r.get("per_concept") or {}) for r in evs.values())]
        for c in names:
            out.append(f'<tr><td><a href="#concept-{_e(c)}">{_e(c)}</a></td>'
                       + "".join(f"<td>{_num((r.get('per_concept') or {}).get(c))}</td>" for r in evs.values())
                       + "</tr>")
        out.append("<tr><th>mean</th>" + "".join(f"<th>{_num(r.get('value'))}</th>" for r in evs.values())
                   + "</tr></tbody></table>")

    # concept sections
    out.append('<h2 id="concepts">Concepts</h2>')
    if ref_problem:
        out.append(f'<p class="notice" id="refs-unavailable">Reference images unavailable: {_e(ref_problem)}</p>')
    for c in concepts:
        out.append(f'<section class="concept" id="concept-{_e(c)}" data-concept="{_e(c)}"><h3>{_e(c)}</h3>')
        vals = [f"{_e(ev)} {_num((res.get('per_concept') or {}).get(c))}" for _, ev, res in rf.metrics()
                if c in (res.get("per_concept") or {})]
        if vals:
            out.append(f'<p class="muted">{" · ".join(vals)}</p>')
        prompts = gen.get(c, [])
        if prompts or refs.get(c):
            out.append('<div class="grid">')
            ref_imgs = "".join(_img(enc, p, "reference") for p in refs.get(c, []))
            out.append(f'<div class="refs"><h4>reference images ({len(refs.get(c, []))})</h4>{ref_imgs}</div>')
            out.append('<div class="prompts">')
            for p in prompts:
                shown = p.images if max_images_per_prompt is None else p.images[:max_images_per_prompt]
                figs = []
                for img in shown:
                    sc = p.scores.get(img, {})
                    cap = " · ".join(f"{_e(ev)} {_num(v, 3)}" for ev, v in sc.items())
                    figs.append(_img(enc, rf.run_dir / img, "generated", cap, img))
                more = len(p.images) - len(shown)
                extra = f'<span class="muted">+{more} more</span>' if more else ""
                out.append(f'<div class="prompt-row" data-task="{_e(p.task)}"><div class="prompt">'
                           f"<b>{_e(p.task)}</b>: {_e(p.prompt)}</div><div class=\"images\">{''.join(figs)}{extra}</div></div>")
            if not prompts:
                out.append('<div class="prompt-row" data-task=""><div class="prompt muted">no generated images</div></div>')
            out.append("</div></div>")
        ans = answers.get(c, [])
        if ans:
            evs = sorted({ev for a in ans for ev in a.scores})
            out.append(f"<details><summary>answers ({len(ans)})</summary><table class=\"answers\"><thead><tr>"
                       "<th>task</th><th>prompt</th><th>answer</th>" + "".join(f"<th>{_e(ev)}</th>" for ev in evs)
                       + "</tr></thead><tbody>")
            for a in ans[:MAX_TEXT_ROWS]:
                fail = f' <span class="failed">{_e("; ".join(a.failed))}</span>' if a.failed else ""
                out.append(f'<tr><td class="text">{_e(a.task)}</td><td class="text">{_e(a.prompt)}</td>'
                           f'<td class="text">{_e(a.answer)}{fail}</td>'
                           + "".join(f"<td>{_num(a.scores.get(ev), 3)}</td>" for ev in evs) + "</tr>")
            out.append("</tbody></table>" + (f'<p class="muted">first {MAX_TEXT_ROWS} of {len(ans)}</p>'
                                            if len(ans) > MAX_TEXT_ROWS else "") + "</details>")
        out.append("</section>")
    if enc.problems:
        out.append('<h2 id="problems">Problems</h2><ul class="problems">'
                   + "".join(f"<li>{_e(p)}</li>" for p in enc.problems[:200]) + "</ul>")
    out.append('<p class="muted">config: <code>' + _e(json.dumps(cfg, sort_keys=True)[:4000]) + "</code></p>")
    out.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(out) + "\n"
