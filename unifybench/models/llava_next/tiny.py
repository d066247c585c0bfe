"""A tiny, randomly initialised LLaVA-NeXT checkpoint for CPU tests, built locally and deterministically.

A real `LlavaNextForConditionalGeneration` (tiny CLIP vision tower, the projector, `image_newline`, a tiny
Llama) and a real `LlavaNextProcessor` (`LlavaNextImageProcessor` with anyres `image_grid_pinpoints`, the
tiny Llama-style tokenizer of the tiny LLaVA), saved with `save_pretrained` as safetensors in the hub layout
of `llava-hf/llava-v1.6-vicuna-13b-hf`, so tests go through the same `from_pretrained` path.
"""
from __future__ import annotations

from pathlib import Path

import torch

from unifybench.models.local import quiet_transformers
from unifybench.models.llava.tiny import _build_tokenizer   # the same tiny Llama tokenizer as the tiny LLaVA
from unifybench.models.tiny_cache import build_once, tiny_root

VERSION = "llava-next-v1"      # bump when the recipe changes
IMAGE_SIZE = 32
PATCH_SIZE = 8                 # 4x4 patches per tile
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]
SEED = 0


def _build(out: Path) -> None:
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor)

    tokenizer = _build_tokenizer()
    vocab = tokenizer.get_vocab()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                       bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"])
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                             image_grid_pinpoints=PINPOINTS, vision_feature_select_strategy="default",
                             vision_feature_layer=-2, image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    config.pad_token_id = vocab["<pad>"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              image_grid_pinpoints=PINPOINTS, do_pad=True)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    with quiet_transformers():
        model.save_pretrained(out)
        processor.save_pretrained(out)


def tiny_llava_next_path(cache_dir: Path | None = None) -> Path:
    """Directory of the tiny checkpoint, `<cache_dir or ~/.cache/unifybench>/tiny/llava-next-v1`, built once
    (imported by `unifybench.models.weights` only)."""
    return build_once(tiny_root(cache_dir) / VERSION, _build)
