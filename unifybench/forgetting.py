"""The forgetting stage of a run: general benchmarks on the base model and on each personalized model.

:func:`run_forgetting` is called by the runner after every concept has been fitted. For each forgetting
evaluator (:class:`unifybench.evaluators.forgetting.base.ModelEvaluator`) it evaluates

* the **base** model: the method's backbone with no concept active (``method.unload()``: concept tokens
  detached, fine-tuned weights restored), no prefix (for a
  training-free baseline such as ``chameleon-original``, the only model there is);
* each **concept**'s model: its tokens attached (``method.load_artifact`` with the artifact the fit stage
  wrote), condition ``plain`` (the benchmark's own prompt, what the papers ran) and, unless the evaluator's
  ``with_prompt`` is off, condition ``prompt`` (``method.personalized_prompt()`` in front of every query).

Each (evaluator, model, condition) is a unit written atomically to ``<run>/forgetting/units/`` with a key
(evaluator settings, data hashes, weights, artifact, seed); a rerun with the same key reuses it. Samples go
to ``<run>/forgetting/samples/<evaluator>/<model>.<condition>.jsonl``. The report (``forgetting.json``,
``forgetting.md``, and the returned dict) gives every metric for the base model and for each personalized
model with its difference from the base (absolute and relative, as in Yo'Chameleon's supplementary
Table 1), and the mean over concepts per condition.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import unifybench
from unifybench import environment as env
from unifybench.errors import UserError
from unifybench.store import atomic_write_text, canonical_hash, file_sha256, write_json, write_jsonl

BASE = "base"


def model_evaluators(evaluators: list) -> list:
    return [e for e in evaluators if getattr(e, "kind", None) == "model"]


def check_forgetting(evaluators: list) -> None:
    """Fail now (one-line UserError) when a forgetting evaluator's data is missing, not after the fits."""
    for ev in model_evaluators(evaluators):
        ev.data_files()


def _load(path: Path, key: str) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc.get("result") if doc.get("key") == key else None


def _artifact(out: Path, concept) -> Path | None:
    marker = out / "concepts" / concept.name / "fit.json"
    try:
        art = json.loads(marker.read_text())["artifact"]
    except (OSError, json.JSONDecodeError, KeyError):
        raise UserError(f"forgetting: concept {concept.name!r} has not been fitted in {out} "
                        f"(no {marker.relative_to(out)})") from None
    return out / art if art else None


def run_forgetting(method, concepts: list, evaluators: list, out_dir: Path, spec) -> dict:
    """Evaluate the base and each personalized model; returns the report (empty when no evaluator applies)."""
    from unifybench.runner import _eval_context

    evs = model_evaluators(evaluators)
    if not evs:
        return {}
    backbone = getattr(method, "backbone", None)
    if backbone is None:
        raise UserError(f"forgetting evaluators ({', '.join(e.name for e in evs)}) need a method with a local "
                        f"backbone; {getattr(method, 'name', type(method).__name__)!r} has none")
    if not hasattr(method, "personalized_prompt"):
        concepts = []   # a training-free baseline (the original model): its base model is all there is to test
    out = Path(out_dir)
    fdir = out / "forgetting"
    ctx = _eval_context(spec, out)
    weights = {role: file_sha256(p, Path(spec.cache_dir)) for role, p in sorted(method.model_files().items())}
    data = {e.name: [(f.name, file_sha256(f)) for f in e.data_files()] for e in evs}  # also checks data exists
    progress = getattr(getattr(method, "ctx", None), "progress", None)

    def unload() -> None:
        """The base model again: the method's own `unload`, else (an object without one) tokens detached."""
        if hasattr(method, "unload"):
            method.unload()
        else:
            from unifybench.models.concept_tokens import detach
            detach(backbone)

    def unit(ev, label: str, condition: str, prefix, artifact_hash: str | None) -> dict:
        key = canonical_hash({"evaluator": ev.name, "settings": ev.describe(), "data": data[ev.name],
                              "method": method.describe(), "weights": weights, "artifact": artifact_hash,
                              "condition": condition, "seed": spec.seed, "version": unifybench.__version__})
        path = fdir / "units" / label / f"{ev.name}.{condition}.json"
        if spec.resume:
            done = _load(path, key)
            if done is not None:
                return done
        env.seed_everything(env.derive_seed(spec.seed, "forgetting", ev.name, label, condition))
        result = dict(ev.evaluate_model(backbone, prefix, ctx))
        samples = result.pop("samples", [])
        rows = [dict(s, model=label, condition=condition, **({"tiny_model": True} if spec.tiny else {}))
                for s in samples]
        write_jsonl(fdir / "samples" / ev.name / f"{label}.{condition}.jsonl", rows)
        write_json(path, {"key": key, "evaluator": ev.name, "model": label, "condition": condition,
                          "result": result})
        return result

    results: dict[str, dict[str, dict[str, dict]]] = {e.name: {} for e in evs}
    total = len(evs) + len(concepts) * sum(len(e.conditions()) for e in evs)
    from unifybench.progress import maybe_task
    with maybe_task(progress, "forgetting", total) as advance:
        unload()
        for ev in evs:
            results[ev.name][BASE] = {"plain": unit(ev, BASE, "plain", None, None)}
            advance()
        for concept in concepts:
            artifact = _artifact(out, concept)
            unload()   # each concept's model starts from the base, never from the previous concept's
            method.load_artifact(concept, artifact)
            art_hash = file_sha256(artifact) if artifact else None
            prefix = list(method.personalized_prompt())
            for ev in evs:
                per = results[ev.name].setdefault(concept.name, {})
                for condition in ev.conditions():
                    per[condition] = unit(ev, concept.name, condition, prefix if condition == "prompt" else None,
                                          art_hash)
                    advance()
        unload()

    doc = forgetting_report(results, evs, [c.name for c in concepts], method.describe(), spec.tiny)
    write_json(fdir / "forgetting.json", doc)
    atomic_write_text(fdir / "forgetting.md", forgetting_table(doc) + "\n")
    return doc


# ------------------------------------------------------------------------------------------- report

def report_metrics(ev, result: dict) -> dict[str, float | None]:
    """The numbers a table shows for one result: the evaluator's own choice, else its value."""
    pick = getattr(ev, "report_metrics", None)
    if pick is not None:
        return dict(pick(result))
    return {"value": result.get("value")}


def difference(value: float | None, base: float | None) -> dict[str, float | None]:
    """Absolute and relative (% of the base) change; None where undefined."""
    if value is None or base is None:
        return {"delta": None, "relative_pct": None}
    return {"delta": value - base, "relative_pct": (value - base) / base * 100 if base else None}


def _mean(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def forgetting_report(results: dict, evaluators: list, concepts: list[str], method: dict,
                      tiny: bool = False) -> dict[str, Any]:
    """`results[evaluator][model][condition] = evaluate_model(...)` -> the forgetting report."""
    by_name = {e.name: e for e in evaluators}
    doc: dict[str, Any] = {"method": method, "concepts": concepts, "base_model": BASE, "evaluators": {}}
    if tiny:
        from unifybench.runner import TINY_NOTICE
        doc["notice"] = TINY_NOTICE
    for name, per_model in results.items():
        ev = by_name[name]
        base_result = per_model[BASE]["plain"]
        base = report_metrics(ev, base_result)
        entry: dict[str, Any] = {"settings": ev.describe(), "conditions": list(ev.conditions()),
                                 "base": {"metrics": base, "n": base_result.get("n"),
                                          "n_failed": base_result.get("n_failed"), "result": base_result},
                                 "concepts": {}, "mean": {}}
        for concept in concepts:
            for condition, res in per_model.get(concept, {}).items():
                m = report_metrics(ev, res)
                entry["concepts"].setdefault(concept, {})[condition] = {
                    "metrics": m, "difference": {k: difference(v, base.get(k)) for k, v in m.items()},
                    "n": res.get("n"), "n_failed": res.get("n_failed"), "result": res}
        for condition in ev.conditions():
            rows = [entry["concepts"][c][condition]["metrics"] for c in concepts
                    if condition in entry["concepts"].get(c, {})]
            if not rows:
                continue
            mean = {k: _mean(r.get(k) for r in rows) for k in base}
            entry["mean"][condition] = {"metrics": mean,
                                        "difference": {k: difference(v, base.get(k)) for k, v in mean.items()},
                                        "n_concepts": len(rows)}
        doc["evaluators"][name] = entry
    return doc


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
