"""`--device`: the one check that the device a run names exists on this machine, made before any work.

Accepted: "cpu", "cuda" (the current CUDA device), "cuda:N" and "mps". A name torch would not parse, or a
GPU this machine does not have (no CUDA visible, an index past the device count), is a one-line
UserError; torch would otherwise fail with a traceback at the first tensor moved, after the data and
the other models were loaded.
"""
from __future__ import annotations

import re

from unifybench.errors import UserError

_DEVICE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def check_device_name(text: str) -> str:
    """`text` when it is a device name (cpu, cuda, cuda:N, mps); a one-line UserError otherwise. Needs no
    torch and no GPU (a config file planned on a login node is checked with this)."""
    m = _DEVICE.match(str(text).strip())
    if not m or (m.group(1) != "cuda" and m.group(2) not in (None, "0")):
        raise UserError(f"--device {text!r} is not a device (cpu, cuda, cuda:N or mps)")
    return text


def check_device(text: str) -> str:
    """`text` when it names a device present here; a one-line UserError otherwise."""
    check_device_name(text)
    kind, index = _DEVICE.match(str(text).strip()).groups()
    if kind == "cpu":
        return text
    import torch
    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"--device {text}: this machine has no MPS device; use --device cpu")
        return text
    if not torch.cuda.is_available():
        raise UserError(f"--device {text}: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                        f"use --device cpu")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise UserError(f"--device {text}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
                        f"(cuda:0{f'..cuda:{count - 1}' if count > 1 else ''})")
    return text
