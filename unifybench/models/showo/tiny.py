"""A tiny, randomly initialised Show-o + MAGVIT-v2 + Phi tokenizer in the public folder layouts.

`tiny_showo_path(cache_dir)` builds once (atomically) `<cache_dir>/<VERSION>/` with three folders shaped like
the hub repositories, written by the same classes that load the real ones:

    show-o-512x512/  config.json (the public fields) + pytorch_model.safetensors (`showo.*` keys)
    phi-1_5/         config.json (HF Phi fields, tiny sizes) + tokenizer files (a byte-level BPE with
                     <|endoftext|>, trained deterministically with the `tokenizers` library)
    magvitv2/        config.json + pytorch_model.safetensors (13-bit LFQ: 8192 codes, as the real one)

Geometry: Phi hidden 64, 2 layers, 4 heads (head_dim 16, rotary 8), MAGVIT with 5 levels (x16) at 128 px,
so an image is an 8x8 grid of 64 tokens; the vocabulary layout is the real one (text, [PAD] + 9 specials,
8192 image codes, mask).

**Steered to text**, so that a newcomer can tell a working text path from a broken one: the random head
ranks one of the 8192 image codes (or end of text, a special, a blank) first for almost every answer, and
the decoder keeps text ids only, so tiny answers came out empty, which looks exactly like a broken
pipeline. The builder sets the head's bias, saved with the seeded weights: the readable text tokens keep
their random one (within +-0.125), every other id gets `NON_TEXT_BIAS` (end of text, blank or partial-character text, [PAD] and the
specials, the image codes, the mask); end of text, blanks and specials also get a zero weight row. The
concept rows UniCTokens adds start from image-code rows (the released code's rule), so they start there
too and a few tiny training steps cannot lift them above the text: every tiny answer is visible random
words. MaskGIT samples among the image codes only, where one common bias changes nothing; the T2I loss
(cross-entropy over the whole vocabulary) reads about `-NON_TEXT_BIAS` higher: the tiny numbers test the
pipeline, not a method.
"""
from __future__ import annotations

import json
from pathlib import Path

from unifybench.models.tiny_cache import build_once, no_early_stop, tiny_root, unreadable_text_ids

import torch
from safetensors.torch import save_file

VERSION = "showo-v4"   # v2: MAGVIT power_vals stored as int64, as in the public file; v4: steered to text
SEED = 0
GRID = 8
CODEBOOK = 8192
NON_TEXT_BIAS = -20.0   # head bias of every id but readable text (random logits here are within about +-2)

_TEXT = """\
A photo of a dog sitting on the grass in the park. A photo of a cat sleeping on a sofa.
USER: Is this a photo of my dog? ASSISTANT: Yes, this is your dog. No, this is not your cat.
Can you describe the person in this image? Answer in detail. The person is smiling and wearing a red hat.
What color is the toy? The toy is yellow with blue stripes. Where is the teddy bear? It is on the bed.
Describe the object in the picture. It is a small backpack with a zipper, a pocket and colorful pins.
The quick brown fox jumps over the lazy dog. A man is riding a bicycle down the street at sunset.
A woman holds a cup of coffee near the window. Two children play with a ball on the beach.
Is there a car in the image? There is a white car parked next to a tree. How many people are there?
in the jungle, in the snow, on the beach, on a cobblestone street, on top of pink fabric, wooden floor.
"""


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TEXT.splitlines(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def _build(out: Path) -> None:
    from unifybench.models.local import quiet_transformers
    from unifybench.models.showo.magvit2 import MAGVITv2, MagvitConfig
    from unifybench.models.showo.backbone import NUM_NEW_SPECIAL, PhiConfig, Showo

    tokenizer = _build_tokenizer()
    llm_vocab = len(tokenizer)
    vocab_size = llm_vocab + NUM_NEW_SPECIAL + CODEBOOK + 1
    phi = PhiConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=512)
    vqcfg = MagvitConfig(ch=8, enc_num_res_blocks=(1, 1, 1, 1, 1), dec_num_res_blocks=(1, 1, 1, 1, 1), num_groups=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Showo(phi, vocab_size)
        vq = MAGVITv2(vqcfg)
    from unifybench.models.showo.backbone import EOT
    head = model.showo.lm_head
    never = [tokenizer.convert_tokens_to_ids(EOT), *unreadable_text_ids(tokenizer), *range(llm_vocab, vocab_size)]
    no_early_stop(head, never[:-(CODEBOOK + 1)])     # stops, blanks and specials: zero rows (image codes keep theirs)
    with torch.no_grad():
        head.bias[torch.tensor(never)] = NON_TEXT_BIAS   # answers are text (see the module docstring)

    showo_dir, phi_dir, vq_dir = out / "show-o-512x512", out / "phi-1_5", out / "magvitv2"
    for d in (showo_dir, phi_dir, vq_dir):
        d.mkdir(parents=True)
    (showo_dir / "config.json").write_text(json.dumps({
        "_class_name": "Showo", "_diffusers_version": "0.30.1", "codebook_size": CODEBOOK,
        "llm_model_path": "microsoft/phi-1_5", "llm_vocab_size": llm_vocab, "load_from_showo": True,
        "mask_token_id": vocab_size - 1, "num_vq_tokens": GRID * GRID, "vocab_size": vocab_size,
        "w_clip_vit": False}, indent=2, sort_keys=True))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(showo_dir / "pytorch_model.safetensors"), metadata={"format": "pt"})
    (phi_dir / "config.json").write_text(json.dumps({
        "architectures": ["PhiForCausalLM"], "model_type": "phi", "hidden_size": phi.hidden_size,
        "intermediate_size": phi.intermediate_size, "num_hidden_layers": phi.num_hidden_layers,
        "num_attention_heads": phi.num_attention_heads, "num_key_value_heads": phi.num_attention_heads,
        "layer_norm_eps": phi.layer_norm_eps, "partial_rotary_factor": phi.partial_rotary_factor,
        "rope_theta": phi.rope_theta, "max_position_embeddings": phi.max_position_embeddings,
        "hidden_act": "gelu_new", "qk_layernorm": False, "tie_word_embeddings": False,
        "vocab_size": 51200, "bos_token_id": 0, "eos_token_id": 0}, indent=2, sort_keys=True))
    with quiet_transformers():
        tokenizer.save_pretrained(str(phi_dir))
    vq.save(vq_dir)


def tiny_showo_path(cache_dir: Path | None = None) -> Path:
    """`<cache_dir or ~/.cache/unifybench>/tiny/<VERSION>`, built once; holds the three folders."""
    root = tiny_root(cache_dir)
    return build_once(root / VERSION, _build)


def load_tiny_showo(cache_dir: Path | None = None, device="cpu", dtype=torch.float32):
    from unifybench.models.showo.backbone import ShowoBackbone
    root = tiny_showo_path(cache_dir)
    return ShowoBackbone.load(root / "show-o-512x512", root / "phi-1_5", root / "magvitv2", device=device, dtype=dtype)
