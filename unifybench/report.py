"""The Markdown tables: the leaderboard written beside a run's results.json, and the forgetting table
(`forgetting.md`, and its section of the leaderboard)."""
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
        lines += [forgetting_table(doc["forgetting"]), ""]
    return "\n".join(lines)


def write_run_table(doc: dict, path: Path) -> None:
    atomic_write_text(path, run_table(doc) + "\n")


def _cell(value: float | None, diff: dict | None = None) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}"
    if diff is None:
        return text
    if diff["delta"] is not None and abs(diff["delta"]) < 1e-12:
        return text + " (same)"
    if diff["relative_pct"] is not None:
        return text + f" ({diff['relative_pct']:+.1f}%)"
    return text + (f" ({diff['delta']:+.3f})" if diff["delta"] is not None else "")


def forgetting_table(doc: dict) -> str:
    """Markdown: one column per evaluator metric; the base row, then each concept and the mean per condition."""
    cols = [(name, metric) for name, e in doc["evaluators"].items() for metric in e["base"]["metrics"]]
    lines = []
    if doc.get("notice"):
        lines += [f"> **{doc['notice']}**", ""]
    method = doc["method"]
    lines.append(f"### Forgetting: {method.get('name')} (preset {method.get('preset')})")
    lines.append("")
    lines.append("Difference from the base model in parentheses (% of the base; \"same\" when identical). "
                 "plain: the benchmark's own prompt; prompt: the concept's personalized prompt in front.")
    lines.append("")
    lines.append("| model | condition | " + " | ".join(f"{n}: {m}" for n, m in cols) + " |")
    lines.append("|---|---|" + "---:|" * len(cols))
    lines.append("| **base** | plain | " + " | ".join(_cell(doc["evaluators"][n]["base"]["metrics"][m])
                                                   for n, m in cols) + " |")
    conditions = []
    for e in doc["evaluators"].values():
        conditions += [c for c in e["conditions"] if c not in conditions]
    for condition in conditions:
        for concept in doc["concepts"]:
            cells = []
            for n, m in cols:
                r = doc["evaluators"][n]["concepts"].get(concept, {}).get(condition)
                cells.append(_cell(r["metrics"].get(m), r["difference"].get(m)) if r else "-")
            lines.append(f"| {concept} | {condition} | " + " | ".join(cells) + " |")
        cells = []
        for n, m in cols:
            r = doc["evaluators"][n]["mean"].get(condition)
            cells.append(_cell(r["metrics"].get(m), r["difference"].get(m)) if r else "-")
        lines.append(f"| **mean** | {condition} | " + " | ".join(f"**{c}**" for c in cells) + " |")
    lines.append("")
    lines.append("n (failed), base: " + ", ".join(
        f"{n} {e['base']['n']} ({e['base']['n_failed']})" for n, e in doc["evaluators"].items()))
    return "\n".join(lines)
