"""The LLaVA backbone on the tiny random LLaVA: loading, new tokens, images, decoding, the protocol."""
import pytest
import torch
from PIL import Image

from unifybench.errors import UserError
from unifybench.models.concept_tokens import ConceptTokens, attach, detach
from unifybench.models.llava.backbone import LlavaBackbone
from unifybench.models.llava.tiny import tiny_llava_path

NEW = ["<sks>"] + [f"<token{i}>" for i in range(4)]


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tiny_llava_path(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def backbone(path):
    return LlavaBackbone.load(path, new_tokens=NEW, seed=0)


def test_tiny_checkpoint_is_a_real_llava_folder(path):
    import json
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "llava" and cfg["text_config"]["model_type"] == "llama"
    assert cfg["vision_config"]["model_type"] == "clip_vision_model"
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert tiny_llava_path(path.parent.parent) == path          # built once, reused


def test_new_tokens_resize_once_and_keep_base_rows(path, backbone):
    from safetensors import safe_open
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        emb = f.get_tensor(next(k for k in keys if k.endswith("embed_tokens.weight")))
        head = f.get_tensor(next(k for k in keys if k.endswith("lm_head.weight")))
    n = emb.shape[0]
    ids = [backbone.token_id(t) for t in NEW]
    assert ids == list(range(n, n + len(NEW)))
    assert backbone.input_embeddings().weight.shape[0] == n + len(NEW) == backbone.output_head().weight.shape[0]
    assert torch.equal(backbone.input_embeddings().weight[:n], emb)
    assert torch.equal(backbone.output_head().weight[:n], head)
    assert backbone.add_tokens(NEW) == ids                 # same names: a no-op
    with pytest.raises(UserError):
        backbone.add_tokens(["<other>"])                   # only once per load
    again = LlavaBackbone.load(path, new_tokens=NEW, seed=0)
    assert torch.equal(again.input_embeddings().weight, backbone.input_embeddings().weight)  # seeded init
    # new tokens are single tokens inside text
    assert backbone.encode_text("<sks> is <token0><token1>.")[0] == ids[0]
    assert ids[1] in backbone.encode_text("<sks> is <token0><token1>.")


def test_prompt_expands_the_image_and_forward_uses_pixels(backbone):
    ids = backbone.prompt_ids("Is <sks> in this photo?", n_images=1)
    assert ids[0] == backbone.bos_id and ids.count(backbone.image_token_id) == backbone.image_seq_length == 16
    red = backbone.pixel_values([Image.new("RGB", (40, 30), (220, 10, 10))])
    blue = backbone.pixel_values([Image.new("RGB", (40, 30), (10, 10, 220))])
    x = torch.tensor([ids])
    with torch.no_grad():
        h_red, _ = backbone.forward_hidden(x, pixel_values=red)
        h_blue, _ = backbone.forward_hidden(x, pixel_values=blue)
    assert h_red.shape == (1, len(ids), backbone.hidden_size)
    assert not torch.allclose(h_red[:, -1], h_blue[:, -1])      # the image reaches the answer position
    text_only = backbone.prompt_ids("Describe <sks>.", n_images=0)
    assert backbone.image_token_id not in text_only


def test_greedy_generation_matches_full_forward(backbone):
    ids = torch.tensor([backbone.prompt_ids("What color is it?", n_images=1)])
    px = backbone.pixel_values([Image.new("RGB", (32, 32), (0, 200, 0))])
    out = backbone.generate_text(ids, max_new_tokens=5, pixel_values=px)
    assert 0 < len(out) <= 5 and backbone.image_token_id not in out
    assert out == backbone.generate_text(ids, max_new_tokens=5, pixel_values=px)
    with torch.no_grad():  # the first token equals the argmax of an uncached full forward
        h, _ = backbone.forward_hidden(ids, pixel_values=px)
        scores = backbone.logits(h[:, -1])
        scores[:, backbone.image_token_id] = float("-inf")
    assert out[0] == int(scores.argmax(-1))


def test_concept_tokens_splice_into_llava(backbone):
    ids = [backbone.token_id(t) for t in NEW]
    tokens = ConceptTokens.from_base(backbone.input_embeddings(), backbone.output_head(), ids, ids[:1])
    x = torch.tensor([backbone.prompt_ids("<sks> is <token0>. Hi", n_images=0)])
    with torch.no_grad():
        base = backbone.logits(backbone.forward_hidden(x)[0])
        attach(backbone, tokens)
        same = backbone.logits(backbone.forward_hidden(x)[0])
        tokens.embed.data += 1.0
        moved = backbone.logits(backbone.forward_hidden(x)[0])
        detach(backbone)
    torch.testing.assert_close(base, same)
    assert not torch.allclose(base, moved)


def test_phi_variant_and_bad_folder(tmp_path):
    phi = tiny_llava_path(tmp_path / "c", "phi")
    b = LlavaBackbone.load(phi, new_tokens=["<sks>"])
    assert b.model.config.text_config.model_type == "phi"
    ids = torch.tensor([b.prompt_ids("Hi <sks>", n_images=0)])
    assert len(b.generate_text(ids, max_new_tokens=2)) <= 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "chameleon"}')
    with pytest.raises(UserError, match="expected 'llava'"):
        LlavaBackbone.load(tmp_path / "bad")
    with pytest.raises(UserError, match="not found locally"):
        LlavaBackbone.load(tmp_path / "missing")
