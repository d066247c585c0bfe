"""The Chameleon/Anole backbone on the tiny checkpoint: building, loading, decoding modes, VQGAN decoder keys."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from unifybench.errors import UserError
from unifybench.models.chameleon.backbone import ChameleonBackbone
from unifybench.models.local import resolve_model_path
from unifybench.models.chameleon.tiny import VERSION, tiny_chameleon_path
from unifybench.models.chameleon.vqgan import VQGANDecoder

DECODER_PREFIXES = ("model.vqmodel.decoder.", "model.vqmodel.post_quant_conv.")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models are dominated by per-op overhead; extra intra-op threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_chameleon_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def backbone(tiny_dir):
    return ChameleonBackbone.load(tiny_dir)


@pytest.fixture(scope="module")
def generated(backbone):
    prompt = backbone.encode_text("A photo of <reserved16200>.", add_bos=True) + [backbone.eot_id]
    first = backbone.generate_images(prompt, n=2, generator=torch.Generator().manual_seed(7), batch_size=2)
    again = backbone.generate_images(prompt, n=2, generator=torch.Generator().manual_seed(7), batch_size=2)
    return first, again


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_build_is_deterministic_and_cached(tmp_path, tiny_dir):
    other = tiny_chameleon_path(tmp_path)
    assert other == tmp_path / "tiny" / VERSION
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _sha(other / name) == _sha(tiny_dir / name), name
    stamp = (other / "model.safetensors").stat().st_mtime_ns
    assert tiny_chameleon_path(tmp_path) == other  # second call reuses the build
    assert (other / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind


def test_load_attributes(backbone, tiny_dir):
    bb = backbone
    assert bb.path == tiny_dir and bb.weight_files() == [tiny_dir / "model.safetensors"]
    assert not bb.model.training and not any(p.requires_grad for p in bb.model.parameters())
    assert bb.image_seq_length == 1024 and bb.hidden_size == 64 and bb.vocab_size == len(bb.tokenizer)
    assert bb.token_id("<racm3:break>") == bb.boi_id and bb.token_id("<eoss>") == bb.eoi_id
    assert bb.token_id("<reserved08706>") == bb.eot_id and bb.token_id("<s>") == bb.bos_id
    assert (bb.eos_id, bb.pad_id) == (bb.token_id("</s>"), bb.token_id("<pad>"))
    assert bb.image_token_ids.numel() == 512
    assert {bb.boi_id, bb.eoi_id, bb.eot_id}.isdisjoint(bb.image_token_ids.tolist())
    with pytest.raises(UserError, match="not in the tokenizer"):
        bb.token_id("<no-such-token>")
    ids = bb.encode_text("A photo of <reserved16200>.")
    assert bb.token_id("<reserved16200>") in ids and ids[0] != bb.bos_id
    assert bb.encode_text("A photo", add_bos=True)[0] == bb.bos_id


def test_forward_hidden_logits_are_unmasked(backbone):
    ids = torch.tensor([backbone.encode_text("Is this my dog?", add_bos=True)])
    hidden, past = backbone.forward_hidden(ids)
    assert hidden.shape == (1, ids.shape[1], backbone.hidden_size) and past is None
    logits = backbone.logits(hidden)
    assert torch.isfinite(logits[..., backbone.image_token_ids]).all()  # stock forward() sets these to -inf-ish
    text_cols = torch.ones(backbone.vocab_size, dtype=torch.bool)
    text_cols[backbone.image_token_ids] = False
    with torch.no_grad():
        stock = backbone.model(input_ids=ids).logits
    torch.testing.assert_close(logits[..., text_cols], stock[..., text_cols])


def test_embedding_and_head_can_be_replaced(backbone):
    class Shifted(torch.nn.Module):  # same call signature as the base module
        def __init__(self, base, shift):
            super().__init__()
            self.base, self.shift = base, shift

        def forward(self, x):
            return self.base(x) + self.shift

    ids = torch.tensor([backbone.encode_text("A cat", add_bos=True)])
    emb, head = backbone.input_embeddings(), backbone.output_head()
    base_hidden, _ = backbone.forward_hidden(ids)
    try:
        backbone.set_input_embeddings(Shifted(emb, 1.0))
        backbone.set_output_head(Shifted(head, 3.0))
        hidden, _ = backbone.forward_hidden(ids)
        assert not torch.allclose(hidden, base_hidden)
        torch.testing.assert_close(backbone.logits(hidden), head(hidden) + 3.0)
    finally:
        backbone.set_input_embeddings(emb)
        backbone.set_output_head(head)
    assert backbone.input_embeddings() is emb and backbone.output_head() is head


def test_generate_text_never_emits_image_tokens(backbone):
    class FavourImages(torch.nn.Module):  # without the text-only mask, greedy would pick image tokens
        def __init__(self, base, banned):
            super().__init__()
            self.base, self.banned = base, banned

        def forward(self, hidden):
            out = self.base(hidden).clone()
            out[..., self.banned] += 100.0
            return out

    head = backbone.output_head()
    banned = torch.cat([backbone.image_token_ids, torch.tensor([backbone.boi_id, backbone.eoi_id])])
    ids = torch.tensor([backbone.encode_text("Can you describe <reserved16200>?", add_bos=True)])
    try:
        backbone.set_output_head(FavourImages(head, banned))
        out = backbone.generate_text(ids, max_new_tokens=12)
    finally:
        backbone.set_output_head(head)
    assert 0 < len(out) <= 12
    assert set(out).isdisjoint(banned.tolist())
    assert backbone.eot_id not in out and backbone.eos_id not in out


def test_generate_images_shape_vocabulary_and_seed(backbone, generated):
    first, again = generated
    assert first.shape == (2, 1024) and first.dtype == torch.long
    assert torch.isin(first, backbone.image_token_ids.cpu()).all()
    assert torch.equal(first, again)  # same seed, same batch size: bit-identical
    assert not torch.equal(first[0], first[1])  # rows are independent samples


def test_decode_and_round_trip(backbone, generated):
    first, _ = generated
    size = backbone.model.config.vq_config.resolution
    images = backbone.decode_images(first)
    assert len(images) == 2 and all(isinstance(i, Image.Image) for i in images)
    assert all(i.size == (size, size) and i.mode == "RGB" for i in images)
    codes = backbone.encode_images(images + [Image.new("RGB", (300, 200), (200, 30, 30))])
    assert codes.shape == (3, 1024) and codes.dtype == torch.long
    assert torch.isin(codes, backbone.image_token_ids).all()
    assert [i.size for i in backbone.decode_images(codes)] == [(size, size)] * 3
    with pytest.raises(ValueError):
        backbone.decode_images(torch.full((1, 1024), backbone.eot_id))


def test_decoder_keys_match_checkpoint(backbone, tiny_dir):
    with safe_open(str(tiny_dir / "model.safetensors"), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(DECODER_PREFIXES)}
    expected = {"model.vqmodel." + k: tuple(v.shape)
                for k, v in VQGANDecoder(backbone.model.config.vq_config).state_dict().items()}
    assert stored == expected
    assert any(".mid.attn_1." in k for k in stored) and any(".up.2.attn.1." in k for k in stored)
    assert any("nin_shortcut" in k for k in stored) and any(".upsample.conv." in k for k in stored)
    # post_quant_conv is shared with the HF model (it loads that key too): both copies must agree.
    torch.testing.assert_close(backbone.decoder.post_quant_conv.weight,
                               backbone.model.model.vqmodel.post_quant_conv.weight)


def test_decoder_blocks_match_transformers_encoder_blocks():
    # Our resnet / attention blocks must compute what transformers' (encoder-side) blocks compute.
    from transformers import ChameleonVQVAEConfig
    from transformers.models.chameleon import modeling_chameleon as hf

    from unifybench.models.chameleon.vqgan import AttnBlock, ResnetBlock

    torch.manual_seed(0)
    x = torch.randn(2, 32, 8, 8)
    pairs = [(ResnetBlock(32, 64), hf.ChameleonVQVAEEncoderResnetBlock(ChameleonVQVAEConfig(), 32, 64)),
             (AttnBlock(32), hf.ChameleonVQVAEEncoderAttnBlock(32))]
    for ours, theirs in pairs:
        theirs.load_state_dict(ours.state_dict())  # same parameter names, strict
        with torch.no_grad():
            torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-5, atol=1e-5)


def test_missing_decoder_fails_loudly(tmp_path, tiny_dir):
    shutil.copytree(tiny_dir, tmp_path / "chameleon", ignore=shutil.ignore_patterns("model.safetensors"))
    with safe_open(str(tiny_dir / "model.safetensors"), framework="pt") as f:
        kept = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("model.vqmodel.decoder.")}
        metadata = f.metadata()
    weights = tmp_path / "chameleon" / "model.safetensors"
    save_file(kept, str(weights), metadata=metadata)
    with pytest.raises(UserError, match="model.safetensors.*decoder tensors missing"):
        ChameleonBackbone.load(tmp_path / "chameleon")
    understanding_only = ChameleonBackbone.load(tmp_path / "chameleon", require_decoder=False)
    with pytest.raises(UserError, match="decoder tensors missing"):
        understanding_only.decode_images(torch.full((1, 1024), int(understanding_only.image_token_ids[0])))


def test_resolve_model_path(tmp_path, monkeypatch, tiny_dir):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert resolve_model_path(tiny_dir) == tiny_dir
    with pytest.raises(UserError, match="not found locally.*nothing is downloaded"):
        resolve_model_path("leloy/Anole-7b-v0.1-hf")
    with pytest.raises(UserError, match="not found locally"):
        resolve_model_path(str(tmp_path / "no" / "such" / "dir"))
    # A hub id present in the cache resolves to its snapshot directory.
    repo = tmp_path / "hub" / "models--someone--tiny"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve_model_path("someone/tiny") == repo / "snapshots" / "abc123"


def test_pixels_are_truncated_to_8_bits_like_the_yochameleon_postprocess(backbone):
    """The fork's ChameleonImageProcessor.postprocess: unnormalise, rescale, torch.clip(0, 255).to(uint8)
    (truncation), re-derived here in numpy from the processor's own numbers."""
    import numpy as np
    ip = backbone.processor.image_processor
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 4, 4, generator=gen) * 2.4 - 1.2            # a decoder output, a bit past [-1, 1]
    x = pixels.numpy().astype(np.float32)
    if ip.do_normalize:
        x = x * np.array(ip.image_std, np.float32)[:, None, None] + np.array(ip.image_mean, np.float32)[:, None, None]
    x = x / np.float32(ip.rescale_factor)
    want = np.clip(x, 0, 255).astype(np.uint8).transpose(1, 2, 0)      # astype truncates toward zero
    got = np.asarray(backbone._to_pil(pixels))
    assert np.array_equal(got, want)
    rounded = np.clip(np.round(x), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    assert (got != rounded).any()                                     # rounding would have moved some pixels


@pytest.fixture
def short_images(backbone):
    """64 codes per image instead of 1024: the decoding loop is the same, the test 16x shorter."""
    full = backbone.image_seq_length
    backbone.image_seq_length = 64
    yield backbone
    backbone.image_seq_length = full


def test_image_codes_do_not_depend_on_batch_size_or_the_prompts_beside_them(short_images):
    b = short_images
    prompts = [b.encode_text(t, add_bos=True) + [b.eot_id]
               for t in ("A dog.", "A photo of a dog on the beach at night.", "A red cup.")]
    rows = [p for p in prompts for _ in range(2)]

    def streams():
        return [torch.Generator().manual_seed(50 + r) for r in range(len(rows))]

    alone = torch.cat([b.generate_image_rows([p], [g], batch_size=1) for p, g in zip(rows, streams())])
    for batch in (2, 4, 6):      # 4 and 6 mix prompt lengths: left padding, masks and explicit positions
        assert torch.equal(b.generate_image_rows(rows, streams(), batch_size=batch), alone), batch
    assert len({tuple(r) for r in alone.tolist()}) == len(rows)
    one = b.generate_images(prompts[1], 3, torch.Generator().manual_seed(5), batch_size=1)
    assert torch.equal(b.generate_images(prompts[1], 3, torch.Generator().manual_seed(5), batch_size=3), one)


def test_preallocated_kv_cache_gives_the_dynamic_cache_tokens_and_never_reallocates(short_images, monkeypatch):
    b = short_images
    prompt = b.encode_text("A photo of a dog.", add_bos=True) + [b.eot_id]
    ids = torch.tensor([prompt])
    static_text = b.generate_text(ids, 12)
    static_codes = b.generate_images(prompt, 2, torch.Generator().manual_seed(3), batch_size=2)

    cache = b.kv_cache(len(prompt) + 2)
    with torch.no_grad():
        _, cache = b.forward_hidden(ids, past_key_values=cache, use_cache=True)
        buffer = cache.layers[0]._k.data_ptr()
        for step in range(2):
            _, cache = b.forward_hidden(torch.tensor([[b.eot_id]]), past_key_values=cache, use_cache=True)
            assert cache.layers[0]._k.data_ptr() == buffer and cache.get_seq_length() == len(prompt) + step + 1
        with pytest.raises(RuntimeError, match="full"):
            b.forward_hidden(torch.tensor([[b.eot_id]]), past_key_values=cache, use_cache=True)

    monkeypatch.setattr(b, "kv_cache", lambda capacity: None)      # transformers' DynamicCache instead
    assert b.generate_text(ids, 12) == static_text
    assert torch.equal(b.generate_images(prompt, 2, torch.Generator().manual_seed(3), batch_size=2), static_codes)
