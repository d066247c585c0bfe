"""Reading results.json files for the commands that work on them (table, compare, regress, report).

A path may name the file itself or the run folder holding it. Problems are `UserError`s (exit 2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from unifybench.errors import UserError


@dataclass
class ResultsFile:
    path: Path          # the results.json
    doc: dict

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def tiny(self) -> bool:
        return bool(self.doc.get("tiny"))

    @property
    def method(self) -> str | None:
        return ((self.doc.get("config") or {}).get("method") or {}).get("name")

    @property
    def preset(self) -> str | None:
        return ((self.doc.get("config") or {}).get("method") or {}).get("preset")

    @property
    def seed(self):
        return (self.doc.get("config") or {}).get("seed")

    @property
    def label(self) -> str:
        """Short name for tables: the run folder's name."""
        return self.run_dir.name or str(self.path)

    def metrics(self) -> Iterator[tuple[str, str, dict]]:
        """(benchmark, evaluator, result) in file order."""
        for bench, evs in self.doc["results"].items():
            for ev, res in evs.items():
                yield bench, ev, res

    def higher_is_better(self, evaluator: str) -> bool | None:
        ev = ((self.doc.get("config") or {}).get("evaluators") or {}).get(evaluator) or {}
        return ev.get("higher_is_better")


def load_results(path: str | Path) -> ResultsFile:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise UserError(f"results file {path} does not exist (give a results.json or a run folder holding one)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise UserError(f"{p}: not a unifybench results file (no 'results' object)")
    if not isinstance(doc.get("config", {}), dict):
        raise UserError(f"{p} [config]: not an object")
    for bench, evs in doc["results"].items():
        if not isinstance(evs, dict):
            raise UserError(f"{p}: results[{bench!r}] is not an object")
        for ev, res in evs.items():
            if not isinstance(res, dict) or "value" not in res:
                raise UserError(f"{p}: results[{bench!r}][{ev!r}] has no 'value'")
            _check_metric(p, f"results[{bench!r}][{ev!r}]", res)
    return ResultsFile(p, doc)


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _check_metric(p: Path, where: str, res: dict) -> None:
    """Types of the fields every command reads: a text where a number belongs is refused, not rendered."""
    if not _number(res["value"]):
        raise UserError(f"{p} [{where}.value]: not a number or null")
    for name in ("n", "n_failed", "n_missing"):
        if name in res and not (isinstance(res[name], int) and not isinstance(res[name], bool)):
            raise UserError(f"{p} [{where}.{name}]: not an integer")
    per = res.get("per_concept", {})
    if not isinstance(per, dict) or not all(_number(v) for v in per.values()):
        raise UserError(f"{p} [{where}.per_concept]: not an object of numbers")


def get_path(obj: Any, dotted: str) -> Any:
    """`obj["a"]["b"]` for "a.b"; None when any step is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj
