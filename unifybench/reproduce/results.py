"""A suite's outputs: the table beside the paper's numbers with intervals, the ablation plots, one HTML page.

Table. `unifybench.tables` lays the spec out (the paper's row, then "↳ reproduced" under it, value and
difference); each run is placed on its planned row by name. Every reproduced cell also carries its 95%
bootstrap interval over concepts (`unifybench.stats.bootstrap_ci`, the run's seed, the column's scale),
and OUTSIDE_MARK where the paper's printed number falls outside that interval. The csv is long format
with the interval and the mark in their own fields.

Plots. A spec may say ``"plot": {"x": {row: number}, "x_label": "...", "columns": [ids]}``: one panel per
column, the paper's points and the reproduced ones (with their intervals) against x, saved as
plots/<spec>.png and .svg. In the SVG the reproduced points of column C are the group with id
``reproduced-C`` (one marker per point), the paper's ``reported-C``.

Every output of a tiny suite says that its numbers mean nothing.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from unifybench import tables
from unifybench.reproduce.manifest import planned_runs, read_manifest, row_state, run_dir
from unifybench.resultsfile import ResultsFile, get_path, load_results
from unifybench.stats import bootstrap_ci
from unifybench.store import atomic_write_text

OUTSIDE_MARK = "◇"
OUTSIDE_NOTE = (f"{OUTSIDE_MARK} the paper's value lies outside the reproduced cell's 95% bootstrap interval "
                "over concepts; [low, high] is that interval.")
TINY_BANNER = ("TINY RANDOM MODELS (--preset tiny): these numbers test the pipeline and mean nothing about "
               "any method.")


def column_per_concept(spec: tables.Spec, col: tables.Column, rf: ResultsFile) -> dict[str, float | None]:
    """The per-concept values behind one reproduced cell (scaled like the cell)."""
    if col.source == "forgetting":
        entry = ((rf.doc.get("forgetting") or {}).get("evaluators") or {}).get(col.evaluator) or {}
        per = {c: get_path((v.get(col.condition) or {}).get("result") or {}, col.field)
               for c, v in (entry.get("concepts") or {}).items()}
    else:
        res = None
        for bench in col.benchmarks or spec.benchmarks or list(rf.doc["results"]):
            res = (rf.doc["results"].get(bench) or {}).get(col.evaluator)
            if res is not None:
                break
        if res is None:
            return {}
        if col.task is not None:
            res = (res.get("by_task") or {}).get(col.task) or {}
        if col.field != "value":   # an aggregate's per-concept values sit beside its value
            if not col.field.endswith(".value"):
                return {}
            res = get_path(res, col.field[: -len(".value")]) or {}
        per = res.get("per_concept") or {}
    return {c: (None if not isinstance(v, (int, float)) or isinstance(v, bool) else float(v) * col.scale)
            for c, v in per.items()}


def suite_results(suite: Path) -> tuple[dict, dict[str, ResultsFile]]:
    """(manifest, {run id: results of the runs done})."""
    man = read_manifest(suite)
    done = {}
    for r in planned_runs(man):
        if row_state(suite, r["run"])["state"] == "done":
            done[r["run"]] = load_results(run_dir(suite, r["run"]))
    return man, done


def build(suite: Path) -> tuple[tables.Table, dict, dict[str, ResultsFile], dict]:
    """(table with intervals, manifest, {run id: results}, {(row, col): interval}). A row with a run per
    benchmark gets a reproduced line per run, each filling the columns of its benchmark."""
    man, done = suite_results(suite)
    spec = tables.load_spec(man["spec_path"] if Path(man.get("spec_path", "")).is_file() else man["spec"])
    row_of = {r["run"]: r["row"] for r in planned_runs(man)}
    forced = {rf.path: row_of[run] for run, rf in done.items()}
    table = tables.build_table(spec, list(done.values()), forced)
    by_label = {rf.label: (row_of[run], rf) for run, rf in done.items()}
    intervals = {}
    for line in table.lines:
        if line.kind != "reproduced" or line.run not in by_label:
            continue
        row, rf = by_label[line.run]
        for col in spec.columns:
            cell = line.cells[col.id]
            if col.kind != "metric" or cell.full is None:
                continue
            ci = bootstrap_ci(column_per_concept(spec, col, rf), seed=int(rf.seed or 0))
            if ci["low"] is None:
                continue
            printed = tables.parse_number(spec.reported.cell(row, col.id)) if spec.reported else None
            outside = printed is not None and not (ci["low"] - 1e-12 <= printed <= ci["high"] + 1e-12)
            intervals[(row, col.id)] = {**ci, "outside": outside, "reported": printed}
            text = f"[{format(ci['low'], col.format)}, {format(ci['high'], col.format)}]" + (
                OUTSIDE_MARK if outside else "")
            cell.diff = f"{cell.diff}; {text}" if cell.diff else text
    return table, man, done, intervals


def _notes(man: dict) -> list[str]:
    out = [OUTSIDE_NOTE]
    if man.get("tiny"):
        out.insert(0, TINY_BANNER)
    for row, why in man.get("reported_only", {}).items():
        out.append(f"{row}: reported only ({why})")
    for row, why in man.get("skipped", {}).items():
        out.append(f"{row}: skipped ({why})")
    return out


def render_md(table, man) -> str:
    head = f"> **{TINY_BANNER}**\n\n" if man.get("tiny") else ""
    return head + tables.render_md(table) + "".join(f"- {n}\n" for n in _notes(man))


def render_tex(table, man) -> str:
    head = f"% {TINY_BANNER}\n" if man.get("tiny") else ""
    body = tables.render_tex(table)
    notes = "".join(r"\par\footnotesize " + tables.tex_escape(n).replace(OUTSIDE_MARK, r"$\diamond$") + "\n"
                    for n in _notes(man))
    body = body.replace(OUTSIDE_MARK, r"$\diamond$")
    return head + body.replace(r"\end{table}", notes + r"\end{table}")


CSV_FIELDS = ["kind", "row_id", "row", "run", "tiny", "column_id", "column", "reported", "value", "difference",
              "ci_low", "ci_high", "reported_outside_ci"]


def render_csv(table, man, intervals) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if man.get("tiny"):
        w.writerow([f"# {TINY_BANNER}"])
    w.writerow(CSV_FIELDS)
    rep = table.spec.reported
    for line in table.lines:
        if line.kind == "reported":
            continue
        for col in table.columns:
            if col.kind != "metric":
                continue
            cell = line.cells[col.id]
            ci = intervals.get((line.row_id, col.id), {})
            printed = rep.cell(line.row_id, col.id) if rep and line.row_id else None
            diff = (cell.full - tables.parse_number(printed)) if (cell.full is not None
                                                                   and tables.parse_number(printed) is not None) else None
            w.writerow([line.kind, line.row_id, line.label, line.run, str(line.tiny).lower(), col.id, col.label,
                        printed or "", "" if cell.full is None else repr(cell.full),
                        "" if diff is None else repr(diff), ci.get("low", ""), ci.get("high", ""),
                        "" if not ci else str(ci["outside"]).lower()])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ plots

def plot(table: tables.Table, man: dict, intervals: dict, out_dir: Path) -> list[Path]:
    """The spec's ablation plot (PNG + SVG), or [] when the spec declares none."""
    import json
    spec_doc = json.loads(Path(table.spec.path).read_text(encoding="utf-8"))
    cfg = spec_doc.get("plot")
    if not cfg:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.hashsalt"] = "unifybench"   # same input, same SVG bytes
    xs = cfg.get("x") or {}
    cols = [c for c in table.columns if c.kind == "metric" and c.id in (cfg.get("columns") or [c.id for c in table.columns])]
    order = [r.id for r in table.spec.rows]
    pos = {r: (float(xs[r]) if r in xs else float(i)) for i, r in enumerate(order)}
    fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.4), squeeze=False)
    rep = table.spec.reported
    for ax, col in zip(axes[0], cols):
        px, py = [], []
        for r in order:
            v = tables.parse_number(rep.cell(r, col.id)) if rep else None
            if v is not None:
                px.append(pos[r])
                py.append(v)
        (ln,) = ax.plot(px, py, "o-", color="#555", label="paper")
        ln.set_gid(f"reported-{col.id}")
        rx, ry, lo, hi = [], [], [], []
        for line in table.lines:
            if line.kind != "reproduced" or line.cells[col.id].full is None:
                continue
            v = line.cells[col.id].full
            ci = intervals.get((line.row_id, col.id))
            rx.append(pos[line.row_id])
            ry.append(v)
            lo.append(v - ci["low"] if ci else 0.0)
            hi.append(ci["high"] - v if ci else 0.0)
        if rx:
            ax.errorbar(rx, ry, yerr=[lo, hi], fmt="none", ecolor="#c33", capsize=3)
        (rl,) = ax.plot(rx, ry, "s", color="#c33", label="reproduced" + (" (tiny)" if man.get("tiny") else ""))
        rl.set_gid(f"reproduced-{col.id}")
        ax.set_title(col.label, fontsize=9)
        ax.set_xlabel(cfg.get("x_label", ""))
        if not xs:
            ax.set_xticks([pos[r] for r in order], [r for r in order], rotation=30, fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title = table.spec.title + ("\n" + TINY_BANNER if man.get("tiny") else "")
    fig.suptitle(title, fontsize=8, color="#a00" if man.get("tiny") else "black")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{table.spec.name}.{ext}"
        fig.savefig(p, format=ext, metadata={"Date": None} if ext == "svg" else None)
        paths.append(p)
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------------------- HTML

SUITE_CSS = """
section.row{border-top:2px solid #ccc;margin-top:1.5em}
.state-done{color:#262}.state-failed,.state-interrupted{color:#b00}
img.plot{max-width:100%;border:1px solid #ddd}
"""


def _e(s: Any) -> str:
    return html.escape("" if s is None else str(s))


def _num(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _row_section(row: str, label: str, state: dict, rf: ResultsFile | None, out: Path, thumb: int) -> str:
    """One row: its state, per-concept breakdown and per concept the reference and generated images."""
    from unifybench.html_report import ImageEncoder, read_samples, reference_images
    parts = [f'<section class="row" id="row-{_e(row)}" data-row="{_e(row)}"><h2>{_e(label)} '
             f'<span class="state-{_e(state["state"])}">({_e(state["state"])})</span></h2>']
    if state.get("error"):
        parts.append(f'<p class="failed">{_e(state["error"])}</p>')
    if rf is None:
        return "\n".join(parts + ["</section>"])
    parts.append(f'<p class="muted">run folder {_e(rf.run_dir.name)}; method {_e(rf.method)} '
                 f'({_e(rf.preset)})</p>')
    for bench, evs in rf.doc["results"].items():
        concepts = sorted({c for r in evs.values() for c in (r.get("per_concept") or {})})
        parts.append('<table class="per-concept"><thead><tr><th>concept</th>'
                     + "".join(f"<th>{_e(ev)}</th>" for ev in evs) + "</tr></thead><tbody>")
        for c in concepts:
            parts.append(f"<tr><td>{_e(c)}</td>" + "".join(
                f"<td>{_num((r.get('per_concept') or {}).get(c))}</td>" for r in evs.values()) + "</tr>")
        parts.append("<tr><th>mean</th>" + "".join(f"<th>{_num(r.get('value'))}</th>" for r in evs.values())
                     + "</tr></tbody></table>")
    enc = ImageEncoder("embed", out.parent, thumb)
    gen, _ = read_samples(rf.run_dir)
    refs, _why = reference_images(rf.doc)
    for concept, prompts in gen.items():
        figs = "".join(f'<img data-role="reference" src="{_e(enc.src(p))}" style="max-width:{thumb}px">'
                       for p in refs.get(concept, []) if enc.src(p))
        parts.append(f'<div class="grid" data-concept="{_e(concept)}"><div class="refs"><h4>{_e(concept)}</h4>{figs}</div>'
                     '<div class="prompts">')
        for p in prompts:
            imgs = "".join(f'<img data-role="generated" src="{_e(enc.src(rf.run_dir / i))}" '
                           f'style="max-width:{thumb}px">' for i in p.images if enc.src(rf.run_dir / i))
            parts.append(f'<div class="prompt-row" data-task="{_e(p.task)}"><div class="prompt"><b>{_e(p.task)}</b>: '
                         f'{_e(p.prompt)}</div><div class="images">{imgs}</div></div>')
        parts.append("</div></div>")
    parts.append("</section>")
    return "\n".join(parts)


def render_page(table, man: dict, done: dict[str, ResultsFile], suite: Path, plots: list[Path], out: Path,
                thumb: int = 128) -> str:
    from unifybench.html_report import CSS
    title = f"UnifyBench reproduce: {table.spec.title}"
    body = [f"<h1>{_e(title)}</h1>"]
    if man.get("tiny"):
        body.append(f'<div class="notice tiny" id="tiny-notice">{_e(TINY_BANNER)}</div>')
    body.append(tables.render_html(table))
    body.append('<ul class="table-notes">' + "".join(f"<li>{_e(n)}</li>" for n in _notes(man)) + "</ul>")
    for p in plots:
        if p.suffix == ".png":
            src = "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")
            body.append(f'<h2 id="plots">Plot</h2><img class="plot" data-role="plot" src="{src}" alt="{_e(p.name)}">')
    labels = {r.id: r.label for r in table.spec.rows}
    for r in planned_runs(man):
        label = labels.get(r["row"], r["row"]) + (f" on {r['benchmark']}" if r["run"] != r["row"] else "")
        body.append(_row_section(r["row"], label, row_state(suite, r["run"]), done.get(r["run"]), out, thumb))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}{SUITE_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_outputs(suite: Path) -> dict[str, Path]:
    """table.md/.tex/.csv, plots/, report.html under the suite folder; returns what was written."""
    suite = Path(suite)
    table, man, done, intervals = build(suite)
    written = {}
    for fmt, text in (("md", render_md(table, man)), ("tex", render_tex(table, man)),
                      ("csv", render_csv(table, man, intervals))):
        p = suite / f"table.{fmt}"
        atomic_write_text(p, text)
        written[fmt] = p
    plots = plot(table, man, intervals, suite / "plots")
    for p in plots:
        written[p.suffix.lstrip(".")] = p
    page = suite / "report.html"
    atomic_write_text(page, render_page(table, man, done, suite, plots, page))
    written["html"] = page
    return written
