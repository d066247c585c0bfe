"""`unifybench table RESULTS... --spec NAME --format md|tex|csv [--out FILE]`: a paper table with our runs.

Specs and reported numbers are data files under leaderboards/ (see unifybench.tables for the formats).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unifybench.errors import UserError


EXAMPLES = """examples:
  unifybench table --list
  unifybench table --spec unictokens_table1                       # the paper's numbers alone
  unifybench table runs/yochameleon-unifybench-paper --spec unictokens_table1 --format tex --out t1.tex
  unifybench table runs/s1 runs/s2 --spec unictokens_table3_stages --row runs/s1=stage1 --row runs/s2=stage2
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Render a paper's table with the reported numbers beside reproduced ones (value and "
                     "difference), best bold and second underlined, tiny-model lines marked with a dagger. "
                     "A run maps to a row by its method name and preset (see the spec's 'match').")
    p.add_argument("results", nargs="*", type=Path, metavar="RESULTS",
                   help="results.json files or run folders (none: the paper's numbers only)")
    p.add_argument("--spec", help="table spec name (leaderboards/specs/NAME.json) or a spec file path")
    p.add_argument("--format", choices=["md", "tex", "csv"], default="md", help="output format")
    p.add_argument("--out", type=Path, help="write here instead of stdout")
    p.add_argument("--row", action="append", default=[], metavar="RESULTS=ROW",
                   help="put this run on this spec row (ablation rows of one method), e.g. runs/s1=stage1")
    p.add_argument("--any-preset", action="store_true",
                   help="show values whose evaluator ran with another preset than the column's, marked with a double dagger")
    p.add_argument("--list", action="store_true", help="list the available specs and exit")


def main(args) -> int:
    from unifybench import tables
    from unifybench.resultsfile import load_results
    from unifybench.store import atomic_write_text
    if args.list:
        for name in tables.spec_names():
            print(f"{name}\t{tables.load_spec(name).title}")
        return 0
    if not args.spec:
        raise UserError("table needs --spec NAME (see `unifybench table --list`)")
    spec = tables.load_spec(args.spec)
    results = [load_results(p) for p in args.results]
    forced = {}
    for pair in args.row:
        path, sep, row = pair.rpartition("=")
        if not sep or not path or not row:
            raise UserError(f"--row expects RESULTS=ROW, got {pair!r}")
        spec.row(row)  # unknown row -> UserError
        rf = load_results(path)
        forced[rf.path] = row
        if not any(r.path.resolve() == rf.path.resolve() for r in results):
            results.append(rf)
    table = tables.build_table(spec, results, forced, any_preset=args.any_preset)
    for w in table.warnings:
        print(f"unifybench table: warning: {w}", file=sys.stderr)
    text = tables.render(table, args.format)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
