"""A tiny, randomly initialised LLaVA checkpoint for CPU tests, built locally and deterministically.

A real `LlavaForConditionalGeneration` (a tiny CLIP vision tower, the 2-layer MLP projector and a tiny Llama,
or a tiny Phi for the Phi-1.5-sized variant) saved with `save_pretrained`, and a real `LlavaProcessor` whose
tokenizer is built with the `tokenizers` library the way Llama's behaves (SentencePiece-style "▁" word
boundaries, `<s>` prepended): tests exercise the exact loading path of `llava-hf/llava-1.5-13b-hf`.
Ids: 0-3 `<unk> <s> </s> <pad>`, 4 `<image>`, then BPE text tokens. The concept tokens are *not* in the
vocabulary: LLaVA has no reserved rows, so `LlavaBackbone.load(..., new_tokens=...)` adds them.

**Steered to text** (`tiny_cache.no_early_stop`), so that a newcomer can tell a working text path from a
broken one: the head rows of the specials (`</s>` above all) and of the text tokens that decode to nothing
readable are zero in the saved weights, so their logit is exactly 0 while some of the hundreds of random
text logits are always positive: greedy answers never end at once and are visible words. (The concept rows
are added at load with a seeded mean + std draw over the base rows, per column, so no builder-side bias
could keep them down; a trained identifier may appear in tiny answers, decoded as its name `<sks>`.)
"""
from __future__ import annotations

from pathlib import Path

from unifybench.models.tiny_cache import build_once, no_early_stop, tiny_root, unreadable_text_ids

import torch

from unifybench.models.local import quiet_transformers

VERSION = "llava-v3"          # bump when the recipe changes; v3: no specials, no unreadable text
PHI_VERSION = "llava-phi-v3"  # the same with a Phi language model (UniCTokens' Yo'LLaVA(Phi-1.5) row)
IMAGE_SIZE = 32
PATCH_SIZE = 8                # 4x4 = 16 patches (+ CLS, dropped by the "default" feature strategy)
SEED = 0

_TEXT = """\
A photo of a dog sitting on the grass in the park. A photo of a cat sleeping on a sofa.
Is this a photo of my dog? Yes, this is your dog. No, this is not your cat. Is it in this photo?
Can you see it in this image? Yes, I can see it here. No, I cannot see it here. Does this picture show it?
Can you describe the person in this image? Answer in detail. The person is smiling and wearing a red hat.
What color is the toy? The toy is yellow with blue stripes. Where is the teddy bear? It is on the bed.
Describe the object in the picture. It is a small ceramic mug with a handle and a painted flower.
A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful,
detailed, and polite answers to the human's questions. USER: ASSISTANT: Answer with a single word.
Summarize the descriptions below into one short paragraph. Here are photos of the subject.
Which option is correct, A or B? The answer is A. The backpack is red. The bear is brown and soft.
"""


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    alphabet = sorted(set(_TEXT.replace("\n", " ").replace(" ", "▁")) | set("0123456789?!.,'\"-:;()<>/_\n"))
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=alphabet)
    tok.train_from_iterator(_TEXT.splitlines(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})


def _build(out: Path, text_model: str) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, \
        LlavaProcessor

    tokenizer = _build_tokenizer()
    vocab = tokenizer.get_vocab()
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    common = dict(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                  bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"])
    if text_model == "phi":
        from transformers import PhiConfig
        text = PhiConfig(**common, partial_rotary_factor=0.5)
    else:
        from transformers import LlamaConfig
        text = LlamaConfig(**common)
    n_image_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                         image_seq_length=n_image_tokens, vision_feature_select_strategy="default",
                         vision_feature_layer=-2)
    config.pad_token_id = vocab["<pad>"]
    with torch.random.fork_rng(devices=[]):  # fixed weights without disturbing the caller's RNG
        torch.manual_seed(SEED)
        model = LlavaForConditionalGeneration(config).eval()
    specials = [vocab[t] for t in ("<unk>", "<s>", "</s>", "<pad>", "<image>")]
    no_early_stop(model.lm_head, specials + unreadable_text_ids(tokenizer, max(specials) + 1))   # visible words
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    with quiet_transformers():
        model.save_pretrained(out)
        processor.save_pretrained(out)


def tiny_llava_path(cache_dir: Path | None = None, text_model: str = "llama") -> Path:
    """Directory of the tiny checkpoint, `<cache_dir or ~/.cache/unifybench>/tiny/<VERSION>`, built once.

    `text_model="phi"` gives the Phi-language-model variant (`<PHI_VERSION>`)."""
    if text_model not in ("llama", "phi"):
        raise ValueError(f"text_model must be 'llama' or 'phi', not {text_model!r}")
    version = VERSION if text_model == "llama" else PHI_VERSION
    root = tiny_root(cache_dir)
    return build_once(root / version, lambda tmp: _build(tmp, text_model))
