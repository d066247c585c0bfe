"""Paper-style tables from results files: specs and reported numbers as data, rendered to md/tex/csv/html.

Two kinds of data file live under ``leaderboards/`` (installed as ``unifybench.leaderboards``):

``reported/<id>.json`` -- a paper's numbers, typed in as printed::

    {"format": "unifybench-reported/1", "id": "unictokens_table1",
     "source": {"paper": "...", "table": "Table 1", "caption": "...",
                "file": "papers/004_....txt"},           # the text it was typed from, under ../shared
     "notes": ["..."],
     "columns": {"rec_weight": "Personalized Understanding / Rec. / Weight", ...},   # as printed, in order
     "rows": [{"id": "unictokens", "row": "Ours", "group": "Unified Model", "line": 165,
               "values": {"rec_weight": "0.790", "model_size": "1.3B", "gen_clip_i": "-", ...}}]}

  Every cell is the printed text: "0.790", "~1,000", "0.50 (-3.8 %)" (a number and the paper's own
  parenthetical), "~0.3-0.5" (text, never ranked), or "-" (the paper prints a dash: the row cannot
  have that cell). The source of a value is named by the file: paper, table, the row as printed
  (``row``, with its ``line`` in the text file) and the column as printed (``columns[col]``); see
  :meth:`Reported.source`.

``specs/<name>.json`` -- how to lay a table out and where each column comes from in results.json::

    {"format": "unifybench-spec/1", "name": "unictokens_table1", "title": "...",
     "reported": "unictokens_table1",        # reported/<id>.json, optional
     "benchmarks": ["unifybench", "unifybench-mini"],   # results[benchmark] tried in order; null: any
     "number_format": ".3f",                 # Python format spec for reproduced values and differences
     "row_header": "Method",                 # heading of the row-label column (optional)
     "rank": {"exclude_groups": ["Upper Bound"], "exclude_rows": []},   # rows not ranked
     "columns": [
        {"id": "model_size", "label": "Size", "kind": "info"},     # text from the reported file only
        {"id": "rec_weight", "label": "Rec. Weight", "group": "Personalized Understanding",
         "evaluator": "recognition",         # results[benchmark][evaluator]
         "preset": "unictokens",             # evaluator preset(s) that reproduce the paper's definition (a
                                             # name or a list of names; required: every column states it)
         "protocol": "...",                  # optional: what the preset does or does not reproduce
         "in_paper": true,                   # false: our own figure beside the paper's (no reported value)
         "task": "vqa",                      # optional: only this task's items, read from the result's
                                             # "by_task": {task: {value, n, n_failed, per_concept}}
         "field": "value",                   # dotted path inside that result (default "value")
         "source": "results",                # or "forgetting": the run's forgetting report (below)
         "condition": "plain",               # forgetting only: "plain" or "prompt"
         "benchmarks": ["yollava"],          # optional, overrides the spec's list
         "scale": 1,                         # optional multiplier (e.g. 100 for percentages)
         "format": ".3f",                    # optional, overrides number_format
         "higher_is_better": true}],         # which direction is better (default true)
     "second_lines": [                       # optional: more lines per run, each labelled, for figures the
        {"label": "corrected preprocessing (ours)",   # paper did not print (read with other presets)
         "columns": {"gen_clip_i": {"preset": ["unifybench", "default"]}}}],
     "rows": [
        {"id": "unictokens",                 # a reported row id (label and group come from it) ...
         "label": "UniCTokens (Ours)",       # ... optional overrides of the printed label / group
         "match": [{"method": "unictokens", "preset": "paper"}, {"method": "unictokens"}]}]}

Mapping results to rows. A results file is one run: ``config.method.name`` and ``.preset``. It goes
to the first spec row (in spec order) with a ``match`` entry naming its method *and* preset; failing
that, to the first row whose entry names its method with no preset (any preset). ``--row RESULTS=ROW``
forces a row (ablation tables, where every row is the same method with other settings). A run that
maps to no row is listed at the end under "Reproduced (not in the paper)".

Forgetting columns (``"source": "forgetting"``) read ``forgetting.evaluators[evaluator]`` of results.json:
the mean over the run's concepts of ``field`` in each personalized model's result under ``condition``
(Yo'Chameleon's "Soft Prompt" rows); a run with no personalized models (a training-free baseline such as
``chameleon-original``) gives its base model's result (the "Original Chameleon" row).

Rendering. Each paper row is printed as typed; each run mapped to it follows on its own line,
"↳ reproduced: <run folder>", whose cells are "value (difference to the reported value)". A column
whose evaluator ran with a different preset than the column needs shows "-" and a warning (or, with
``any_preset``, the value marked ‡). "-" marks a cell the row cannot have or the run did not produce;
never 0. Best is bold and second best underlined (md ``**x**`` / ``<u>x</u>``, tex ``\\textbf`` /
``\\underline``), per column, ranked separately among the paper's rows (minus ``rank`` exclusions) and
among the reproduced lines (a reproduced line of an unranked row is not ranked either); ties share
the mark; a column with fewer than two values gets no marks.
Lines from results whose ``tiny`` is true carry "†" and a footnote and are never ranked: random tiny
models say nothing about any method. A footnote names, per metric column, its evaluator and preset (and the
column's ``protocol`` note). A ``second_lines`` entry adds, under each reproduced line, "↳ <label>: <run>"
with only its columns, read with its own presets and fields (e.g. the corrected CLIP preprocessing beside the
paper's squeezed one); such lines are never ranked and carry no difference to the paper.
"""
from __future__ import annotations

import csv
import difflib
import html as htmlmod
import io
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from unifybench.errors import DataError, UserError
from unifybench.resultsfile import ResultsFile, get_path

SPEC_FORMAT = "unifybench-spec/1"
REPORTED_FORMAT = "unifybench-reported/1"
TINY_MARK = "†"
PRESET_MARK = "‡"
TINY_FOOTNOTE = (f"{TINY_MARK} tiny random models (`--preset tiny`): these numbers test the pipeline and "
                 "say nothing about any method; they are never ranked.")
PRESET_FOOTNOTE = f"{PRESET_MARK} the evaluator ran with another preset than the paper's protocol (see warnings)."
EXTRA_GROUP = "Reproduced (not in the paper)"
_NUMBER = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(\(.*\))?\s*$")


def leaderboards_dir() -> Path:
    import unifybench.leaderboards as lb
    return Path(lb.__file__).parent


# ------------------------------------------------------------------------------------------ data files

@dataclass
class Reported:
    id: str
    path: Path
    source: dict
    columns: dict[str, str]
    rows: dict[str, dict]           # id -> {"row", "group", "line", "values"}
    notes: list[str] = field(default_factory=list)

    def cell(self, row: str, col: str) -> str | None:
        r = self.rows.get(row)
        return None if r is None else r["values"].get(col)

    def source_of(self, row: str, col: str) -> str:
        """Where a reported value comes from: paper, table, row and column as printed."""
        r = self.rows[row]
        where = f", line {r['line']} of {self.source.get('file')}" if r.get("line") else ""
        group = f" [{r['group']}]" if r.get("group") else ""
        return (f"{self.source.get('paper')}, {self.source.get('table')}, row {r['row']!r}{group}, "
                f"column {self.columns.get(col, col)!r}{where}")


@dataclass
class Column:
    id: str
    label: str
    group: str = ""
    kind: str = "metric"            # "metric" | "info"
    evaluator: str | None = None
    preset: list[str] | None = None   # accepted evaluator presets; None: any
    task: str | None = None
    field: str = "value"
    benchmarks: list[str] | None = None
    scale: float = 1.0
    format: str = ".3f"
    higher_is_better: bool = True
    source: str = "results"         # "results" | "forgetting"
    condition: str = "plain"        # forgetting: which condition's personalized models
    protocol: str = ""              # what the preset reproduces of the paper's definition (footnote)
    in_paper: bool = True           # False: our figure beside the paper's columns, never in the reported file


@dataclass
class SecondLine:
    label: str
    columns: dict[str, Column]      # column id -> the column as this line reads it (its preset, field)


@dataclass
class Row:
    id: str
    label: str
    group: str = ""
    match: list[dict] = field(default_factory=list)
    rank: bool = True


@dataclass
class Spec:
    name: str
    path: Path
    title: str
    columns: list[Column]
    rows: list[Row]
    reported: Reported | None = None
    benchmarks: list[str] | None = None
    exclude_groups: list[str] = field(default_factory=list)
    exclude_rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    row_header: str = "Method"
    second_lines: list[SecondLine] = field(default_factory=list)

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise UserError(f"spec {self.name!r} has no row {row_id!r} (rows: {', '.join(r.id for r in self.rows)})")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"not JSON ({e.msg} at line {e.lineno})") from None


def _need(d: dict, key: str, path: Path, where: str, kind: type | tuple = str) -> Any:
    if key not in d:
        raise DataError(path, f"missing {key!r}", where)
    if not isinstance(d[key], kind):
        raise DataError(path, f"{key!r} has the wrong type ({type(d[key]).__name__})", where)
    return d[key]


def load_reported(name_or_path: str | Path) -> Reported:
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = leaderboards_dir() / "reported" / f"{name_or_path}.json"
    if not path.is_file():
        raise UserError(f"no reported-numbers file {path}")
    d = _read_json(path)
    if not isinstance(d, dict) or d.get("format") != REPORTED_FORMAT:
        raise DataError(path, f"not a reported-numbers file (format must be {REPORTED_FORMAT!r})", "format")
    columns = _need(d, "columns", path, "columns", dict)
    rows: dict[str, dict] = {}
    for i, r in enumerate(_need(d, "rows", path, "rows", list)):
        where = f"rows[{i}]"
        rid = _need(r, "id", path, where)
        if rid in rows:
            raise DataError(path, f"row id {rid!r} appears twice", where)
        _need(r, "row", path, where)
        values = _need(r, "values", path, where, dict)
        for col, text in values.items():
            if col not in columns:
                raise DataError(path, f"value for unknown column {col!r}", where)
            if not isinstance(text, str):
                raise DataError(path, f"value of {col!r} must be the printed text (a string)", where)
        rows[rid] = r
    return Reported(id=d.get("id", path.stem), path=path, source=_need(d, "source", path, "source", dict),
                    columns=columns, rows=rows, notes=list(d.get("notes", [])))


def spec_names() -> list[str]:
    return sorted(p.stem for p in (leaderboards_dir() / "specs").glob("*.json"))


def resolve_spec_path(name: str) -> Path:
    p = Path(name)
    if p.suffix == ".json" and p.is_file():
        return p
    path = leaderboards_dir() / "specs" / f"{name}.json"
    if not path.is_file():
        known = spec_names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown table spec {name!r}{hint} (known: {', '.join(known) or 'none'})")
    return path


def _str_list(v: Any, path: Path, where: str) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    raise DataError(path, "must be a string, a list of strings or null", where)


def load_spec(name: str) -> Spec:
    path = resolve_spec_path(name)
    d = _read_json(path)
    if not isinstance(d, dict) or d.get("format") != SPEC_FORMAT:
        raise DataError(path, f"not a table spec (format must be {SPEC_FORMAT!r})", "format")
    reported = None
    if d.get("reported"):
        ref = d["reported"]
        rpath = (path.parent.parent / "reported" / f"{ref}.json") if not str(ref).endswith(".json") \
            else (path.parent / ref)
        reported = load_reported(rpath)
    fmt = d.get("number_format", ".3f")
    _check_format(fmt, path, "number_format")
    columns = []
    for i, c in enumerate(_need(d, "columns", path, "columns", list)):
        where = f"columns[{i}]"
        cid = _need(c, "id", path, where)
        kind = c.get("kind", "metric")
        if kind not in ("metric", "info"):
            raise DataError(path, f"kind must be 'metric' or 'info', not {kind!r}", where)
        if kind == "metric" and not c.get("evaluator"):
            raise DataError(path, "a metric column needs 'evaluator'", where)
        if kind == "metric" and not c.get("preset"):
            raise DataError(path, "a metric column states the evaluator preset that reproduces the paper's "
                                  "definition ('preset': a name or a list of names)", where)
        if kind == "info" and (reported is None or cid not in reported.columns):
            raise DataError(path, f"info column {cid!r} has no column in the reported file", where)
        col = Column(id=cid, label=c.get("label", cid), group=c.get("group", ""), kind=kind,
                     evaluator=c.get("evaluator"), preset=_str_list(c.get("preset"), path, where + ".preset"),
                     task=c.get("task"), field=c.get("field", "value"),
                     benchmarks=_str_list(c.get("benchmarks"), path, where + ".benchmarks"),
                     scale=float(c.get("scale", 1.0)), format=c.get("format", fmt),
                     higher_is_better=bool(c.get("higher_is_better", True)),
                     source=c.get("source", "results"), condition=c.get("condition", "plain"),
                     protocol=c.get("protocol", ""), in_paper=bool(c.get("in_paper", True)))
        if not col.in_paper and reported is not None and cid in reported.columns:
            raise DataError(path, f"column {cid!r} is marked in_paper false but the reported file has it", where)
        if col.source not in ("results", "forgetting"):
            raise DataError(path, f"source must be 'results' or 'forgetting', not {col.source!r}", where)
        _check_format(col.format, path, where + ".format")
        columns.append(col)
    if len({c.id for c in columns}) != len(columns):
        raise DataError(path, "column ids must be unique", "columns")
    rows = []
    for i, r in enumerate(_need(d, "rows", path, "rows", list)):
        where = f"rows[{i}]"
        rid = _need(r, "id", path, where)
        rep = reported.rows.get(rid) if reported else None
        if rep is None and "label" not in r:
            raise DataError(path, f"row {rid!r} is not in the reported file and has no 'label'", where)
        match = r.get("match", [])
        if not isinstance(match, list) or not all(isinstance(m, dict) and isinstance(m.get("method"), str)
                                                  for m in match):
            raise DataError(path, "match must be a list of {\"method\": NAME, \"preset\": PRESET}", where)
        rows.append(Row(id=rid, label=r.get("label", rep["row"] if rep else rid),
                        group=r.get("group", (rep or {}).get("group", "")), match=match,
                        rank=bool(r.get("rank", True))))
    if len({r.id for r in rows}) != len(rows):
        raise DataError(path, "row ids must be unique", "rows")
    by_id = {c.id: c for c in columns}
    second = []
    for i, sl in enumerate(d.get("second_lines", []) or []):
        where = f"second_lines[{i}]"
        cols = {}
        for cid, over in _need(sl, "columns", path, where, dict).items():
            if cid not in by_id or by_id[cid].kind != "metric":
                raise DataError(path, f"no metric column {cid!r}", where)
            if not isinstance(over, dict) or not over.get("preset"):
                raise DataError(path, f"column {cid!r} needs its own 'preset'", where)
            cols[cid] = replace(by_id[cid], preset=_str_list(over["preset"], path, where + ".preset"),
                                field=over.get("field", by_id[cid].field))
        second.append(SecondLine(label=_need(sl, "label", path, where), columns=cols))
    rank = d.get("rank", {}) or {}
    return Spec(second_lines=second, name=d.get("name", path.stem), path=path, title=d.get("title", path.stem), columns=columns,
                rows=rows, reported=reported, benchmarks=_str_list(d.get("benchmarks"), path, "benchmarks"),
                exclude_groups=list(rank.get("exclude_groups", [])), exclude_rows=list(rank.get("exclude_rows", [])),
                notes=list(d.get("notes", [])), row_header=d.get("row_header", "Method"))


def _check_format(fmt: Any, path: Path, where: str) -> None:
    try:
        format(1.5, fmt)
    except (TypeError, ValueError):
        raise DataError(path, f"not a number format spec: {fmt!r} (e.g. '.3f')", where) from None


# --------------------------------------------------------------------------------------------- model

@dataclass
class Cell:
    text: str                        # what is printed (without marks): the number, or the text
    note: str = ""                   # the paper's own parenthetical after the number (" (-3.8 %)")
    value: float | None = None       # the number ranked (None: text or missing)
    diff: str | None = None          # "+0.011" for reproduced cells beside a reported number
    mark: str | None = None          # "best" | "second"
    flag: str = ""                   # PRESET_MARK when the evaluator preset differs
    full: float | None = None        # full-precision reproduced value (csv)
    source: str = ""                 # where the cell comes from (csv)


@dataclass
class Line:
    kind: str                        # "reported" | "reproduced" | "extra" | "second"
    row_id: str
    label: str
    group: str
    cells: dict[str, Cell]
    tiny: bool = False
    run: str = ""                    # results file label
    ranked: bool = True


@dataclass
class Table:
    spec: Spec
    lines: list[Line]
    warnings: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[Column]:
        return self.spec.columns

    @property
    def has_groups(self) -> bool:
        return any(line.group for line in self.lines)

    def grouped_lines(self):
        """(group label printed on this line, line): the group only on the first line of a run."""
        last = None
        for line in self.lines:
            yield (line.group if line.group != last else ""), line
            last = line.group

    def footnotes(self) -> list[str]:
        notes = []
        rep = self.spec.reported
        if rep is not None:
            notes.append(f"Reported: {rep.source.get('paper')}, {rep.source.get('table')} "
                         f"(typed from {rep.source.get('file')}).")
        if any(l.kind != "reported" for l in self.lines):
            notes.append("Reproduced lines: value (difference to the reported value of the row above).")
        labels = {r.id: r.label for r in self.spec.rows}
        excl = self.spec.exclude_groups + [labels.get(r, r) for r in self.spec.exclude_rows]
        notes.append("Best in bold, second best underlined, per column, ranked separately among the paper's rows"
                     + (f" (not ranked: {', '.join(excl)})" if excl else "") + " and among reproduced lines.")
        if any(l.tiny for l in self.lines):
            notes.append(TINY_FOOTNOTE)
        if any(c.flag for l in self.lines for c in l.cells.values()):
            notes.append(PRESET_FOOTNOTE)
        notes.append("Columns (evaluator, preset): " + "; ".join(
            f"{column_title(c)} = {c.evaluator}, {' or '.join(c.preset or [])}"
            + (f" ({c.protocol})" if c.protocol else "") for c in self.columns if c.kind == "metric") + ".")
        for sl in self.spec.second_lines:
            notes.append(f"Lines \"{sl.label}\": " + "; ".join(
                f"{column_title(c)} = {c.evaluator}, {' or '.join(c.preset or [])}" for c in sl.columns.values())
                + " (not the paper's definition; not ranked).")
        return notes


def column_title(col: Column) -> str:
    return f"{col.group} / {col.label}" if col.group else col.label


def parse_number(text: str | None) -> float | None:
    """The leading number of a printed cell ("0.50 (-3.8 %)" -> 0.5); None for text and dashes."""
    if text is None:
        return None
    m = _NUMBER.match(text)
    return float(m.group(1)) if m else None


def _fmt(v: float, fmt: str) -> str:
    return format(v, fmt)


def _signed(v: float, fmt: str) -> str:
    s = format(v, "+" + fmt.lstrip("+- "))
    return "±" + s[1:] if s[1:] == format(0.0, fmt.lstrip("+- ")) else s   # no "-0.000"


def _shown(v: float, fmt: str) -> float:
    """The value as printed (ties are judged on what the reader sees)."""
    try:
        return float(format(v, fmt).replace(",", ""))
    except ValueError:
        return v


def match_row(spec: Spec, rf: ResultsFile) -> Row | None:
    method, preset = rf.method, rf.preset
    for row in spec.rows:
        if any(m.get("method") == method and "preset" in m and m["preset"] == preset for m in row.match):
            return row
    for row in spec.rows:
        if any(m.get("method") == method and m.get("preset") is None for m in row.match):
            return row
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def _forgetting_value(col: Column, entry: dict) -> float | None:
    """Mean over concepts of `field` under the column's condition; the base model for a run without concepts."""
    per = entry.get("concepts") or {}
    if not per:
        return _number(get_path((entry.get("base") or {}).get("result") or {}, col.field))
    vals = [_number(get_path(c[col.condition].get("result") or {}, col.field)) for c in per.values()
            if col.condition in c]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def lookup(spec: Spec, col: Column, rf: ResultsFile, any_preset: bool) -> tuple[float | None, str, str | None]:
    """(value, flag, warning) of a metric column in one results file."""
    if col.source == "forgetting":
        entry = ((rf.doc.get("forgetting") or {}).get("evaluators") or {}).get(col.evaluator)
        if entry is None:
            return None, "", None
        res = {"preset": (entry.get("settings") or {}).get("preset")}
    else:
        results = rf.doc["results"]
        benches = col.benchmarks or spec.benchmarks or list(results)
        res = None
        for bench in benches:
            if col.evaluator in (results.get(bench) or {}):
                res = results[bench][col.evaluator]
                break
        if res is None:
            return None, "", None
    flag = ""
    ran = res.get("preset")
    if col.preset is not None and ran not in col.preset:
        want = " or ".join(repr(p) for p in col.preset)
        msg = f"{rf.path}: {col.evaluator} ran with preset {ran!r}; column {col.label!r} wants {want}"
        if not any_preset:
            return None, "", msg + " (shown as '-'; --any-preset shows it marked " + PRESET_MARK + ")"
        flag = PRESET_MARK
    if col.source == "forgetting":
        v = _forgetting_value(col, entry)
        return (None if v is None else v * col.scale), flag, None
    if col.task is not None:
        sub = (res.get("by_task") or {}).get(col.task)
        if not isinstance(sub, dict):
            return None, flag, (f"{rf.path}: {col.evaluator} has no by_task[{col.task!r}] breakdown; "
                                f"column {col.label!r} needs it (shown as '-')")
        res = sub
    v = _number(get_path(res, col.field))
    return (None if v is None else v * col.scale), flag, None


def build_table(spec: Spec, results: list[ResultsFile], forced: dict[Path, str] | None = None,
                any_preset: bool = False) -> Table:
    forced = {Path(k).resolve(): v for k, v in (forced or {}).items()}
    rep = spec.reported
    table = Table(spec, [])
    by_row: dict[str, list[ResultsFile]] = {}
    extras: list[ResultsFile] = []
    for rf in results:
        row_id = forced.get(rf.path.resolve()) or forced.get(rf.run_dir.resolve())
        row = spec.row(row_id) if row_id else match_row(spec, rf)
        if row is None:
            extras.append(rf)
        else:
            by_row.setdefault(row.id, []).append(rf)

    def reproduced_line(kind: str, row_id: str, label: str, group: str, rf: ResultsFile, ranked: bool,
                        reading: dict[str, Column] | None = None) -> Line:
        cells = {}
        for col in spec.columns:
            if col.kind == "info" or (reading is not None and col.id not in reading):
                cells[col.id] = Cell("")
                continue
            if reading is not None:
                col = reading[col.id]
            v, flag, warning = lookup(spec, col, rf, any_preset and reading is None)
            if warning and reading is None and warning not in table.warnings:   # a second line is optional
                table.warnings.append(warning)
            if v is None:
                cells[col.id] = Cell("-", source=str(rf.path))
                continue
            shown = _shown(v, col.format)
            cell = Cell(_fmt(v, col.format), value=shown, flag=flag, full=v, source=str(rf.path))
            printed = parse_number(rep.cell(row_id, col.id)) if (rep and kind == "reproduced") else None
            if printed is not None:
                cell.diff = _signed(v - printed, col.format)
            cells[col.id] = cell
        return Line(kind, row_id, label, group, cells, tiny=rf.tiny, run=rf.label, ranked=ranked and not rf.tiny)

    for row in spec.rows:
        cells = {}
        for col in spec.columns:
            text = rep.cell(row.id, col.id) if rep else None
            if text is None:   # a row the paper does not have: blank, not "-"
                cells[col.id] = Cell("")
                continue
            cell = Cell(text, source=rep.source_of(row.id, col.id))
            m = _NUMBER.match(text) if col.kind == "metric" else None
            if m:
                cell.value = float(m.group(1))
                cell.text, cell.note = text[:m.end(1)], text[m.end(1):]
            cells[col.id] = cell
        ranked = row.rank and row.group not in spec.exclude_groups and row.id not in spec.exclude_rows
        table.lines.append(Line("reported", row.id, row.label, row.group, cells, ranked=ranked))
        for rf in by_row.get(row.id, []):
            table.lines.append(reproduced_line("reproduced", row.id, f"↳ reproduced: {rf.label}", row.group, rf,
                                               ranked))
            for sl in spec.second_lines:
                line = reproduced_line("second", row.id, f"↳ {sl.label}: {rf.label}", row.group, rf, False,
                                       reading=sl.columns)
                if any(c.value is not None for c in line.cells.values()):
                    table.lines.append(line)
    for rf in extras:
        label = f"{rf.method or '?'} ({rf.preset or '-'}): {rf.label}"
        table.lines.append(reproduced_line("extra", "", label, EXTRA_GROUP, rf, True))
    _rank(table)
    return table


def _rank(table: Table) -> None:
    for col in table.columns:
        if col.kind != "metric":
            continue
        for series in (("reported",), ("reproduced", "extra")):
            cells = [l.cells[col.id] for l in table.lines
                     if l.kind in series and l.ranked and l.cells[col.id].value is not None]
            if len(cells) < 2:
                continue
            distinct = sorted({c.value for c in cells}, reverse=col.higher_is_better)
            for c in cells:
                if c.value == distinct[0]:
                    c.mark = "best"
                elif len(distinct) > 1 and c.value == distinct[1]:
                    c.mark = "second"


# ------------------------------------------------------------------------------------------ renderers

def _with_marks(cell: Cell, bold, under) -> str:
    text = cell.text
    if cell.mark == "best":
        text = bold(text)
    elif cell.mark == "second":
        text = under(text)
    text += cell.flag + cell.note
    if cell.diff is not None:
        text += f" ({cell.diff})"
    return text


def _label(line: Line) -> str:
    return line.label + (TINY_MARK if line.tiny else "")


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_md(table: Table) -> str:
    cols = table.columns
    lead = ["Type", table.spec.row_header] if table.has_groups else [table.spec.row_header]
    lead = [_md_escape(x) for x in lead]
    out = [f"**{table.spec.title}**", ""]
    out.append("| " + " | ".join(lead + [_md_escape(c.label) for c in cols]) + " |")
    out.append("|" + "---|" * len(lead) + "|".join("---" if c.kind == "info" else "---:" for c in cols) + "|")
    for group, line in table.grouped_lines():
        cells = [_md_escape(_with_marks(line.cells[c.id], lambda t: f"**{t}**", lambda t: f"<u>{t}</u>"))
                 for c in cols]
        first = [_md_escape(group)] if table.has_groups else []
        out.append("| " + " | ".join(first + [_md_escape(_label(line))] + cells) + " |")
    out.append("")
    out.extend(f"- {n}" for n in table.footnotes())
    return "\n".join(out) + "\n"


_TEX_CHARS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
              "{": r"\{", "}": r"\}", "~": r"$\sim$", "^": r"\^{}", "<": r"$<$", ">": r"$>$",
              TINY_MARK: r"$^\dagger$", PRESET_MARK: r"$^\ddagger$", "↳": r"$\hookrightarrow$",
              "±": r"$\pm$", "`": "", "−": "-"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_CHARS.get(ch, ch) for ch in s)


def render_tex(table: Table) -> str:
    cols = table.columns
    spec = table.spec
    out = [f"% generated by `unifybench table --spec {spec.name}`; do not edit by hand",
           r"\begin{table}[t]", r"\centering", r"\small",
           r"\caption{" + tex_escape(spec.title) + "}",
           r"\begin{tabular}{" + "l" * (2 if table.has_groups else 1) + "".join("l" if c.kind == "info" else "c" for c in cols) + "}", r"\hline"]
    # group header with \multicolumn over runs of columns sharing a group
    if any(c.group for c in cols):
        parts, i = [""] * (2 if table.has_groups else 1), 0
        while i < len(cols):
            j = i
            while j + 1 < len(cols) and cols[j + 1].group == cols[i].group:
                j += 1
            g = cols[i].group
            parts.append(r"\multicolumn{%d}{c}{%s}" % (j - i + 1, tex_escape(g)) if g and j > i else tex_escape(g))
            i = j + 1
        out.append(" & ".join(parts) + r" \\")
    lead = ["Type", table.spec.row_header] if table.has_groups else [table.spec.row_header]
    out.append(" & ".join([tex_escape(x) for x in lead] + [tex_escape(c.label) for c in cols]) + r" \\")
    out.append(r"\hline")
    for n, (group, line) in enumerate(table.grouped_lines()):
        if group and n:
            out.append(r"\hline")
        cells = []
        for c in cols:
            cell = line.cells[c.id]
            esc = Cell(tex_escape(cell.text), tex_escape(cell.note), cell.value,
                       tex_escape(cell.diff) if cell.diff else None, cell.mark, tex_escape(cell.flag))
            cells.append(_with_marks(esc, lambda t: r"\textbf{" + t + "}", lambda t: r"\underline{" + t + "}"))
        first = [tex_escape(group)] if table.has_groups else []
        out.append(" & ".join(first + [tex_escape(_label(line))] + cells) + r" \\")
    out += [r"\hline", r"\end{tabular}", ""]
    out += [r"\par\footnotesize " + tex_escape(n) for n in table.footnotes()]
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


CSV_FIELDS = ["kind", "row_id", "row", "group", "run", "tiny", "column_id", "column", "value", "difference",
              "mark", "source"]


def render_csv(table: Table) -> str:
    """Long format: one line per (table line, column), full-precision reproduced values."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for line in table.lines:
        for c in table.columns:
            cell = line.cells[c.id]
            if line.kind != "reported" and c.kind == "info":
                continue
            value = repr(cell.full) if cell.full is not None else cell.text + cell.note
            w.writerow([line.kind, line.row_id, line.label, line.group, line.run, str(line.tiny).lower(),
                        c.id, c.label, value, cell.diff or "", cell.mark or "", cell.source])
    return buf.getvalue()


def render_html(table: Table) -> str:
    """An HTML <table> (no page around it) for the report."""
    e = htmlmod.escape
    cols = table.columns
    out = [f'<table class="paper-table" data-spec="{e(table.spec.name)}">',
           f"<caption>{e(table.spec.title)}</caption>",
           "<thead><tr>" + ("<th>Type</th>" if table.has_groups else "") + f"<th>{e(table.spec.row_header)}</th>" + "".join(
               f'<th title="{e(c.group)}">{e(c.label)}</th>' for c in cols) + "</tr></thead><tbody>"]
    for group, line in table.grouped_lines():
        cells = "".join(f"<td>{_with_marks(_esc_cell(line.cells[c.id]), lambda t: f'<b>{t}</b>', lambda t: f'<u>{t}</u>')}</td>"
                        for c in cols)
        cls = f"line-{line.kind}" + (" tiny" if line.tiny else "")
        first = f"<td>{e(group)}</td>" if table.has_groups else ""
        out.append(f'<tr class="{cls}">{first}<td>{e(_label(line))}</td>{cells}</tr>')
    out.append("</tbody></table>")
    out.append('<ul class="table-notes">' + "".join(f"<li>{e(n)}</li>" for n in table.footnotes()) + "</ul>")
    return "\n".join(out)


def _esc_cell(cell: Cell) -> Cell:
    return Cell(htmlmod.escape(cell.text), htmlmod.escape(cell.note), cell.value,
                htmlmod.escape(cell.diff) if cell.diff else None, cell.mark, cell.flag)


RENDERERS = {"md": render_md, "tex": render_tex, "csv": render_csv, "html": render_html}


def render(table: Table, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise UserError(f"unknown table format {fmt!r} (known: {', '.join(RENDERERS)})")
    return RENDERERS[fmt](table)


# ------------------------------------------------------------------------------------ plain text table

def text_table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A fixed-width text table (for terminals and CI logs); columns in `right` are right-aligned."""
    right = right or set()
    widths = [len(h) for h in headers]
    for r in rows:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], len(v))

    def fmt(r):
        return "  ".join(v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(r)).rstrip()
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]) + "\n"
