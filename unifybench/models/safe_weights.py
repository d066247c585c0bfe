"""The one rule every weight loader applies before a library opens a file: safetensors only, header checked.

A pickle (`.bin`, `.pt`, `.pth`, `.ckpt`, `.pkl`) runs code while it loads, even through `torch.load`'s
restricted unpickler (which has had escapes), so no loader hands one to torch, transformers, diffusers or
open_clip. A weights folder (or file) holding pickles and no safetensors is refused in one line that names
the file and gives the command converting it, writing the safetensors file next to the checkpoint (run
it once, in a trusted environment). A safetensors file whose header does not parse (truncated, garbage
first bytes) is refused naming the file, before a library fails on it with its own traceback.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from unifybench.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MAX_HEADER = 100_000_000        # the safetensors format's own limit on the JSON header


def pickle_files(folder: Path) -> list[Path]:
    """The pickle-format weight files directly in `folder`, by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)


def conversion_hint(src: Path, dst: Path) -> str:
    """A one-line command that converts pickle `src` into safetensors `dst` (both absolute, so nothing lands
    in the working folder)."""
    src, dst = Path(src).absolute(), Path(dst).absolute()
    return (f"convert it once in a trusted environment: python -c \"import torch, safetensors.torch as s; "
            f"s.save_file({{k: v.contiguous().clone() for k, v in torch.load('{src}', weights_only=True)"
            f".items()}}, '{dst}')\"")


def refuse_pickle(file: Path, what: str, dst: Path | None = None, hint: str | None = None,
                  others: int = 0) -> UserError:
    """The one-line error for pickle weights `file` of `what` (and `others` more pickles beside it); `dst`
    is where the converted file belongs (default: beside it, same stem); `hint` replaces the command."""
    file = Path(file)
    dst = dst if dst is not None else file.with_suffix(".safetensors")
    more = f" (and {others} more pickle files)" if others else ""
    return UserError(f"{file}{more}: {what} weights in a pickle format; unifybench reads safetensors only and "
                     f"never unpickles; " + (hint or conversion_hint(file, dst)))


def refuse_pickle_only(folder: Path, what: str, target: str | None = None) -> None:
    """Raise when `folder` holds pickle weight files and no `*.safetensors` beside them. `target` is the
    safetensors file name the loader looks for (default: the pickle's stem)."""
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = pickle_files(folder)
    if pickles:
        raise refuse_pickle(pickles[0], what, folder / target if target else None, others=len(pickles) - 1)


def check_safetensors(file: Path, what: str = "model") -> Path:
    """`file` when its header parses as a safetensors header (8-byte little-endian length, then that many
    bytes of JSON, within the file); a one-line UserError naming the file otherwise. Reads the header only."""
    file = Path(file)
    if file.suffix.lower() in PICKLE_SUFFIXES:
        raise refuse_pickle(file, what)
    try:
        size = file.stat().st_size
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserError(f"{file}: not a safetensors file ({size} bytes, shorter than its 8-byte header "
                                f"length)")
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > _MAX_HEADER or 8 + n > size:
                raise UserError(f"{file}: not a safetensors file or truncated (header length {n}, file size "
                                f"{size} bytes)")
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise UserError(f"{file}: cannot read weights ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError):
        raise UserError(f"{file}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise UserError(f"{file}: corrupt safetensors header (not a JSON object)")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
               and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2
               and isinstance(v["data_offsets"][1], int)), default=0)
    if 8 + n + end > size:
        raise UserError(f"{file}: truncated safetensors file (tensors end at byte {8 + n + end}, file has {size})")
    return file


def safetensors_in(folder: Path, what: str, target: str | None = None) -> list[Path]:
    """The checked `*.safetensors` files directly in `folder` (sorted); pickle-only folders refused."""
    refuse_pickle_only(folder, what, target)
    return [check_safetensors(p, what) for p in sorted(Path(folder).glob("*.safetensors"))]
