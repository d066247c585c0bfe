"""A tiny, randomly initialised Qwen2.5-VL checkpoint for CPU tests, built locally and deterministically.

A real `Qwen2_5_VLForConditionalGeneration` (a 2-block vision tower, one windowed and one full-attention block
as in the real `fullatt_block_indexes`, the 2x2 patch merger, and a 2-layer M-RoPE text model with tied
embeddings like the 3B), saved with `save_pretrained` in the hub layout of `Qwen/Qwen2.5-VL-3B-Instruct`:
config.json, model.safetensors, generation_config.json, preprocessor_config.json (a real
`Qwen2VLImageProcessor`: 14 px patches, 2x2 merge, with small min/max pixels so an image becomes 4-9
tokens), the tokenizer files, and a chat template in Qwen's format. The tokenizer is the real
`Qwen2Tokenizer` (byte-level BPE, Qwen's pre-tokenizer regex) over merges trained with the `tokenizers`
library on a small text; the special tokens follow the BPE vocabulary in Qwen's order: `<|endoftext|>`
(pad), `<|im_start|>`, `<|im_end|>` (eos), `<|vision_start|>`, `<|vision_end|>`, `<|image_pad|>`,
`<|video_pad|>`. Tests therefore exercise the exact loading and prompting path of the real checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import torch

from unifybench.models.local import quiet_transformers
from unifybench.models.tiny_cache import build_once, tiny_root

VERSION = "qwen2.5-vl-v1"     # bump when the recipe changes, so stale caches are not reused
SEED = 0
PATCH_SIZE = 14               # the real vision tower's patch, merge and temporal sizes
MERGE_SIZE = 2
MIN_PIXELS = 56 * 56          # >= 2x2 merged tokens ... (real: 3136 .. 12845056)
MAX_PIXELS = 84 * 84          # ... <= 3x3 merged tokens per image
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]

# Qwen2.5-VL's conversation format: `<|im_start|>role\n...<|im_end|>\n` per turn, a default system turn
# when the conversation has none, each image as `<|vision_start|><|image_pad|><|vision_end|>` in place.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_TEXT = """\
You are a helpful assistant. Is this a photo of the dog? Yes, it is the dog. No, it is not the cat.
Can you see it in this image? Yes, I can see it here. No, I cannot see it in the picture.
Describe the main subject of this photo in detail: its kind, colors, shape and distinctive features.
Here are descriptions of several photos of the same subject. Summarize what it looks like in one short
paragraph of at most 100 words. Describe only the subject, not the backgrounds.
The subject is a small brown teddy bear with a red bow, sitting on a wooden table next to a window.
What color is the toy? The toy is yellow with blue stripes. Where is the backpack? It is on the bed.
The person is smiling and wearing a red hat and glasses. The cat is grey and white with green eyes.
Which option is correct? Answer with the option's letter from the given choices directly. A. B. C. D.
Answer the question using a single word or phrase. What is the name of the dog? It likes to play.
"""


def _build_tokenizer():
    import json

    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=640, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_TEXT.splitlines(), trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    # `<|endoftext|>` is registered first (the pad/unk-free Qwen setup), then the chat and vision tokens.
    tok = Qwen2Tokenizer(vocab=trained["vocab"], merges=merges, unk_token=None, bos_token=None,
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS[1:]], special_tokens=True)
    tok.eos_token = "<|im_end|>"            # Qwen2.5-VL-*-Instruct: eos <|im_end|>, pad <|endoftext|>
    ids = tok.convert_tokens_to_ids(SPECIALS)
    base = len(trained["vocab"])
    if ids != list(range(base, base + len(SPECIALS))):
        raise RuntimeError(f"tiny Qwen tokenizer: special tokens got ids {ids}, expected {base}..")
    return tok


def _build(out: Path) -> None:
    from transformers import (GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2VLImageProcessor)

    tokenizer = _build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = dict(zip(SPECIALS, tokenizer.convert_tokens_to_ids(SPECIALS)))
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3,
                  patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE, temporal_patch_size=2, window_size=112,
                  out_hidden_size=64, fullatt_block_indexes=[1], initializer_range=0.1)
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                # head_dim 16: M-RoPE sections (temporal, height, width) over its 8 rotary frequencies
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0},
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], initializer_range=0.1)
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):  # fixed weights without disturbing the caller's RNG
        torch.manual_seed(SEED)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # the hub file's stops; its sampling settings are left out (the backbone decodes greedily anyway)
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
                                               eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]])
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH_SIZE,
                                            merge_size=MERGE_SIZE, temporal_patch_size=2)
    with quiet_transformers():
        model.save_pretrained(out)
        image_processor.save_pretrained(out)      # preprocessor_config.json, as on the hub
        tokenizer.save_pretrained(out)            # tokenizer.json, tokenizer_config.json, chat template


def tiny_qwen_vl_path(cache_dir: Path | None = None) -> Path:
    """Directory of the tiny checkpoint, `<cache_dir or ~/.cache/unifybench>/tiny/qwen2.5-vl-v1`, built once."""
    root = tiny_root(cache_dir)
    return build_once(root / VERSION, _build)
