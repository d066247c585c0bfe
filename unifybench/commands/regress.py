"""`unifybench regress --golden FILE RESULTS`: did any metric move? Exit 1 if so, 0 if not, 2 on bad input.

`unifybench regress --write-golden FILE RESULTS [--tolerance T]` writes the golden file from a run.

Golden file (JSON)::

    {"format": "unifybench-golden/1",
     "created_from": {"results": "...", "git_hash": "...", "date": "...", "unifybench_version": "...",
                      "method": "yochameleon", "preset": "tiny", "benchmark": [...], "seed": 0, "tiny": true},
     "default_tolerance": 1e-6,                 # absolute, for every number of every metric
     "metrics": {
       "<benchmark>/<evaluator>": {
         "tolerance": 1e-6,                     # optional: this metric's own absolute tolerance
         "preset": "default",                   # compared exactly
         "value": 0.53, "n": 16, "n_failed": 0, # n, n_failed (and n_missing) compared exactly
         "per_concept": {"dog": 0.5, ...},      # each within the tolerance; the concept set must match
         "extras": {"positive_recall": 0.6, "ci95.low": 0.41, ...}}}}   # other numeric fields, flattened

Everything in the golden file is checked; a metric that only the fresh run has is listed as "new" and
fails only with --strict. A value that was None must still be None (and the reverse).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unifybench.errors import DataError, UserError

GOLDEN_FORMAT = "unifybench-golden/1"
DEFAULT_TOLERANCE = 1e-6
EXACT = ("n", "n_failed", "n_missing")
_SKIP = {"value", "per_concept", "preset", *EXACT}


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Compare a fresh results.json with a golden one metric by metric (value, per-concept "
                     "values, n, n_failed, numeric extras) within the tolerances kept in the golden file; "
                     "exit 1 when anything moved beyond tolerance.")
    p.add_argument("results", type=Path, metavar="RESULTS", help="fresh results.json or run folder")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--golden", type=Path, metavar="FILE", help="golden file to compare with")
    g.add_argument("--write-golden", type=Path, metavar="FILE",
                   help="write FILE from RESULTS instead (keeps per-metric tolerances of an existing FILE)")
    p.add_argument("--tolerance", type=float, default=None,
                   help=f"default absolute tolerance written by --write-golden (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--strict", action="store_true", help="also fail on metrics the golden file does not have")
    p.add_argument("--all", action="store_true", help="print every checked quantity, not only those that moved")


# ------------------------------------------------------------------------------------------- golden

def _flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = obj
    return out


def metric_entry(res: dict) -> dict:
    entry: dict[str, Any] = {"preset": res.get("preset"), "value": res.get("value")}
    for k in EXACT:
        if k in res:
            entry[k] = res[k]
    entry["per_concept"] = dict(res.get("per_concept") or {})
    extras = _flatten({k: v for k, v in res.items() if k not in _SKIP})
    if extras:
        entry["extras"] = extras
    return entry


def make_golden(doc: dict, source: str, tolerance: float, old: dict | None = None) -> dict:
    cfg = doc.get("config") or {}
    method = cfg.get("method") or {}
    old_metrics = (old or {}).get("metrics", {})
    metrics = {}
    for bench, evs in doc["results"].items():
        for ev, res in evs.items():
            key = f"{bench}/{ev}"
            entry = metric_entry(res)
            if "tolerance" in old_metrics.get(key, {}):
                entry = {"tolerance": old_metrics[key]["tolerance"], **entry}
            metrics[key] = entry
    return {"format": GOLDEN_FORMAT,
            "created_from": {"results": source, "git_hash": doc.get("git_hash"), "date": doc.get("date"),
                             "unifybench_version": doc.get("unifybench_version"), "method": method.get("name"),
                             "preset": method.get("preset"), "benchmark": list(doc["results"]),
                             "seed": cfg.get("seed"), "tiny": bool(doc.get("tiny"))},
            "default_tolerance": tolerance,
            "metrics": metrics}


def load_golden(path: Path) -> dict:
    import json
    if not path.is_file():
        raise UserError(f"golden file {path} does not exist (create it with --write-golden)")
    try:
        g = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, f"not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(g, dict) or g.get("format") != GOLDEN_FORMAT:
        raise DataError(path, f"not a golden file (format must be {GOLDEN_FORMAT!r})", "format")
    if not isinstance(g.get("metrics"), dict):
        raise DataError(path, "missing 'metrics' object", "metrics")
    tol = g.get("default_tolerance", DEFAULT_TOLERANCE)
    if not _is_tol(tol):
        raise DataError(path, "must be a non-negative number", "default_tolerance")
    for key, m in g["metrics"].items():
        if "/" not in key or not isinstance(m, dict):
            raise DataError(path, "metrics are keyed '<benchmark>/<evaluator>' with an object each", f"metrics.{key}")
        if "tolerance" in m and not _is_tol(m["tolerance"]):
            raise DataError(path, "must be a non-negative number", f"metrics.{key}.tolerance")
    return g


def _is_tol(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and math.isfinite(v)


# ------------------------------------------------------------------------------------------- compare

@dataclass
class Check:
    metric: str
    quantity: str
    golden: Any
    fresh: Any
    tolerance: float | None     # None: exact
    moved: bool
    note: str = ""

    @property
    def diff(self) -> float | None:
        if _num(self.golden) and _num(self.fresh):
            return abs(self.fresh - self.golden)
        return None


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _close(g: Any, f: Any, tol: float) -> bool:
    if g is None or f is None:
        return g is None and f is None
    if not (_num(g) and _num(f)):
        return g == f
    if math.isnan(g) or math.isnan(f):
        return math.isnan(g) and math.isnan(f)
    return abs(f - g) <= tol


def compare(golden: dict, doc: dict) -> tuple[list[Check], list[str]]:
    """(checks, keys of metrics only the fresh run has)."""
    default = golden.get("default_tolerance", DEFAULT_TOLERANCE)
    fresh = {f"{b}/{e}": r for b, evs in doc["results"].items() for e, r in evs.items()}
    checks: list[Check] = []
    for key, g in golden["metrics"].items():
        tol = g.get("tolerance", default)
        res = fresh.get(key)
        if res is None:
            checks.append(Check(key, "(metric)", "present", "missing", None, True, "not in the fresh results"))
            continue
        f = metric_entry(res)
        if "preset" in g:
            checks.append(Check(key, "preset", g["preset"], f["preset"], None, g["preset"] != f["preset"]))
        if "value" in g:
            checks.append(Check(key, "value", g["value"], f["value"], tol, not _close(g["value"], f["value"], tol)))
        for k in EXACT:
            if k in g:
                fv = f.get(k)
                checks.append(Check(key, k, g[k], fv, None, g[k] != fv))
        if "per_concept" in g:
            gp, fp = g["per_concept"], f["per_concept"]
            for c in sorted(set(gp) | set(fp)):
                if c not in fp:
                    checks.append(Check(key, f"per_concept[{c}]", gp[c], "missing", tol, True, "concept missing"))
                elif c not in gp:
                    checks.append(Check(key, f"per_concept[{c}]", "missing", fp[c], tol, True, "concept not in golden"))
                else:
                    checks.append(Check(key, f"per_concept[{c}]", gp[c], fp[c], tol, not _close(gp[c], fp[c], tol)))
        fe = f.get("extras", {})
        for k, gv in (g.get("extras") or {}).items():
            if k not in fe:
                checks.append(Check(key, k, gv, "missing", tol, True, "field missing"))
            else:
                checks.append(Check(key, k, gv, fe[k], tol, not _close(gv, fe[k], tol)))
    new = [k for k in fresh if k not in golden["metrics"]]
    return checks, new


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.9g}"
    return "None" if v is None else str(v)


def _config_notes(golden: dict, doc: dict) -> list[str]:
    src = golden.get("created_from") or {}
    cfg = doc.get("config") or {}
    now = {"method": (cfg.get("method") or {}).get("name"), "preset": (cfg.get("method") or {}).get("preset"),
           "seed": cfg.get("seed"), "tiny": bool(doc.get("tiny"))}
    return [f"golden was made with {k}={src[k]!r}, this run has {k}={v!r}"
            for k, v in now.items() if k in src and src[k] != v]


def main(args) -> int:
    from unifybench.resultsfile import load_results
    from unifybench.store import write_json
    from unifybench.tables import text_table
    rf = load_results(args.results)
    if args.write_golden:
        if args.tolerance is not None and not _is_tol(args.tolerance):
            raise UserError("--tolerance must be a non-negative number")
        old = load_golden(args.write_golden) if args.write_golden.exists() else None
        tol = args.tolerance if args.tolerance is not None else (old or {}).get("default_tolerance", DEFAULT_TOLERANCE)
        golden = make_golden(rf.doc, str(args.results), tol, old)
        write_json(args.write_golden, golden)
        n = len(golden["metrics"])
        print(f"wrote {args.write_golden}: {n} metrics, default tolerance {tol:g} (absolute)")
        return 0
    if args.tolerance is not None:
        raise UserError("--tolerance goes with --write-golden; tolerances for --golden are kept in the golden file")
    golden = load_golden(args.golden)
    for note in _config_notes(golden, rf.doc):
        print(f"unifybench regress: warning: {note}", file=sys.stderr)
    checks, new = compare(golden, rf.doc)
    moved = [c for c in checks if c.moved]
    shown = checks if args.all else moved
    if shown:
        rows = [[c.metric, c.quantity, _show(c.golden), _show(c.fresh),
                 "" if c.diff is None else f"{c.diff:.3g}", "exact" if c.tolerance is None else f"{c.tolerance:g}",
                 ("MOVED" if c.moved else "ok") + (f" ({c.note})" if c.note else "")] for c in shown]
        sys.stdout.write(text_table(["metric", "quantity", "golden", "fresh", "|diff|", "tolerance", "status"],
                                    rows, right={4, 5}))
    for key in new:
        print(f"new metric not in the golden file: {key}" + (" (fails with --strict)" if not args.strict else ""))
    failed = len(moved) + (len(new) if args.strict else 0)
    n_metrics = len(golden["metrics"])
    if failed:
        print(f"regress: FAILED: {len(moved)} of {len(checks)} checked quantities in {n_metrics} metrics moved "
              f"beyond tolerance" + (f", {len(new)} new metrics" if args.strict and new else "")
              + f" (golden {args.golden})")
        return 1
    print(f"regress: OK: {len(checks)} quantities in {n_metrics} metrics within tolerance (golden {args.golden})")
    return 0
