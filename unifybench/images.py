"""Images in and out: a user's photo opened fully as RGB (or a one-line error naming the file), and a method's
generated images saved where the runner expects them.

**Pixels wider than 8 bits.** PIL's ``convert("RGB")`` clips 16-bit greyscale (modes ``I;16*``, and ``I``
from a PNG, whose deepest greyscale is 16 bits) at 255, so nearly every pixel turns white and every image
metric would score a white picture. :func:`to_rgb` scales them to 8 bits instead (v * 255 / 65535, rounded).
32-bit integer (``I`` from other formats) and float (``F``) images have no known range: they are refused
with an error naming the file, never guessed.
"""
from __future__ import annotations

from pathlib import Path

from unifybench.errors import DataError, UserError

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(im, path: str | Path = "<image>"):
    """An opened PIL image as 8-bit RGB, 16-bit greyscale scaled to 8 bits (see the module doc); raises
    DataError naming `path` for pixels of unknown range. Decodes every pixel."""
    import numpy as np
    from PIL import Image
    if im.mode in SIXTEEN_BIT_MODES or (im.mode == "I" and im.format == "PNG"):
        a = np.asarray(im, dtype=np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise DataError(path, f"{im.mode} pixels outside 0..65535; convert the image to 8-bit RGB")
        grey = np.floor(a * (255.0 / 65535.0) + 0.5).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode in ("I", "F"):
        raise DataError(path, f"image mode {im.mode} ({'32-bit integer' if im.mode == 'I' else 'floating-point'} "
                              "pixels) has no known range; convert it to 8-bit RGB")
    return im.convert("RGB")


def open_rgb(path: str | Path, flip: bool = False):
    """The image at `path` as RGB (mirrored left-right with `flip`); an unreadable file is a user error."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = to_rgb(im, path)   # decodes every pixel: a truncated file fails here, not later
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else im


def save_images(images, out_dir: str | Path, stem: str, advance=None) -> list[str]:
    """Write PIL images as `<out_dir>/images/<stem>_<k>.png` (calling `advance()` after each, for a progress
    bar); returns absolute paths, which the runner stores relative to the run folder."""
    folder = Path(out_dir) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(images):
        path = folder / f"{stem}_{k}.png"
        image.save(path)
        paths.append(str(path.resolve()))
        if advance is not None:
            advance()
    return paths
