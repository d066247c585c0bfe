"""A tiny, randomly initialised Stable Diffusion 1.x checkpoint for CPU tests, built locally and deterministically.

The real architecture at tiny widths: diffusers' `UNet2DConditionModel` (cross-attention down/up blocks),
`AutoencoderKL` (two blocks, so a latent is half the image size rather than an eighth), a transformers
`CLIPTextModel` with CLIP's full 49408-token vocabulary, the real CLIP BPE `CLIPTokenizer`, and SD-1.x's
`PNDMScheduler` settings. It is written with `StableDiffusionPipeline.save_pretrained(safe_serialization=True)`
(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) and read back by
`unifybench.models.stable_diffusion.load_sd`, the loader real checkpoints go through.

The tokenizer files are derived from the BPE merge list that open_clip ships (`bpe_simple_vocab_16e6.txt.gz`,
the file of OpenAI's CLIP tokenizer), following CLIP's own definition of its vocabulary: the 256 byte
symbols, the same with the end-of-word mark `</w>`, one entry per merge (the first 49152 - 256 - 2 merges),
then `<|startoftext|>` and `<|endoftext|>`: 49408 ids, the ids of the real SD text encoder's tokenizer.
Nothing is downloaded.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from unifybench.models.tiny_cache import build_once, tiny_root

VERSION = "sd-v1"      # bump when the recipe changes, so stale caches are not reused
SEED = 0
IMAGE_SIZE = 32        # native resolution of the tiny model (the VAE halves it: 16 x 16 latents)
VOCAB_SIZE = 49408     # CLIP's
N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Stable Diffusion 1.x's scheduler settings (scheduler/scheduler_config.json of the v1-5 checkpoint).
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)


def _byte_symbols() -> list[str]:
    """CLIP's (and GPT-2's) reversible byte -> printable character table, in CLIP's vocabulary order: the
    printable latin-1 bytes stand for themselves (first, ascending), the other 68 bytes (ascending) take the
    code points 256, 257, ..."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + n) for n in range(len(rest))]


def clip_bpe_files() -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) of OpenAI's CLIP tokenizer, from the BPE file open_clip ships."""
    import open_clip
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1:1 + N_MERGES]                       # line 0 is the file's version header
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"{bpe}: expected {VOCAB_SIZE} CLIP tokens, derived {len(vocab)}")
    return vocab, merges


def build_clip_tokenizer(folder: Path):
    """Write vocab.json + merges.txt (the layout of SD checkpoints' tokenizer/ folder) and load them."""
    from transformers import CLIPTokenizer
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_files()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=77, local_files_only=True)


def _build(out: Path) -> None:
    import tempfile

    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from unifybench.models.local import quiet_transformers

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_clip_tokenizer(Path(tmp))
        files = {name: (Path(tmp) / name).read_bytes() for name in ("vocab.json", "merges.txt")}
    with torch.random.fork_rng(devices=[]):  # fixed weights without disturbing the caller's RNG
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(
            sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=8)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, norm_num_groups=8, sample_size=IMAGE_SIZE)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, projection_dim=32))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    with quiet_transformers():
        pipe.save_pretrained(out, safe_serialization=True)
    # Real SD-1.x checkpoints ship the tokenizer as vocab.json + merges.txt (transformers 5 writes a
    # tokenizer.json instead): keep the real layout, so loading goes through the same files.
    folder = Path(out) / "tokenizer"
    (folder / "tokenizer.json").unlink(missing_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _complete(folder: Path) -> bool:
    return (folder / "model_index.json").is_file() and (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def tiny_sd_path(cache_dir: Path | None = None) -> Path:
    """Directory of the tiny checkpoint, `<cache_dir or ~/.cache/unifybench>/tiny/sd-v1`, built once."""
    root = tiny_root(cache_dir)
    return build_once(root / VERSION, _build, _complete)
