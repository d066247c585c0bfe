"""Show-o decoding speed: MMU greedy tokens/second with the KV cache vs full recomputation, side by side.

The reference `mmu_generate` recomputes the whole sequence for every new token; ours encodes the prompt
once and feeds one token per step against the cache. Both modes run in this one process, interleaved,
`--repeats` times; the median is printed, and the two modes' greedy tokens are compared (they must match).

  python bench/showo_decode.py                      # Phi-1.5 width (hidden 2048, MLP 8192, 32 heads, vocab 58498),
      # random weights, a shallow trunk (--layers 2) so it runs on a CPU, a 600-token image+text prefix
  python bench/showo_decode.py --size tiny          # the tiny random Show-o checkpoint (real loading path)
  python bench/showo_decode.py --size full --device cuda [--dtype bfloat16]
      # the full 24-layer random Show-o + MAGVIT-v2: MMU tokens/s (1024 image tokens, 512 px) and 512 px
      # MaskGIT images/s (50 steps, CFG 5) at batch 1 and 16 (bench/gpu.py runs this on a GPU)
The random models use the tiny tokenizer as a stand-in (text ids are arbitrary for timing); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_geometry import random_showo  # noqa: E402

from unifybench.models.showo.tiny import load_tiny_showo  # noqa: E402

QUESTION = "USER: Is this a dog? Describe it in detail. ASSISTANT:"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mmu_rates(b, tokens: int, repeats: int, device: str, prefix: int | None = None) -> dict:
    """Tokens/s of both modes and whether their greedy tokens agree; `prefix` fixes the prompt length
    (image codes fill what the question leaves), else the backbone's image-token count is used."""
    text = b.encode_text(QUESTION)
    n_codes = b.num_vq_tokens if prefix is None else prefix - len(b.mmu_prefix([])) - len(text)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, b.codebook_size, (n_codes,), generator=gen)
    ids = b.mmu_prefix(codes) + text
    b.generate_text(ids, 2, use_cache=True, stop_at_eot=False)          # warm-up
    b.generate_text(ids, 2, use_cache=False, stop_at_eot=False)
    times = {"kv_cache": [], "recompute": []}
    outputs = {}
    for _ in range(repeats):
        for mode, cache in (("kv_cache", True), ("recompute", False)):
            sync(device)
            t = time.perf_counter()
            out = b.generate_text(ids, tokens, use_cache=cache, stop_at_eot=False)
            sync(device)
            times[mode].append(len(out) / (time.perf_counter() - t))
            outputs[mode] = out
    return {k: statistics.median(v) for k, v in times.items()} | {
        "prompt_len": len(ids), "new_tokens": tokens, "identical": outputs["kv_cache"] == outputs["recompute"]}


def maskgit_rate(b, batch: int, steps: int, device: str) -> float:
    prompt = b.t2i_prompt(b.encode_text("A photo of a dog."))
    gen = torch.Generator(device=device).manual_seed(0)
    b.generate_images(prompt, batch, gen, steps=2, guidance=5.0, batch_size=batch)   # warm-up
    sync(device)
    t = time.perf_counter()
    b.generate_images(prompt, batch, gen, steps=steps, guidance=5.0, batch_size=batch)
    codes = torch.zeros(batch, b.num_vq_tokens, dtype=torch.long)
    b.decode_images(codes, chunk_size=batch)
    sync(device)
    return batch / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("phi", "tiny", "full"), default="phi")
    ap.add_argument("--layers", type=int, default=2, help="trunk depth of --size phi (Phi-1.5 has 24)")
    ap.add_argument("--prefix", type=int, default=600, help="image+text prompt tokens of --size phi")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    ap.add_argument("--tokens", type=int, default=16, help="new tokens per MMU answer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50, help="MaskGIT steps (full size)")
    ap.add_argument("--batches", default="1,16", help="MaskGIT batch sizes (full size)")
    ap.add_argument("--cache-dir", default=None, help="where the tiny model is built (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="showo-bench-"))
    prefix = None
    if args.size == "tiny":
        b = load_tiny_showo(cache, device=args.device, dtype=dtype)
    elif args.size == "phi":
        b = random_showo(args.layers, args.device, dtype, cache=cache, with_vq=False)
        prefix = args.prefix
    else:
        b = random_showo(24, args.device, dtype, cache=cache)
    image = f"{b.num_vq_tokens} image tokens" if prefix is None else f"a {prefix}-token image+text prefix"
    name = f"{args.size} Show-o ({b.model.phi_config.num_hidden_layers} layers, hidden {b.hidden_size}, " \
           f"vocab {b.vocab_size}, {image}) on {args.device}, {args.dtype}"
    print(name)
    r = mmu_rates(b, args.tokens, args.repeats, args.device, prefix)
    print(f"MMU greedy decoding, prompt {r['prompt_len']} tokens, {args.tokens} new tokens, median of {args.repeats}:")
    print(f"  {'mode':<12}{'tokens/s':>12}")
    print(f"  {'kv_cache':<12}{r['kv_cache']:>12.1f}")
    print(f"  {'recompute':<12}{r['recompute']:>12.1f}")
    print(f"  speed-up    {r['kv_cache'] / r['recompute']:>11.2f}x   greedy tokens identical: {r['identical']}")
    if args.size == "full":
        print(f"MaskGIT {b.resolution} px, {args.steps} steps, CFG 5 (+ MAGVIT decode):")
        for bs in (int(x) for x in args.batches.split(",")):
            print(f"  batch {bs:>3}: {maskgit_rate(b, bs, args.steps, args.device):8.3f} images/s")
    return 0 if r["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
