"""Show-o decoding speed: MMU greedy tokens/second with the KV cache vs full recomputation, side by side.

The reference `mmu_generate` recomputes the whole sequence for every new token; ours encodes the prompt
once and feeds one token per step against the cache (tests check both give the same tokens). Both modes
run in this one process, interleaved, `--repeats` times; the median is printed.

  python bench/showo_decode.py                      # tiny random Show-o (CPU), the one every machine can run
  python bench/showo_decode.py --size full --device cuda [--dtype bfloat16]
      # a full-size RANDOM Show-o (Phi-1.5 geometry, vocab 58498) + MAGVIT-v2: MMU tokens/s with and without
      # the cache, and 512 px MaskGIT images/s (50 steps, CFG 5) at batch 1 and 16. The full-size model
      # uses the tiny tokenizer as a stand-in (text ids are arbitrary for timing); nothing is downloaded.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from unifybench.models.showo.tiny import load_tiny_showo, tiny_showo_path


def full_random_backbone(cache: Path, device: str, dtype: torch.dtype):
    from unifybench.models.showo.magvit2 import MAGVITv2
    from unifybench.models.showo.backbone import PhiConfig, Showo, ShowoBackbone, load_tokenizer
    root = tiny_showo_path(cache)
    tiny = load_tiny_showo(cache)
    tokenizer = load_tokenizer(root / "phi-1_5", tiny.llm_vocab_size)
    config = {"vocab_size": 58498, "llm_vocab_size": 50295, "codebook_size": 8192, "num_vq_tokens": 1024}
    with torch.device(device):
        torch.manual_seed(0)
        model = Showo(PhiConfig(), 58498).to(dtype).eval().requires_grad_(False)
        vq = MAGVITv2().to(dtype).eval().requires_grad_(False)
    paths = {"showo": root, "phi": root, "magvit": root, "showo_weights": root, "magvit_weights": root}
    return ShowoBackbone(model, tokenizer, vq, config, paths, torch.device(device), dtype)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def mmu_rates(b, tokens: int, repeats: int, device: str) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 8192, (b.num_vq_tokens,), generator=gen)
    ids = b.mmu_prefix(codes) + b.encode_text("USER: Is this a dog? Describe it in detail. ASSISTANT:")
    b.generate_text(ids, 2, use_cache=True, stop_at_eot=False)          # warm-up
    b.generate_text(ids, 2, use_cache=False, stop_at_eot=False)
    times = {"kv_cache": [], "recompute": []}
    for _ in range(repeats):
        for mode, cache in (("kv_cache", True), ("recompute", False)):
            sync(device)
            t = time.perf_counter()
            out = b.generate_text(ids, tokens, use_cache=cache, stop_at_eot=False)
            sync(device)
            times[mode].append(len(out) / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()} | {"prompt_len": len(ids)}


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
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per MMU answer")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50, help="MaskGIT steps (full size)")
    ap.add_argument("--batches", default="1,16", help="MaskGIT batch sizes (full size)")
    ap.add_argument("--cache-dir", default=None, help="where the tiny model is built (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="showo-bench-"))
    if args.size == "tiny":
        b = load_tiny_showo(cache, device=args.device, dtype=dtype)
    else:
        b = full_random_backbone(cache, args.device, dtype)
    name = f"{args.size} Show-o ({b.model.phi_config.num_hidden_layers} layers, hidden {b.hidden_size}, " \
           f"vocab {b.vocab_size}, {b.num_vq_tokens} image tokens) on {args.device}, {args.dtype}"
    print(name)
    r = mmu_rates(b, args.tokens, args.repeats, args.device)
    print(f"MMU greedy decoding, prompt {r['prompt_len']} tokens, {args.tokens} new tokens, median of {args.repeats}:")
    print(f"  {'mode':<12}{'tokens/s':>12}")
    print(f"  {'kv_cache':<12}{r['kv_cache']:>12.1f}")
    print(f"  {'recompute':<12}{r['recompute']:>12.1f}")
    print(f"  speed-up    {r['kv_cache'] / r['recompute']:>11.2f}x")
    if args.size == "full":
        print(f"MaskGIT {b.resolution} px, {args.steps} steps, CFG 5 (+ MAGVIT decode):")
        for bs in (int(x) for x in args.batches.split(",")):
            print(f"  batch {bs:>3}: {maskgit_rate(b, bs, args.steps, args.device):8.3f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
