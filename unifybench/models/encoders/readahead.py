"""Image files -> preprocessed pixel batches, in order, prepared in threads while the model runs.

Embedding a retrieval pool is two kinds of work per image: reading + decoding + resizing it (the CPU, the
suite's own) and the encoder's forward (the model). Done one after the other, the first is a quarter of a
1-concept run at a 10k pool on the tiny CLIP (bench/scale.py), and on a GPU machine it is what the GPU waits
for. `pixel_batches` prepares up to `AHEAD` batches in a thread pool (PIL's decode and resize release the
GIL) while the caller encodes the current one. Each batch is exactly `torch.stack([prepare(p) for p in
batch])`: the same tensors, in the same order, as the sequential loop, so every feature is unchanged.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

AHEAD = 2   # batches prepared beyond the one being encoded (memory: (AHEAD + 1) x batch of pixels)


def read_workers() -> int:
    """Threads that prepare images: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def pixel_batches(paths: Sequence[Path], prepare: Callable[[Path], torch.Tensor], batch_size: int,
                  workers: int | None = None) -> Iterator[torch.Tensor]:
    """`torch.stack([prepare(p) for p in batch])` for consecutive batches of `paths`, in order.

    `prepare` raises for a bad file; the exception reaches the caller at that file's batch, as in the
    sequential loop (batches after it are not waited for)."""
    batches = [list(paths[i:i + batch_size]) for i in range(0, len(paths), batch_size)]
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=workers or read_workers(), thread_name_prefix="readahead") as pool:
        pending: deque = deque()
        try:
            for batch in batches:
                pending.append([pool.submit(prepare, p) for p in batch])
                if len(pending) > AHEAD:
                    yield torch.stack([f.result() for f in pending.popleft()])
            while pending:
                yield torch.stack([f.result() for f in pending.popleft()])
        finally:
            for futures in pending:     # an error or an abandoned generator: do not prepare the rest
                for f in futures:
                    f.cancel()
