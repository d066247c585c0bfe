"""Opening a user's photo: fully decoded RGB, or a one-line error naming the file."""
from __future__ import annotations

from pathlib import Path

from unifybench.errors import UserError


def open_rgb(path: str | Path, flip: bool = False):
    """The image at `path` as RGB (mirrored left-right with `flip`); an unreadable file is a user error."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")   # decodes every pixel: a truncated file fails here, not later
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else im
