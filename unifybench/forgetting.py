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
(evaluator settings, data hashes, weights, artifact, seed, code fingerprint); a rerun with the same key
reuses it. Samples go to ``<run>/forgetting/samples/<evaluator>/<model>.<condition>.jsonl``. The report (``forgetting.json``,
``forgetting.md``, and the returned dict) gives every metric for the base model and for each personalized
model with its difference from the base (absolute and relative, as in Yo'Chameleon's supplementary
Table 1), and the mean over concepts per condition.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unifybench.version import __version__
from unifybench import environment as env
from unifybench.errors import UserError
from unifybench.progress import maybe_task
from unifybench.report import forgetting_table
from unifybench.resume import code_fingerprint
from unifybench.runspec import TINY_NOTICE, RunSpec, eval_context
from unifybench.store import atomic_write_text, canonical_hash, file_sha256, write_json, write_jsonl

BASE = "base"


def model_evaluators(evaluators: list) -> list:
    return [e for e in evaluators if e.kind == "model"]


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


def run_forgetting(method, concepts: list, evaluators: list, out_dir: Path, spec: RunSpec) -> dict:
    """Evaluate the base and each personalized model of `method` (a `unifybench.methods.base.Method`);
    returns the report (empty when no evaluator applies)."""
    evs = model_evaluators(evaluators)
    if not evs:
        return {}
    backbone = method.backbone
    if backbone is None:
        raise UserError(f"forgetting evaluators ({', '.join(e.name for e in evs)}) need a method with a local "
                        f"backbone; {method.name!r} has none")
    if method.personalized_prompt is None:
        concepts = []   # a training-free baseline (the original model): its base model is all there is to test
    out = Path(out_dir)
    fdir = out / "forgetting"
    ctx = eval_context(spec, out)
    weights = {role: file_sha256(p, Path(spec.cache_dir)) for role, p in sorted(method.model_files().items())}
    data = {e.name: [(f.name, file_sha256(f)) for f in e.data_files()] for e in evs}  # also checks data exists
    code = code_fingerprint(method)   # an edited evaluator or method re-evaluates
    progress = method.ctx.progress
    unload = method.unload   # the base model again: concept tokens detached, fine-tuned weights restored

    def unit(ev, label: str, condition: str, prefix, artifact_hash: str | None) -> dict:
        key = canonical_hash({"evaluator": ev.name, "settings": ev.describe(), "data": data[ev.name],
                              "method": method.describe(), "weights": weights, "artifact": artifact_hash,
                              "condition": condition, "seed": spec.seed, "version": __version__, "code": code})
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
        doc["notice"] = TINY_NOTICE
    for name, per_model in results.items():
        ev = by_name[name]
        base_result = per_model[BASE]["plain"]
        base = dict(ev.report_metrics(base_result))
        entry: dict[str, Any] = {"settings": ev.describe(), "conditions": list(ev.conditions()),
                                 "base": {"metrics": base, "n": base_result.get("n"),
                                          "n_failed": base_result.get("n_failed"), "result": base_result},
                                 "concepts": {}, "mean": {}}
        for concept in concepts:
            for condition, res in per_model.get(concept, {}).items():
                m = dict(ev.report_metrics(res))
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
