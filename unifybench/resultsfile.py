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
    def partial(self) -> bool:
        """A `--limit` run: some items were left out on purpose."""
        return bool(self.doc.get("partial"))

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
    problem = validate_doc(doc)
    if problem:
        raise UserError(f"{p}: {problem}")
    return ResultsFile(p, doc)


_NUMBER = (int, float)
_RESULT_NUMBERS = ("value", "std", "stderr")
_RESULT_COUNTS = ("n", "n_failed", "n_missing")


def _is_number(v: Any) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def _check_result(res: Any, where: str) -> str | None:
    """One metric's result: numbers where numbers belong (text there would reach every page and table)."""
    if not isinstance(res, dict) or "value" not in res:
        return f"{where} has no 'value'"
    for key in _RESULT_NUMBERS:
        if res.get(key) is not None and not _is_number(res[key]):
            return f"{where}.{key} is {type(res[key]).__name__}, not a number"
    for key in _RESULT_COUNTS:
        if res.get(key) is not None and (not isinstance(res[key], int) or isinstance(res[key], bool)):
            return f"{where}.{key} is {type(res[key]).__name__}, not an integer"
    for key in ("preset", "note"):
        if res.get(key) is not None and not isinstance(res[key], str):
            return f"{where}.{key} is {type(res[key]).__name__}, not text"
    pc = res.get("per_concept")
    if pc is not None:
        if not isinstance(pc, dict):
            return f"{where}.per_concept is not an object"
        for c, v in pc.items():
            if v is not None and not _is_number(v):
                return f"{where}.per_concept[{c!r}] is {type(v).__name__}, not a number"
    ci = res.get("ci95")
    if ci is not None:
        if not isinstance(ci, dict):
            return f"{where}.ci95 is not an object"
        for key in ("low", "high"):
            if ci.get(key) is not None and not _is_number(ci[key]):
                return f"{where}.ci95.{key} is {type(ci[key]).__name__}, not a number"
    by_task = res.get("by_task")
    if by_task is not None:
        if not isinstance(by_task, dict):
            return f"{where}.by_task is not an object"
        for task, sub in by_task.items():
            problem = _check_result(sub, f"{where}.by_task[{task!r}]")
            if problem:
                return problem
    return None


def validate_doc(doc: Any) -> str | None:
    """The first schema problem of a results document (field path and what is wrong), or None.

    Checks the fields the commands read (results, config, the tiny flag and notice, dates and versions):
    a results.json from someone else is input like any other.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        return "not a unifybench results file (no 'results' object)"
    for bench, evs in doc["results"].items():
        if not isinstance(evs, dict):
            return f"results[{bench!r}] is not an object"
        for ev, res in evs.items():
            problem = _check_result(res, f"results[{bench!r}][{ev!r}]")
            if problem:
                return problem
    if "tiny" in doc and not isinstance(doc["tiny"], bool):
        return f"tiny is {type(doc['tiny']).__name__}, not true/false"
    if "partial" in doc and not isinstance(doc["partial"], (bool, dict)):
        return "partial is neither true/false nor an object"
    for key in ("notice", "date", "git_hash", "unifybench_version"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            return f"{key} is {type(doc[key]).__name__}, not text"
    if "schema_version" in doc and not isinstance(doc["schema_version"], int):
        return "schema_version is not an integer"
    cfg = doc.get("config")
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        return "config is not an object"
    method = cfg.get("method")
    if method is not None:
        if not isinstance(method, dict):
            return "config.method is not an object"
        for key in ("name", "preset"):
            if method.get(key) is not None and not isinstance(method[key], str):
                return f"config.method.{key} is {type(method[key]).__name__}, not text"
    for key in ("benchmark", "data_root", "device", "dtype"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            return f"config.{key} is {type(cfg[key]).__name__}, not text"
    if cfg.get("seed") is not None and (not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool)):
        return "config.seed is not an integer"
    concepts = cfg.get("concepts")
    if concepts is not None and (not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts)):
        return "config.concepts is not a list of names"
    if cfg.get("evaluators") is not None and not isinstance(cfg["evaluators"], dict):
        return "config.evaluators is not an object"
    return None


def get_path(obj: Any, dotted: str) -> Any:
    """`obj["a"]["b"]` for "a.b"; None when any step is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj
