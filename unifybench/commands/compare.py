"""`unifybench compare A B`: per metric, A's and B's values and the paired difference B - A over the
concepts both runs scored, with its 95% interval from a paired cluster bootstrap over those concepts."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Paired differences between two runs: for every benchmark/evaluator, the mean of "
                     "(B - A) over the concepts both runs have a value for, with a seeded bootstrap interval.")
    p.add_argument("a", type=Path, metavar="A", help="results.json or run folder (the reference)")
    p.add_argument("b", type=Path, metavar="B", help="results.json or run folder (compared with A)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--iterations", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--format", choices=["text", "md", "json"], default="text", help="output format")


def compare_runs(a, b, seed: int = 0, iterations: int = 10000, level: float = 0.95) -> list[dict]:
    """One dict per benchmark/evaluator in either run (A's order, then B's extra ones)."""
    from unifybench.stats import paired_difference
    ra = {(bench, ev): res for bench, ev, res in a.metrics()}
    rb = {(bench, ev): res for bench, ev, res in b.metrics()}
    keys = list(ra) + [k for k in rb if k not in ra]
    rows = []
    for key in keys:
        x, y = ra.get(key), rb.get(key)
        row = {"benchmark": key[0], "evaluator": key[1],
               "value_a": None if x is None else x.get("value"), "value_b": None if y is None else y.get("value"),
               "preset_a": None if x is None else x.get("preset"), "preset_b": None if y is None else y.get("preset"),
               "higher_is_better": b.higher_is_better(key[1]) if y is not None else a.higher_is_better(key[1])}
        if x is not None and y is not None:
            row.update(paired_difference(x.get("per_concept") or {}, y.get("per_concept") or {}, seed=seed,
                                         iterations=iterations, level=level))
        else:
            row.update({"diff": None, "low": None, "high": None, "n_shared": 0, "excludes_zero": None})
        rows.append(row)
    return rows


def _verdict(r: dict) -> str:
    if r["value_a"] is None and r["value_b"] is None and r.get("n_shared", 0) == 0:
        return "no values"
    if r["diff"] is None:
        return "only in A" if r["value_b"] is None else "only in B" if r["value_a"] is None else "no shared concepts"
    if not r["excludes_zero"]:
        return "no clear difference"
    up = r["diff"] > 0
    if r.get("higher_is_better") is None:
        return "B higher" if up else "B lower"
    return "B better" if up == bool(r["higher_is_better"]) else "B worse"


def _f(v, sign: bool = False) -> str:
    return "-" if v is None else (f"{v:+.4f}" if sign else f"{v:.4f}")


def main(args) -> int:
    from unifybench.errors import UserError
    from unifybench.resultsfile import load_results
    from unifybench.tables import text_table
    if args.iterations < 1 or not 0 < args.level < 1:
        raise UserError("--iterations must be >= 1 and --level in (0, 1)")
    a, b = load_results(args.a), load_results(args.b)
    rows = compare_runs(a, b, args.seed, args.iterations, args.level)
    if args.format == "json":
        json.dump({"a": str(a.path), "b": str(b.path), "seed": args.seed, "iterations": args.iterations,
                   "level": args.level, "metrics": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    pct = f"{args.level:.0%}"
    headers = ["benchmark", "evaluator", "A", "B", "B-A (shared)", f"{pct} interval", "concepts", "verdict"]
    body = []
    for r in rows:
        preset = r["preset_a"] if r["preset_a"] == r["preset_b"] or r["preset_b"] is None else \
            (r["preset_b"] if r["preset_a"] is None else f"{r['preset_a']} vs {r['preset_b']}")
        interval = "-" if r["low"] is None else f"[{r['low']:+.4f}, {r['high']:+.4f}]"
        concepts = str(r.get("n_shared", 0)) + ("" if not (r.get("only_a") or r.get("only_b"))
                                                else f" (+{r.get('only_a', 0)} A only, +{r.get('only_b', 0)} B only)")
        body.append([r["benchmark"], f"{r['evaluator']} ({preset})", _f(r["value_a"]), _f(r["value_b"]),
                     _f(r["diff"], sign=True), interval, concepts, _verdict(r)])
    notes = [f"A = {a.path}", f"B = {b.path}",
             f"B-A: mean over shared concepts of the per-concept difference; interval: paired cluster bootstrap "
             f"over those concepts ({args.iterations} resamples, seed {args.seed})."]
    for name, rf in (("A", a), ("B", b)):
        if rf.tiny:
            notes.append(f"{name} comes from tiny random models: its numbers say nothing about any method.")
    if args.format == "md":
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * 2 + "---:|" * 5 + "---|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
        sys.stdout.write("\n".join(out) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    else:
        sys.stdout.write(text_table(headers, body, right={2, 3, 4}))
        sys.stdout.write("\n".join(notes) + "\n")
    return 0
