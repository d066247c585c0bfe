"""The resume key of a concept unit, and what a rerun into the same output folder reuses.

A unit (one concept's fit and predict) is reused when its marker `concepts/<c>/unit.json` holds this run's
key. The key hashes *content only*, never a path, so a moved weights cache or run folder reuses every unit:

* the method's settings (`describe()`), the content hash of each weight file it loaded (by role and file
  name; hashes of large files are remembered by path, size and mtime, `unifybench.store.file_sha256`), the
  benchmark's data files (by name relative to its root, and content), the seed, the version;
* the code: a fingerprint of the installed package's .py files and of a user's own method module, so an
  edited method retrains (`unifybench.environment.source_fingerprint`);
* the unit's item ids.

Each part is also recorded in the marker (`parts`), so a rerun can say *which* part changed and
`run --check` can say what would be reused without loading any weights (all parts but the weights).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

from unifybench import environment as env
from unifybench.store import canonical_hash, file_sha256
from unifybench.version import __version__

WEIGHTS = "models"   # the part `run --check` cannot compute: it loads nothing


def code_fingerprint(method) -> str:
    """The package's source, plus the module of a method defined outside it (a user's own Method class)."""
    roots = env.source_roots()
    try:
        own = Path(inspect.getsourcefile(type(method)) or "").resolve()
    except (TypeError, OSError):   # defined in a notebook or by exec: no file to hash
        own = None
    extra = [own] if own and own.is_file() and not any(r in own.parents for r in roots) else []
    return env.source_fingerprint(roots, extra)


def data_hash(benchmark) -> str:
    """The benchmark's data files, by name relative to its root (two concepts' info.json never collide)."""
    return canonical_hash([(_rel_name(p, benchmark), file_sha256(p)) for p in benchmark.data_files()])


def _rel_name(path: Path, benchmark) -> str:
    root = benchmark.root
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve())) if root else str(path)
    except ValueError:
        return str(path)


def weights_hash(model_files: dict[str, Path], cache_dir: Path) -> str:
    """Content hashes of the method's weight files by role and file name (not by folder)."""
    return canonical_hash({role: file_sha256(p, cache_dir) for role, p in sorted(model_files.items())})


def parts(method_describe: dict, data: str, seed: int, code: str, weights: str | None) -> dict:
    """The run-wide parts of every unit's key (weights None: not known without loading, `run --check`)."""
    out = {"method": canonical_hash(method_describe), "data": data, "seed": seed, "version": __version__,
           "code": code}
    if weights is not None:
        out[WEIGHTS] = weights
    return out


def run_key(key_parts: dict) -> str:
    return canonical_hash(key_parts)


def unit_key(key_parts: dict, item_ids: list[str]) -> str:
    return canonical_hash({"run": run_key(key_parts), "items": items_hash(item_ids)})


def items_hash(item_ids: list[str]) -> str:
    return canonical_hash(list(item_ids))


def marker(out: Path, concept: str) -> dict | None:
    """A unit's finished marker, or None when it has none (or an unreadable one)."""
    try:
        doc = json.loads((Path(out) / "concepts" / concept / "unit.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def changed(doc: dict, key_parts: dict, item_ids: list[str]) -> list[str]:
    """The parts a finished marker differs from this run in ("unknown": an old marker without parts);
    the weights are compared only when `key_parts` has them."""
    recorded = doc.get("parts")
    if not isinstance(recorded, dict):
        return ["unknown"]
    diff = [name for name, value in key_parts.items() if recorded.get(name) != value]
    if recorded.get("items") != items_hash(item_ids):
        diff.append("items")
    return diff


def describe_changes(names: list[str]) -> str:
    words = {"method": "settings", "data": "data", "seed": "seed", "version": "version", "code": "code",
             WEIGHTS: "weights", "items": "items", "unknown": "an older unifybench"}
    return ", ".join(words.get(n, n) for n in names)
