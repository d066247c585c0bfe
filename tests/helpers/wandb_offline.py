"""Reading what an offline Weights & Biases run wrote, with wandb's own protobuf classes.

An offline run keeps its records in `<dir>/wandb/offline-run-*/run-<id>.wandb`: a LevelDB-style log (a 7-byte
file header, then 32 KiB blocks of chunks with a 7-byte header: crc32c, length, type FULL/FIRST/MIDDLE/LAST)
whose payloads are `wandb_internal_pb2.Record` messages. wandb ships no Python reader of it any more (its Go
core writes and syncs it), so the tests read it here.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file")
    out, payload, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:                               # a block's tail too short for a header is padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and n == 0:                   # zero padding up to the block's end
            pos += left - 7
            continue
        payload += data[pos:pos + n]
        pos += n
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(payload)
            out.append(rec)
            payload = b""
    return out


def history(run_dir: Path) -> list[dict]:
    """The logged rows (key -> value) of the one offline run under `run_dir/wandb/`, in order, wandb's own
    `_step`/`_runtime`/`_timestamp` keys included."""
    files = sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
    if len(files) != 1:
        raise AssertionError(f"expected one offline run under {run_dir}/wandb, found {len(files)}")
    rows = []
    for rec in records(files[0]):
        if rec.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return rows
