"""`unifybench report RESULTS --out report.html`: one static HTML page for a run (see unifybench.html_report)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    p.description = ("Write one static HTML page: summary and paper tables, per-concept breakdowns, and for each "
                     "concept its reference images beside the images generated for every prompt.")
    p.add_argument("results", type=Path, metavar="RESULTS", help="results.json or run folder")
    p.add_argument("--out", type=Path, help="HTML file to write (default: report.html in the run folder)")
    p.add_argument("--images", choices=["embed", "link"], default="embed",
                   help="embed base64 thumbnails (self-contained, default) or link the files by relative path")
    p.add_argument("--thumb", type=int, default=160, help="thumbnail size in pixels (default 160)")
    p.add_argument("--max-images-per-prompt", type=int, default=None, help="show at most this many per prompt")
    p.add_argument("--spec", action="append", default=None, metavar="NAME",
                   help="paper table(s) to include (default: every spec with a row this run maps to)")


def main(args) -> int:
    from unifybench.errors import UserError
    from unifybench.html_report import build_report
    from unifybench.resultsfile import load_results
    from unifybench.store import atomic_write_text
    if args.thumb < 16:
        raise UserError("--thumb must be at least 16 pixels")
    rf = load_results(args.results)
    out = args.out or rf.run_dir / "report.html"
    page = build_report(rf, out, images=args.images, thumb=args.thumb, specs=args.spec,
                        max_images_per_prompt=args.max_images_per_prompt)
    atomic_write_text(out, page)
    print(f"wrote {out} ({len(page.encode()) // 1024} KiB)", file=sys.stderr)
    return 0
