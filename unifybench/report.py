"""The Markdown leaderboard table written beside a run's results.json."""
from __future__ import annotations

from pathlib import Path

from unifybench.store import atomic_write_text


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def run_table(doc: dict) -> str:
    method = doc["config"]["method"]
    lines = []
    if doc.get("tiny"):
        lines += [f"> **{doc['notice']}**", ""]
    if doc.get("partial"):
        partial = doc["partial"]
        lines += [f"> **PARTIAL RUN: {partial.get('reason') if isinstance(partial, dict) else '--limit'}**", ""]
    for bench, results in doc["results"].items():
        metrics = list(results)
        if not metrics:
            continue
        lines.append(f"### {bench}: {method['name']} (preset {method['preset']}, seed {doc['config']['seed']})")
        lines.append("")
        lines.append("| concept | " + " | ".join(f"{m} ({results[m]['preset']})" for m in metrics) + " |")
        lines.append("|---|" + "---:|" * len(metrics))
        concepts = sorted({c for m in metrics for c in results[m]["per_concept"]})
        for c in concepts:
            lines.append(f"| {c} | " + " | ".join(_fmt(results[m]["per_concept"].get(c)) for m in metrics) + " |")
        row = "| **mean** | " + " | ".join(f"**{_fmt(results[m]['value'])}**" for m in metrics) + " |"
        lines.append(row)
        lines.append("| n (failed) | " + " | ".join(f"{results[m]['n']} ({results[m]['n_failed']})"
                                                    for m in metrics) + " |")
        lines.append("")
    if doc.get("forgetting"):
        from unifybench.forgetting import forgetting_table
        lines += [forgetting_table(doc["forgetting"]), ""]
    return "\n".join(lines)


def write_run_table(doc: dict, path: Path) -> None:
    atomic_write_text(path, run_table(doc) + "\n")
