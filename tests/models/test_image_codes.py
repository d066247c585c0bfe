"""The on-disk image-code cache: keyed by content and flip, reused across processes, same numbers as without it."""
import shutil

import pytest
import torch
from PIL import Image

from unifybench.methods.base import RunContext
from unifybench.models.image_codes import ImageCodeCache


def _image(path, value):
    Image.new("RGB", (8, 8), (value, 2 * value % 256, 3 * value % 256)).save(path)
    return path


class CountingEncoder:
    """Codes that depend on the pixels and the flip (not on the path), with a call count."""

    def __init__(self):
        self.calls = 0

    def __call__(self, path, flip):
        self.calls += 1
        import numpy as np
        pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)).flatten()
        return pixels.flip(0) if flip else pixels


def test_rerun_reads_the_disk_and_keys_are_content_and_flip(tmp_path):
    a, b = _image(tmp_path / "a.png", 10), _image(tmp_path / "b.png", 20)
    enc = CountingEncoder()
    first = ImageCodeCache(enc, "f" * 64, tmp_path / "cache")
    want = {(p, f): enc(p, f) for p in (a, b) for f in (False, True)}
    enc.calls = 0
    for (p, f), codes in want.items():
        assert torch.equal(first.codes(p, f), codes)
    assert enc.calls == first.encode_calls == 4
    assert torch.equal(first.codes(a, True), want[(a, True)]) and enc.calls == 4   # memory

    again = ImageCodeCache(enc, "f" * 64, tmp_path / "cache")                   # a new process, same disk
    for (p, f), codes in want.items():
        got = again.codes(p, f)
        assert got.dtype == torch.long and torch.equal(got, codes)
    assert again.encode_calls == 0 and enc.calls == 4

    copy = shutil.copy(a, tmp_path / "elsewhere.png")                             # same bytes, other path
    assert torch.equal(again.codes(copy), want[(a, False)]) and again.encode_calls == 0
    _image(b, 30)                                                                # new bytes at the old path
    assert torch.equal(again.codes(b), enc(b, False)) and again.encode_calls == 1

    other = ImageCodeCache(enc, "e" * 64, tmp_path / "cache")                   # another encoder fingerprint
    other.codes(a)
    assert other.encode_calls == 1


def test_damaged_entry_is_recomputed(tmp_path):
    a = _image(tmp_path / "a.png", 10)
    enc = CountingEncoder()
    ImageCodeCache(enc, "f" * 64, tmp_path / "cache").codes(a)
    [entry] = (tmp_path / "cache" / "image_codes").rglob("*.safetensors")
    entry.write_bytes(b"not a safetensors file")
    again = ImageCodeCache(enc, "f" * 64, tmp_path / "cache")
    assert torch.equal(again.codes(a), enc(a, False)) and again.encode_calls == 1


@pytest.mark.slow
def test_second_yochameleon_fit_encodes_nothing_and_gives_identical_losses(bench, tmp_path):
    from unifybench.methods.yochameleon import YoChameleon
    from unifybench.models.concept_tokens import ConceptTokens

    concept = bench.concepts()[0]
    runs = []
    for n in range(2):                     # two runs, fresh method objects, one cache folder
        m = YoChameleon(RunContext(cache_dir=tmp_path / "cache", tiny=True), "tiny", {"epochs": 2})
        m.setup()
        calls = []
        encode = m.backbone.encode_images
        m.backbone.encode_images = lambda images, *a, **k: calls.append(len(images)) or encode(images, *a, **k)
        (tmp_path / f"fit{n}").mkdir()
        artifact = m.fit(concept, bench, tmp_path / f"fit{n}")
        tokens, header = ConceptTokens.load(artifact)
        runs.append((sum(calls), header["epoch_losses"], tokens.embed.clone()))
    (cold_calls, cold_losses, cold_embed), (warm_calls, warm_losses, warm_embed) = runs
    assert cold_calls > 0 and warm_calls == 0
    assert cold_losses == warm_losses and torch.equal(cold_embed, warm_embed)
