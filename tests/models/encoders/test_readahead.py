"""Pool embedding with images prepared in threads: the same features as the one-after-the-other loop."""
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from unifybench.errors import DataError
from unifybench.models.encoders import clip as clip_module
from unifybench.models.encoders.clip import embed_images_cached, load_clip, load_rgb, tiny_clip_path
from unifybench.models.encoders.readahead import pixel_batches


def test_batches_come_in_order_whatever_order_the_threads_finish():
    def prepare(i):
        time.sleep(0.002 * ((7 * i) % 5))         # later items often finish first
        return torch.tensor([float(i), threading.get_ident() % 7])
    batches = list(pixel_batches(list(range(23)), prepare, batch_size=5, workers=4))
    assert [b.shape[0] for b in batches] == [5, 5, 5, 5, 3]
    assert torch.cat(batches)[:, 0].tolist() == [float(i) for i in range(23)]


def test_an_error_reaches_the_caller_at_its_batch_and_the_rest_is_not_prepared():
    prepared = []

    def prepare(i):
        if i == 6:
            raise ValueError("bad file 6")
        prepared.append(i)
        return torch.zeros(1)
    got = []
    with pytest.raises(ValueError, match="bad file 6"):
        for b in pixel_batches(list(range(400)), prepare, batch_size=4, workers=2):
            got.append(b)
    assert len(got) == 1                              # batch [0..3]; [4..7] holds the bad file
    assert len(prepared) < 40                         # read ahead by a few batches, not the whole list


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(70):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_embedded_pool_equals_the_model_on_each_batch_and_survives_a_partial_write(pool, tmp_path, monkeypatch):
    """70 images in batches of 32 with a cache write every 40 features: every feature equals
    `ClipModel.encode_images` on the loaded pictures (bit for bit), and a second call reads them all back."""
    model = load_clip(tiny_clip_path(tmp_path / "models"))
    expected = model.encode_images([load_rgb(p) for p in pool], batch_size=32)
    monkeypatch.setattr(clip_module, "WRITE_EVERY", 40)
    writes = []
    real_write = clip_module._write_cache
    monkeypatch.setattr(clip_module, "_write_cache", lambda f, new, m: (writes.append(len(new)), real_write(f, new, m)))
    first = embed_images_cached(model, pool, tmp_path / "cache", batch_size=32)
    assert torch.equal(first, expected)
    assert writes == [64, 6]                          # after 2 batches (>= 40 new), then the last one
    monkeypatch.setattr(model, "encode_pixels", lambda px: pytest.fail("a cached feature was recomputed"))
    assert torch.equal(embed_images_cached(model, pool, tmp_path / "cache", batch_size=32), expected)


def test_an_unreadable_pool_image_is_a_data_error_naming_it(pool, tmp_path):
    model = load_clip(tiny_clip_path(tmp_path / "models"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        embed_images_cached(model, pool[:40] + [bad], tmp_path / "cache", batch_size=8)


def _rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


def test_embedding_a_large_pool_does_not_grow_memory_per_image(tmp_path):
    """1500 pool images: memory grows by the features (kilobytes), not by a pixel batch's worth per image.
    Per-row feature copies made among the threads' pixel buffers once fragmented the heap: +0.6 MB RSS per
    image (+0.9 GB here, 24 GB at a 100k pool)."""
    rng = np.random.default_rng(2)
    paths = []
    for i in range(1500):
        paths.append(tmp_path / f"{i:04d}.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(paths[-1])
    model = load_clip(tiny_clip_path(tmp_path / "models"))
    embed_images_cached(model, paths[:64], None)           # warm-up: the model's own buffers
    before = _rss_mib()
    feats = embed_images_cached(model, paths, tmp_path / "cache")
    assert feats.shape == (1500, model.embed_dim)
    assert _rss_mib() - before < 300
