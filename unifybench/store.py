"""On-disk writing that survives a crash: atomic files, JSONL, content hashes."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    from unifybench.errors import DataError
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(path, f"line {n} is not JSON ({e.msg})") from None
                    if not isinstance(row, dict):
                        raise DataError(path, f"line {n} is a JSON {type(row).__name__}, not an object")
                    rows.append(row)
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text (byte {e.start} of the file cannot be decoded)") from None
    return rows


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_hash(obj: Any) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def file_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of a file; large weight files are remembered by (path, size, mtime) in `cache_dir`."""
    path = Path(path)
    st = path.stat()
    memo = None
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if cache_dir is not None and st.st_size > 64 << 20:
        memo = Path(cache_dir) / "file_hashes.json"
        try:
            known = json.loads(memo.read_text())
        except (OSError, json.JSONDecodeError):
            known = {}
        if key in known:
            return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo is not None:
        known[key] = digest
        write_json(memo, known)
    return digest
