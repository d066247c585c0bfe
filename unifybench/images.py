"""Images in and out: a user's photo opened fully as RGB (or a one-line error naming the file), and a method's
generated images saved where the runner expects them."""
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
