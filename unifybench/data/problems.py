"""Collecting every problem of a benchmark's files (file, field, what) while loading goes on, and reading a
JSON file into that collection: `concepts()`/`items()` raise the first one, `validate()` lists them all."""
from __future__ import annotations

import json
from pathlib import Path

from unifybench.data.unifybench import _type_name
from unifybench.errors import DataError

class Problems:
    """Collects (path, message, field) triples; loading goes on after each one."""

    def __init__(self):
        self.items: list[tuple[str, str, str | None]] = []

    def add(self, path, message: str, field: str | None = None) -> None:
        self.items.append((str(path), message, field))

    def add_error(self, e: DataError) -> None:
        message = str(e)
        where = e.path + (f" [{e.field}]" if e.field else "") + ": "
        self.items.append((e.path, message[len(where):] if message.startswith(where) else message, e.field))

    def lines(self) -> list[str]:
        return [str(DataError(p, m, f)) for p, m, f in self.items]

    def raise_first(self) -> None:
        if self.items:
            p, m, f = self.items[0]
            more = len(self.items) - 1
            if more:
                m += f" (and {more} more problem{'s' if more > 1 else ''}; see `unifybench validate`)"
            raise DataError(p, m, f)


def read_json_file(path: Path, problems: Problems, expected: type | tuple = dict):
    """The parsed file, or None after recording why not (missing, not UTF-8, not JSON, wrong type).

    Duplicate keys, which `json` would silently collapse to the last one, are recorded as problems too.
    """
    if not path.is_file():
        problems.add(path, "file is missing")
        return None
    dups: list[str] = []

    def pairs(kv):
        d = {}
        for k, v in kv:
            if k in d:
                dups.append(k)
            d[k] = v
        return d

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=pairs)
    except UnicodeDecodeError as e:
        problems.add(path, f"not UTF-8 text ({e.reason})")
        return None
    except json.JSONDecodeError as e:
        problems.add(path, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
        return None
    for k in dups:
        problems.add(path, f"key {k!r} appears more than once (JSON keeps only the last)", field=k)
    if not isinstance(data, expected):
        problems.add(path, f"must be a JSON {_type_name(expected)}, got {_type_name(type(data))}")
        return None
    return data


def text_field(problems: Problems, path: Path, value, where: str) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    got = "missing" if value is None else "empty" if isinstance(value, str) else f"a {_type_name(type(value))}"
    problems.add(path, f"must be a non-empty string, got {got}", field=where)
    return None
