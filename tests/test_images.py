"""Images wider than 8 bits: 16-bit greyscale scaled to 8 bits (never clipped to white), unknown ranges refused."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unifybench.errors import DataError
from unifybench.images import open_rgb, to_rgb

# 16-bit values and their 8-bit values worked out by hand: round(v * 255 / 65535) = round(v / 257)
SIXTEEN = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
EIGHT = np.array([[0, 4, 128, 255]], dtype=np.uint8)


def grey16(path: Path) -> Path:
    Image.fromarray(SIXTEEN).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"      # what PIL opens a 16-bit greyscale PNG as
    return path


def test_16_bit_greyscale_png_is_scaled_not_white(tmp_path):
    path = grey16(tmp_path / "g16.png")
    with Image.open(path) as im:
        assert (np.asarray(im.convert("RGB"))[0, 1:] == 255).all()   # PIL's own convert: white
    rgb = open_rgb(path)
    assert rgb.mode == "RGB"
    assert np.array_equal(np.asarray(rgb), np.repeat(EIGHT[..., None], 3, axis=2))


def test_mode_i_png_is_16_bit_and_other_wide_modes_are_refused(tmp_path):
    im = Image.fromarray(SIXTEEN.astype(np.int32), mode="I")
    im.format = "PNG"                                   # how older PIL opens a 16-bit PNG
    assert np.array_equal(np.asarray(to_rgb(im))[..., 0], EIGHT)
    Image.fromarray(np.array([[0.5, 2.0]], dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif.*no known range"):
        open_rgb(tmp_path / "f.tif")


def test_clip_embedding_and_judge_see_the_scaled_image(tmp_path):
    import torch
    from unifybench.evaluators.image_similarity import FEATURES, embed_files
    from unifybench.evaluators.knowledge import load_image_for_judge
    path = grey16(tmp_path / "g16.png")

    class Recorder:
        seen = []

        def fingerprint(self, cache_dir):
            return "recorder"

        def preprocess(self, rgb):
            self.seen.append(np.asarray(rgb).copy())
            return torch.zeros(1)

        def encode_pixels(self, px):
            return torch.zeros(len(px), 2)

    FEATURES.clear()
    feats, errors = embed_files(Recorder(), [path], None, batch_size=4)
    assert errors == [None] and np.array_equal(Recorder.seen[0][..., 0], EIGHT)
    data, mime = load_image_for_judge(path)
    with Image.open(io.BytesIO(data)) as sent:
        assert mime == "image/png" and sent.mode == "RGB"
        assert np.array_equal(np.asarray(sent)[..., 0], EIGHT)
