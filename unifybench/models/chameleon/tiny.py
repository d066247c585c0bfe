"""A tiny, randomly initialised Chameleon/Anole checkpoint for CPU tests, built locally and deterministically.

It is a real `ChameleonForConditionalGeneration` saved with `save_pretrained`, a real `ChameleonProcessor`,
and a VQGAN decoder written into the same safetensors file under the key names an Anole checkpoint uses,
so tests exercise the exact loading path of `leloy/Anole-7b-v0.1-hf`. The layout mirrors the real
vocabulary on a small scale: ids 0-3 `<s> <pad> </s> <unk>`, then the image codes `IMGIMG...Z`, then
`<eoss>` (end of image) and `<racm3:break>` (begin of image), `<reserved08706>` (end of turn), `<image>`,
the concept slots `<reserved16200>`..`<reserved16299>`, then byte-level BPE text tokens.

**Steered to text** (`steer_to_text`), so that a newcomer can tell a working text path from a broken one: a
random head ranks end-of-turn, a concept slot or a blank first often enough that tiny answers come out empty
(the method drops its concept tokens before decoding), which looks exactly like a broken pipeline. Chameleon's
head has no bias, so the builder makes one, seeded and saved with the weights: residual feature 0 holds the
constant `BIAS_FEATURE` for every token (the embedding column), the layers neither read it (their input
norms' weight 0 there) nor write it (row 0 of `o_proj` and `down_proj` is 0), so after the final norm it is
a positive constant-sign input to the head, and column 0 of the head is its bias: 0 for the readable BPE text
tokens, `NON_TEXT_BIAS` for every other row (end of turn, `</s>`, specials, image codes, the concept slots,
blank or partial-character text). The concept rows a method trains start from those rows, so a few tiny
training steps cannot lift them above the text: every tiny answer is visible random words (and the training
loss on concept-token targets reads high: the tiny numbers test the pipeline, not a method). Image
generation samples among image codes only, where a common bias changes nothing. A full fine-tune
(`chameleon-full-ft`) trains the layers too and may overwrite feature 0: its tiny answers are what it learned.
"""
from __future__ import annotations

from pathlib import Path

from unifybench.models.tiny_cache import build_once, tiny_root, unreadable_text_ids

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unifybench.models.local import quiet_transformers
from unifybench.models.chameleon.vqgan import VQGANDecoder

VERSION = "chameleon-v4"  # bump when the recipe changes; v4: steered to readable text (steer_to_text)
NUM_CODES = 512
RESOLUTION = 128  # 3 VQ levels -> 2 downsamplings -> a 32x32 latent grid = 1024 tokens, as in the real model
# bench/scale.py's rehearsal geometry may ask for a smaller grid (`resolution` 32: 8x8 = 64 tokens): the same
# architecture and recipe, so the suite's own stages run at real item counts while the model's work shrinks.
SEED = 0
BIAS_FEATURE = 0.1     # the constant residual feature 0 (the embedding std is 0.02: it dominates the final norm)
NON_TEXT_BIAS = -25.0  # head weight on it of every row but readable text: a logit near -100

# Fixed training text for the tiny BPE (any text works; this keeps benchmark-like prompts short in tokens).
_TEXT = """\
A photo of a dog sitting on the grass in the park. A photo of a cat sleeping on a sofa.
Is this a photo of my dog? Yes, this is your dog. No, this is not your cat.
Can you describe the person in this image? Answer in detail. The person is smiling and wearing a red hat.
What color is the toy? The toy is yellow with blue stripes. Where is the teddy bear? It is on the bed.
Describe the object in the picture. It is a small ceramic mug with a handle and a painted flower.
The quick brown fox jumps over the lazy dog. A man is riding a bicycle down the street at sunset.
A woman holds a cup of coffee near the window. Two children play with a ball on the beach.
Is there a car in the image? There is a white car parked next to a tree. How many people are there?
There are three people standing in front of the building. The sky is blue and the water is calm.
Please answer the question with a single word. Which option is correct, A or B? The answer is A.
"""


def _image_code_name(code: int) -> str:
    # Chameleon spells image code i as "IMGIMG" + its decimal digits mapped 0->A .. 9->J + "Z".
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def special_tokens() -> list[str]:
    return (["<s>", "<pad>", "</s>", "<unk>"]
            + [_image_code_name(i) for i in range(NUM_CODES)]
            + ["<eoss>", "<racm3:break>", "<reserved08706>", "<image>"]
            + [f"<reserved{n:05d}>" for n in range(16200, 16300)])


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=special_tokens(), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TEXT.splitlines(), trainer)  # special tokens get ids 0.. in the order above
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", sep_token="<reserved08706>")


def _build(out: Path, resolution: int = RESOLUTION) -> None:
    from transformers import (ChameleonConfig, ChameleonForConditionalGeneration, ChameleonImageProcessor,
                              ChameleonProcessor)

    tokenizer = _build_tokenizer()
    vocab = tokenizer.get_vocab()
    vq = dict(embed_dim=32, num_embeddings=NUM_CODES, latent_channels=32, resolution=resolution, in_channels=3,
              out_channels=3, base_channels=32, channel_multiplier=[1, 2, 2], num_res_blocks=1,
              attn_resolutions=[resolution // 4], attn_type="vanilla", dropout=0.0)
    config = ChameleonConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=2048, bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"], vq_config=vq, vocabulary_map=dict(sorted(vocab.items(), key=lambda kv: kv[1])))

    with torch.random.fork_rng(devices=[]):  # fixed weights without disturbing the caller's RNG
        torch.manual_seed(SEED)
        model = ChameleonForConditionalGeneration(config).eval()
        decoder = VQGANDecoder(config.vq_config)
    first_text = vocab["<reserved16299>"] + 1          # the BPE text tokens follow the special ones
    unreadable = set(unreadable_text_ids(tokenizer, first_text))
    steer_to_text(model, [i for i in range(first_text, len(vocab)) if i not in unreadable])
    image_processor = ChameleonImageProcessor(size={"shortest_edge": resolution},
                                              crop_size={"height": resolution, "width": resolution})
    processor = ChameleonProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   image_seq_length=(resolution // 4) ** 2)
    with quiet_transformers():
        model.save_pretrained(out)
        processor.save_pretrained(out)

    # Add the decoder beside the encoder, under the prefix transformers gives the VQ model (as Anole does).
    weights = out / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    prefix = VQGANDecoder.checkpoint_prefix(tensors)
    tensors.update({prefix + "decoder." + k: v.contiguous() for k, v in decoder.decoder.state_dict().items()})
    save_file(tensors, str(weights), metadata=metadata)


def steer_to_text(model, text_ids: list[int]) -> None:
    """Give the head a bias through residual feature 0 (see the module docstring): 0 for `text_ids`,
    `NON_TEXT_BIAS` for every other row."""
    m = model.model
    with torch.no_grad():
        m.embed_tokens.weight[:, 0] = BIAS_FEATURE
        for layer in m.layers:
            layer.input_layernorm.weight[0] = 0.0          # the layers do not read the feature ...
            layer.post_attention_layernorm.weight[0] = 0.0
            layer.self_attn.o_proj.weight[0] = 0.0         # ... nor write it
            layer.mlp.down_proj.weight[0] = 0.0
        head = model.lm_head.weight
        head[:, 0] = NON_TEXT_BIAS
        head[torch.tensor(text_ids), 0] = 0.0


def tiny_chameleon_path(cache_dir: Path | None = None, resolution: int = RESOLUTION) -> Path:
    """Directory of the tiny checkpoint, `<cache_dir or ~/.cache/unifybench>/tiny/<VERSION>`, built once
    (another `resolution`, a multiple of 4: `<VERSION>-<resolution>px`, a (resolution/4)^2-token image grid)."""
    if resolution % 4 or resolution < 8:
        raise ValueError(f"the tiny Chameleon's resolution must be a multiple of 4 and >= 8, not {resolution}")
    name = VERSION if resolution == RESOLUTION else f"{VERSION}-{resolution}px"
    return build_once(tiny_root(cache_dir) / name, lambda out: _build(out, resolution))
