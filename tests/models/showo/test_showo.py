"""Show-o + MAGVIT-v2: checkpoint layout, the real loader on a tiny checkpoint, masks, MaskGIT, KV cache."""
import json
import math

import pytest
import torch

from unifybench.errors import UserError
from unifybench.models.showo.magvit2 import MAGVITv2, MagvitConfig
from unifybench.models.showo.backbone import (PhiConfig, Showo, ShowoBackbone, additive, expected_state_dict_shapes,
                                     mask_lengths, mmu_mask, t2i_mask)
from unifybench.models.showo.tiny import tiny_showo_path


def notes_key_list(layers=24, hidden=2048, inter=8192, head_dim=64, vocab=58498):
    """The key/shape list written out from the notes, section 5.2 (independently of the module)."""
    keys = {"showo.model.embed_tokens.weight": (vocab, hidden),
            "showo.model.final_layernorm.weight": (hidden,), "showo.model.final_layernorm.bias": (hidden,),
            "showo.lm_head.weight": (vocab, hidden), "showo.lm_head.bias": (vocab,)}
    for i in range(layers):
        p = f"showo.model.layers.{i}."
        keys.update({p + "input_layernorm.weight": (hidden,), p + "input_layernorm.bias": (hidden,),
                     p + "mlp.fc1.weight": (inter, hidden), p + "mlp.fc1.bias": (inter,),
                     p + "mlp.fc2.weight": (hidden, inter), p + "mlp.fc2.bias": (hidden,)})
        for n in ("q_proj", "k_proj", "v_proj", "dense"):
            keys[p + f"self_attn.{n}.weight"] = (hidden, hidden)
            keys[p + f"self_attn.{n}.bias"] = (hidden,)
        for n in ("q_layernorm", "k_layernorm"):
            keys[p + f"self_attn.{n}.weight"] = (head_dim,)
            keys[p + f"self_attn.{n}.bias"] = (head_dim,)
    return keys


def test_full_size_state_dict_matches_the_notes():
    assert 50295 + 10 + 8192 + 1 == 58498
    with torch.device("meta"):
        model = Showo(PhiConfig(), 58498)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = notes_key_list()
    assert got == want
    assert expected_state_dict_shapes(PhiConfig(), 58498) == want
    assert len(want) == 24 * 18 + 5   # per layer: LN 2, q/k/v/dense 8, q/k LN 4, fc1/fc2 4
    assert model.mask_token_id == 58497


def test_full_size_magvit_structure():
    with torch.device("meta"):
        vq = MAGVITv2()
    sd = {k: tuple(v.shape) for k, v in vq.state_dict().items()}
    assert sd["quantize.embedding"] == (8192, 13) and sd["quantize.power_vals"] == (13,)
    assert sd["encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert sd["encoder.conv_out.weight"] == (13, 512, 3, 3) and sd["encoder.quant_conv.weight"] == (13, 13, 1, 1)
    assert sd["decoder.post_quant_conv.weight"] == (13, 13, 1, 1) and sd["decoder.conv_in.weight"] == (512, 13, 3, 3)
    assert sd["decoder.conv_out.weight"] == (3, 128, 3, 3)
    enc = [sum(1 for k in sd if k.startswith(f"encoder.down.{i}.block.") and k.endswith("conv1.weight")) for i in range(5)]
    dec = [sum(1 for k in sd if k.startswith(f"decoder.up.{i}.block.") and k.endswith("conv1.weight")) for i in range(5)]
    assert enc == [4, 3, 4, 3, 4] and dec == [4, 4, 3, 4, 3]
    assert [sd[f"encoder.down.{i}.block.0.conv2.weight"][0] for i in range(5)] == [128, 256, 256, 512, 512]
    assert [sd[f"decoder.up.{i}.block.0.conv2.weight"][0] for i in range(5)] == [128, 128, 256, 256, 512]
    assert not any("encoder.down.4.downsample" in k for k in sd) and not any("decoder.up.0.upsample" in k for k in sd)
    assert "encoder.mid.attn_1.proj_out.weight" in sd and "decoder.mid.attn_1.q.weight" in sd


def magvit_reference_keys() -> dict[str, tuple[int, ...]]:
    """Every tensor of the public MAGVIT-v2, derived from the layout of showlab/Show-o's
    models/modeling_magvitv2.py (VQGANEncoder / VQGANDecoder / LFQuantizer under `encoder`, `decoder`,
    `quantize`; `quant_conv` inside the encoder, `post_quant_conv` inside the decoder; empty `attn` lists in
    the levels) and models/common_modules.py (ResnetBlock norm1/conv1/norm2/conv2 + nin_shortcut when the
    width changes, temb_channels 0 so no temb_proj; AttnBlock norm/q/k/v/proj_out; Downsample/Upsample `conv`)."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name, cout, cin, k):
        keys[name + ".weight"], keys[name + ".bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        keys[name + ".weight"], keys[name + ".bias"] = (c,), (c,)

    def resblock(name, cin, cout):
        norm(name + ".norm1", cin)
        conv(name + ".conv1", cout, cin, 3)
        norm(name + ".norm2", cout)
        conv(name + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(name + ".nin_shortcut", cout, cin, 1)

    def mid(name, c):
        resblock(name + ".block_1", c, c)
        norm(name + ".attn_1.norm", c)
        for n in ("q", "k", "v", "proj_out"):
            conv(f"{name}.attn_1.{n}", c, c, 1)
        resblock(name + ".block_2", c, c)

    conv("encoder.conv_in", 128, 3, 3)
    cin = 128
    for i, (mult, n) in enumerate(zip((1, 2, 2, 4, 4), (4, 3, 4, 3, 4))):
        for j in range(n):
            resblock(f"encoder.down.{i}.block.{j}", cin, 128 * mult)
            cin = 128 * mult
        if i < 4:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    mid("encoder.mid", 512)
    norm("encoder.norm_out", 512)
    conv("encoder.conv_out", 13, 512, 3)
    conv("encoder.quant_conv", 13, 13, 1)
    conv("decoder.post_quant_conv", 13, 13, 1)
    conv("decoder.conv_in", 512, 13, 3)
    mid("decoder.mid", 512)
    cin = 512
    for i, mult, n in reversed(list(zip(range(5), (1, 1, 2, 2, 4), (4, 4, 3, 4, 3)))):
        for j in range(n):
            resblock(f"decoder.up.{i}.block.{j}", cin, 128 * mult)
            cin = 128 * mult
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", 128)
    conv("decoder.conv_out", 3, 128, 3)
    keys["quantize.embedding"], keys["quantize.power_vals"] = (8192, 13), (13,)
    return keys


def test_full_size_magvit_keys_match_the_public_layout():
    with torch.device("meta"):
        vq = MAGVITv2()
    sd = vq.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == magvit_reference_keys()
    # The public buffers' dtypes: a float +-1 table and int64 powers of two (2 ** arange).
    assert sd["quantize.embedding"].dtype == torch.float32 and sd["quantize.power_vals"].dtype == torch.int64


def test_lookup_free_quantizer_bit_order():
    vq = MAGVITv2(MagvitConfig(ch=8, num_groups=4, enc_num_res_blocks=(1,) * 5, dec_num_res_blocks=(1,) * 5))
    q = vq.quantize
    z = -torch.ones(1, 13, 1, 2)
    z[0, 0, 0, 0] = 0.5      # channel 0 -> most significant bit
    z[0, 12, 0, 1] = 2.0     # channel 12 -> least significant bit
    assert q.codes(z).tolist() == [[4096, 1]]
    assert q.codes(torch.zeros(1, 13, 1, 1)).tolist() == [[0]]        # 0 is not > 0
    codes = torch.arange(8192)[None]
    assert torch.equal(q.codes(q.lookup(codes, (1, 8192))), codes)
    assert set(q.embedding.unique().tolist()) == {-1.0, 1.0}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return tiny_showo_path(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def backbone(tiny_root):
    b = ShowoBackbone.load(tiny_root / "show-o-512x512", tiny_root / "phi-1_5", tiny_root / "magvitv2")
    b.max_text_len = 24
    return b


def test_tiny_checkpoint_has_the_public_layout(tiny_root, backbone):
    from safetensors import safe_open
    showo = tiny_root / "show-o-512x512"
    assert sorted(p.name for p in showo.iterdir()) == ["config.json", "pytorch_model.safetensors"]
    cfg = json.loads((showo / "config.json").read_text())
    assert cfg["_class_name"] == "Showo" and cfg["w_clip_vit"] is False and cfg["codebook_size"] == 8192
    assert cfg["vocab_size"] == cfg["llm_vocab_size"] + 10 + 8192 + 1 and cfg["mask_token_id"] == cfg["vocab_size"] - 1
    assert cfg["llm_model_path"] == "microsoft/phi-1_5" and cfg["num_vq_tokens"] == 64
    phi = json.loads((tiny_root / "phi-1_5" / "config.json").read_text())
    pc = PhiConfig.from_hf(phi)
    with safe_open(str(showo / "pytorch_model.safetensors"), framework="pt") as f:
        keys = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        some = f.get_tensor("showo.model.layers.1.self_attn.q_layernorm.weight")
    assert keys == notes_key_list(pc.num_hidden_layers, pc.hidden_size, pc.intermediate_size, pc.head_dim,
                                  cfg["vocab_size"])
    # loaded through the same loader a real checkpoint uses, tensors as stored
    assert torch.equal(backbone.model.showo.model.layers[1].self_attn.q_layernorm.weight, some)
    assert (tiny_root / "magvitv2" / "pytorch_model.safetensors").is_file()
    assert backbone.vq.cfg.codebook_size == 8192 and backbone.resolution == 128 and backbone.grid == 8


def test_vocabulary_layout(backbone):
    b = backbone
    lv = b.llm_vocab_size
    names = ["[PAD]", "<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>", "<|lvg|>"]
    assert [b.token_id(n) for n in names] == list(range(lv, lv + 10))
    assert b.pad_id == lv and b.image_offset == lv + 10 and b.mask_id == b.vocab_size - 1
    assert b.image_offset + 8192 == b.mask_id
    assert b.eot_id == b.token_id("<|endoftext|>")


def test_loader_refuses_pickles_and_wrong_keys(tiny_root, tmp_path, backbone):
    import shutil
    bad = tmp_path / "showo"
    bad.mkdir()
    shutil.copy(tiny_root / "show-o-512x512" / "config.json", bad / "config.json")
    (bad / "pytorch_model.bin").write_bytes(b"not a pickle; must never be opened")
    with pytest.raises(UserError, match="never unpickles"):
        ShowoBackbone.load(bad, tiny_root / "phi-1_5", tiny_root / "magvitv2")
    from safetensors.torch import save_file
    sd = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    sd["showo.model.layers.0.self_attn.q_ln.weight"] = sd.pop("showo.model.layers.0.self_attn.q_layernorm.weight")
    save_file(sd, str(bad / "pytorch_model.safetensors"))
    with pytest.raises(UserError, match="missing.*q_layernorm"):
        ShowoBackbone.load(bad, tiny_root / "phi-1_5", tiny_root / "magvitv2")


def test_t2i_mask_is_causal_text_and_bidirectional_image():
    P, T, E, S, I, O = 0, 1, 2, 3, 4, 5   # pad, t2i, eot, soi, image token, eoi
    ids = torch.tensor([[P, P, T, E, 7, E, S, I, I, O]])
    m = t2i_mask(ids, pad_id=P, soi_id=S, eoi_id=O)[0]
    assert m[0].tolist() == [True] + [False] * 9                 # pad row: earlier pads only
    assert m[1].tolist() == [True, True] + [False] * 8
    assert m[4].tolist() == [False, False, True, True, True] + [False] * 5   # text: causal, no pads
    for row in range(6, 10):                                      # <|soi|> .. <|eoi|>: everything but pads
        assert m[row].tolist() == [False, False] + [True] * 8
    add = additive(m[None])
    assert add.shape == (1, 1, 10, 10) and torch.isfinite(add).all() and add[0, 0, 0, 1] < -1e30


def test_mmu_mask_prefix_visible_then_causal():
    M, S, I, O, X = 10, 11, 12, 13, 14
    ids = torch.tensor([[M, S, I, I, O, X, X, X]])
    m = mmu_mask(ids, eoi_id=O)[0]
    for row in range(8):
        assert m[row, :5].all()                                   # the image prefix is fully visible
    assert m[5].tolist() == [True] * 6 + [False] * 2
    assert m[1, 4] and not m[4, 5]


def test_maskgit_cosine_schedule():
    unknown = torch.tensor([[1024]])
    assert int(mask_lengths(1024, 0, 50, unknown)) == math.floor(1024 * math.cos(math.pi / 100)) == 1023
    assert int(mask_lengths(1024, 34, 50, torch.tensor([[600]]))) == math.floor(1024 * math.cos(0.35 * math.pi))
    assert int(mask_lengths(1024, 49, 50, torch.tensor([[5]]))) == 1                 # never below one
    assert int(mask_lengths(1024, 10, 50, torch.tensor([[3]]))) == 2                  # at most unknown - 1
    assert 0.45 < math.cos(0.35 * math.pi) < 0.46


def test_maskgit_generation(backbone):
    b = backbone
    prompt = b.t2i_prompt(b.encode_text("A photo of a dog."))
    assert len(prompt) == b.max_text_len + 1 and prompt[-1] == b.eot_id
    codes, rec = b.generate_images(prompt, 2, torch.Generator().manual_seed(3), steps=6, guidance=5.0,
                                   batch_size=2, record_steps=(1, 3, 5))
    assert codes.shape == (2, 64) and codes.min() >= 0 and codes.max() < 8192
    assert torch.equal(rec[5], codes)
    again = b.generate_images(prompt, 2, torch.Generator().manual_seed(3), steps=6, guidance=5.0, batch_size=2)
    assert torch.equal(codes, again)
    other = b.generate_images(prompt, 2, torch.Generator().manual_seed(4), steps=6, guidance=5.0, batch_size=2)
    assert not torch.equal(codes, other)
    images = b.decode_images(codes)
    assert len(images) == 2 and images[0].size == (128, 128) and images[0].mode == "RGB"
    assert b.encode_images(images).shape == (2, 64)


def test_kv_cache_decoding_equals_full_recomputation(backbone):
    b = backbone
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        codes = torch.randint(0, 8192, (64,), generator=gen)
        ids = b.mmu_prefix(codes) + b.encode_text("USER: Is this a dog? ASSISTANT:")
        cached = b.generate_text(ids, max_new_tokens=12, use_cache=True)
        full = b.generate_text(ids, max_new_tokens=12, use_cache=False)
        assert cached == full and len(cached) > 0
    # and the hidden states agree step by step
    seq = torch.tensor([ids + cached[:3]])
    full_h, _ = b.forward_hidden(seq, b.mmu_mask(seq))
    h, past = b.forward_hidden(seq[:, :len(ids)], b.mmu_mask(seq[:, :len(ids)]), use_cache=True)
    for k in range(3):
        h, past = b.forward_hidden(seq[:, len(ids) + k:len(ids) + k + 1], past_key_values=past, use_cache=True)
        torch.testing.assert_close(h[0, -1], full_h[0, len(ids) + k], atol=1e-5, rtol=1e-4)


def test_reserved_ids_are_empty_until_attached(backbone):
    from unifybench.models.concept_tokens import ConceptTokens, attach, detach
    b = backbone
    ids = b.reserve_tokens(3)
    assert ids[0] == b.vocab_size
    x = torch.tensor([[5, ids[1]]])
    emb = b.input_embeddings()(x)
    assert torch.equal(emb[0, 1], torch.zeros(b.hidden_size))
    h, _ = b.forward_hidden(x)
    logits = b.logits(h)
    assert logits.shape[-1] == b.vocab_size + 3 and torch.isinf(logits[..., ids]).all()
    tokens = ConceptTokens(ids, torch.randn(3, b.hidden_size), ids, torch.randn(3, b.hidden_size), torch.zeros(3))
    attach(b, tokens)
    try:
        assert torch.equal(b.input_embeddings()(x)[0, 1], tokens.embed[1].detach())
        assert torch.isfinite(b.logits(b.forward_hidden(x)[0])).all()
    finally:
        detach(b)
        b.reserve_tokens(0)


def test_chat_ids_is_the_mmu_question_format(backbone):
    from PIL import Image
    vocab = backbone.tokenizer.get_vocab()
    tok = lambda t: backbone.tokenizer.encode(t, add_special_tokens=False)  # noqa: E731
    im = Image.new("RGB", (40, 30), (200, 30, 30))
    codes = backbone.encode_images([im])[0].tolist()
    prefix = [backbone.vocab_size, backbone.vocab_size + 1]   # two concept-token ids
    got = backbone.chat_ids(prefix, [im, "\nIs it red?"])
    image = [c + backbone.llm_vocab_size + 10 for c in codes]
    assert got == ([vocab["<|mmu|>"], vocab["<|soi|>"]] + image + [vocab["<|eoi|>"], vocab["<|endoftext|>"]]
                   + tok("USER: ") + prefix + tok("Is it red?") + tok(" ASSISTANT:"))
    # no prefix: one string, as Show-o and UniCTokens tokenize 'USER: ' + question + ' ASSISTANT:'
    assert backbone.chat_ids(None, ["Is it red?"]) == [vocab["<|endoftext|>"]] + tok("USER: Is it red? ASSISTANT:")
    pieces = backbone.tokenizer.convert_ids_to_tokens(backbone.chat_ids(None, ["Is it red?"])[1:4])
    assert pieces == ["USER", ":", "ĠIs"]                       # no lone space token before the question
    with pytest.raises(UserError, match="one image"):
        backbone.chat_ids(None, [im, im, "two?"])


@pytest.mark.parametrize("steps", [3, 6, 18])
def test_maskgit_schedule_is_float32_like_the_reference(steps):
    """models/sampling.py cosine_schedule on torch.tensor(ratio) (float32): at ratio 2/3 it re-masks 511 of 1024
    (cos = 0.49999997), where float64 gives 512; numpy float32 recomputes the reference's number on its own."""
    import numpy as np
    step = steps * 2 // 3 - 1                                          # (step + 1) / steps == 2/3
    ref32 = int(np.floor(np.float32(1024) * np.cos(np.float32((step + 1) / steps) * np.float32(math.pi * 0.5))))
    assert ref32 == 511 and math.floor(1024 * math.cos(math.pi / 2 * (step + 1) / steps)) == 512
    assert int(mask_lengths(1024, step, steps, torch.tensor([[1024]]))) == 511
    for s in range(steps):                                             # every step of the schedule agrees
        r = np.float32((s + 1) / steps)
        want = int(np.floor(np.float32(1024) * np.cos(r * np.float32(math.pi * 0.5))))
        assert int(mask_lengths(1024, s, steps, torch.tensor([[2000]]))) == max(1, want)


def test_maskgit_images_do_not_depend_on_batch_size_or_the_prompts_beside_them(backbone):
    b = backbone
    prompts = [b.t2i_prompt(b.encode_text(t)) for t in ("A photo of a dog.", "A red cup on a table.")]
    rows = [p for p in prompts for _ in range(2)]

    def streams():
        return [torch.Generator().manual_seed(30 + r) for r in range(len(rows))]

    alone = torch.cat([b.generate_image_rows([p], [g], steps=4, batch_size=1) for p, g in zip(rows, streams())])
    assert torch.equal(b.generate_image_rows(rows, streams(), steps=4, batch_size=4), alone)
    assert torch.equal(b.generate_image_rows(rows, streams(), steps=4, batch_size=3), alone)
    assert len({tuple(r) for r in alone.tolist()}) == len(rows)
    one, rec = b.generate_images(prompts[0], 3, torch.Generator().manual_seed(5), steps=4, batch_size=1,
                                 record_steps=(1,))
    three, rec3 = b.generate_images(prompts[0], 3, torch.Generator().manual_seed(5), steps=4, batch_size=3,
                                    record_steps=(1,))
    assert torch.equal(one, three) and torch.equal(rec[1], rec3[1])
