"""Throughput where the GPU time goes (issue 18, part 3): each change measured against its absence, one run.

  batching   Chameleon image generation, the paper's 4 images per prompt: one prompt per forward (4 rows,
             what a per-prompt loop gives) vs `gen_batch_size` rows across prompts; images/s, same codes
  kv-cache   Chameleon decoding, transformers' DynamicCache (re-concatenated every step) vs the preallocated
             cache; decode tokens/s at a long context, same codes
  buckets    training batches of Yo'Chameleon's sample-length mix (paper counts: 400 recognition, 67 + 1000
             generation, 10 text QA), random vs length-bucketed; padding share and epoch time
  codes      frozen image codes of training photos: encoding them (first run) vs reading the on-disk cache
             (every later run); seconds for the photos, encoder calls, same codes
  readahead  embedding a retrieval pool with the tiny CLIP: read + preprocess, then encode, one batch after
             the other vs `embed_images_cached` (images prepared in threads while the model encodes);
             images/s, same features

Tiny random Chameleon (real loading path) by default; `--geometry real`: Chameleon-7B width on a `--layers`
trunk for the first two. Tiny models: the figures time code paths, they say nothing about any method.

Run: python bench/throughput.py [--parts batching,kv-cache,buckets,codes,readahead] [--geometry tiny|real]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _backbone(geometry: str, layers: int):
    if geometry == "real":
        from real_geometry import RandomChameleon
        return RandomChameleon.build(layers)
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    return ChameleonBackbone.load(tiny_chameleon_path())


def _prompts(b, n_prompts: int) -> list[list[int]]:
    rng = random.Random(0)
    lo = int(b.image_token_ids.max()) + 16 if b.vocab_size > 4096 else 10   # text-like ids, never image codes
    return [[b.bos_id] + [rng.randrange(lo, min(b.vocab_size, lo + 500)) for _ in range(40 + rng.randrange(6))]
            for _ in range(n_prompts)]


def _streams(n_prompts: int, per: int) -> list[torch.Generator]:
    from unifybench.models.streams import image_generators
    return [g for k in range(n_prompts) for g in image_generators(torch.Generator().manual_seed(k), per)]


def bench_batching(b, tokens: int, n_prompts: int, per: int, batch: int) -> dict:
    b.image_seq_length = tokens
    prompts = _prompts(b, n_prompts)
    rows = [p for p in prompts for _ in range(per)]
    b.generate_image_rows(rows[:1], _streams(1, 1), batch_size=1)     # warm-up
    t = time.perf_counter()
    loop = torch.cat([b.generate_image_rows(rows[k * per:(k + 1) * per], _streams(n_prompts, per)[k * per:(k + 1) * per],
                                            batch_size=per) for k in range(n_prompts)])
    t_loop = time.perf_counter() - t
    t = time.perf_counter()
    across = b.generate_image_rows(rows, _streams(n_prompts, per), batch_size=batch)
    t_across = time.perf_counter() - t
    return {"images": len(rows), "per_prompt_images_per_s": len(rows) / t_loop,
            "across_prompts_images_per_s": len(rows) / t_across, "ratio": t_loop / t_across,
            "same_codes": bool(torch.equal(loop, across)), "batch": batch, "images_per_prompt": per}


def bench_kv_cache(b, tokens: int, batch: int) -> dict:
    b.image_seq_length = tokens
    rows = _prompts(b, 1) * batch
    real = b.kv_cache
    out = {}
    for name, maker in (("dynamic", lambda capacity: None), ("preallocated", real)):
        b.kv_cache = maker
        b.generate_image_rows(rows[:1], _streams(1, 1), batch_size=1)   # warm-up
        t = time.perf_counter()
        codes = b.generate_image_rows(rows, _streams(1, batch), batch_size=batch)
        out[name] = (time.perf_counter() - t, codes)
    del b.kv_cache   # back to the class's method
    (t_dyn, c_dyn), (t_pre, c_pre) = out["dynamic"], out["preallocated"]
    return {"tokens": tokens, "batch": batch, "dynamic_tokens_per_s": batch * tokens / t_dyn,
            "preallocated_tokens_per_s": batch * tokens / t_pre, "ratio": t_dyn / t_pre,
            "same_codes": bool(torch.equal(c_dyn, c_pre))}


def bench_buckets(epochs: int, buckets: int, scale: float) -> dict:
    """One epoch of `train_tokens` on the tiny Chameleon, Yo'Chameleon's length mix (scaled to `scale`)."""
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    from unifybench.models.concept_tokens import ConceptTokens, attach, detach
    from unifybench.training import OptimConfig, Sample, epoch_batches, padding_fraction, train_tokens
    b = ChameleonBackbone.load(tiny_chameleon_path())
    rng = random.Random(0)
    mix = [(400, 1060), (1067, 1045), (10, 60)]          # (count, ~length): rec, generation, text QA
    samples = []
    for count, length in mix:
        for _ in range(max(1, round(count * scale))):
            n = length + rng.randrange(-8, 9)
            ids = [rng.randrange(10, b.vocab_size) for _ in range(n)]
            samples.append(Sample(ids, [False] * (n // 2) + [True] * (n - n // 2)))
    lengths = [len(s.ids) for s in samples]
    out = {"samples": len(samples)}
    for name, k in (("random", 0), ("bucketed", buckets)):
        out[f"{name}_padding"] = padding_fraction(lengths, epoch_batches(lengths, 4, torch.Generator().manual_seed(0), k))
        tokens = ConceptTokens.from_base(b.input_embeddings(), b.output_head(), list(range(900, 905)),
                                         list(range(900, 905)))
        attach(b, tokens)
        t = time.perf_counter()
        train_tokens(b, list(tokens.parameters()), samples, OptimConfig(1e-3, 0.0, 1e-6, 4, epochs, length_buckets=k),
                     torch.Generator().manual_seed(0))
        out[f"{name}_seconds"] = time.perf_counter() - t
        detach(b)
    out["ratio"] = out["random_seconds"] / out["bucketed_seconds"]
    return out


def bench_codes(n_photos: int) -> dict:
    from PIL import Image

    from unifybench.images import open_rgb
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    from unifybench.models.image_codes import ImageCodeCache
    b = ChameleonBackbone.load(tiny_chameleon_path())
    work = Path(tempfile.mkdtemp(prefix="codes-bench-"))
    photos = []
    for i in range(n_photos):
        photo = work / f"p{i}.png"
        Image.effect_noise((512, 512), 20 + i % 50).convert("RGB").save(photo)
        photos.append(photo)

    def encode(path, flip):
        return b.encode_images([open_rgb(path, flip)])[0]

    runs = []
    for _ in range(2):          # a fresh cache object each time: a new process on the same cache folder
        cache = ImageCodeCache.for_backbone(b, encode, work / "cache")
        t = time.perf_counter()
        codes = torch.stack([cache.codes(p, flip) for p in photos for flip in (False, True)])
        runs.append((time.perf_counter() - t, cache.encode_calls, codes))
    (t_cold, calls_cold, c_cold), (t_warm, calls_warm, c_warm) = runs
    return {"photos": n_photos, "cold_seconds": t_cold, "warm_seconds": t_warm, "ratio": t_cold / t_warm,
            "cold_encode_calls": calls_cold, "warm_encode_calls": calls_warm, "same_codes": bool(torch.equal(c_cold, c_warm))}


def bench_readahead(n_images: int, side: int = 256, batch: int = 32) -> dict:
    """Pool embedding, the sequential loop vs `embed_images_cached` (cold cache each), same tiny CLIP."""
    import numpy as np
    from PIL import Image

    from unifybench.models.encoders.clip import embed_images_cached, load_clip, load_rgb, tiny_clip_path
    from unifybench.models.encoders.readahead import read_workers
    work = Path(tempfile.mkdtemp(prefix="readahead-"))
    try:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(n_images):       # smooth random pictures: PNG decode cost like a photo's, not like noise
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            paths.append(work / f"{i:05d}.png")
            Image.fromarray(small).resize((side, side), Image.BICUBIC).save(paths[-1])
        clip = load_clip(tiny_clip_path(work / "models"))
        embed_images_cached(clip, paths[:batch], None)                            # warm-up (both sides)
        t = time.perf_counter()
        sequential = torch.cat([clip.encode_images([load_rgb(p) for p in paths[i:i + batch]], batch)
                                for i in range(0, len(paths), batch)])
        t_seq = time.perf_counter() - t
        t = time.perf_counter()
        ours = embed_images_cached(clip, paths, work / "cache", batch_size=batch)
        t_ours = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"images": n_images, "side": side, "workers": read_workers(), "sequential_images_per_s": n_images / t_seq,
            "readahead_images_per_s": n_images / t_ours, "ratio": t_seq / t_ours,
            "same_features": bool(torch.equal(sequential, ours))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="batching,kv-cache,buckets,codes,readahead")
    ap.add_argument("--geometry", choices=("tiny", "real"), default="tiny")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=256, help="image codes per image (1024 = a 512 px image)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--per-prompt", type=int, default=4, help="images per prompt (the paper: 4)")
    ap.add_argument("--batch", type=int, default=16, help="images per forward across prompts")
    ap.add_argument("--kv-tokens", type=int, default=1024)
    ap.add_argument("--kv-batch", type=int, default=8)
    ap.add_argument("--bucket-scale", type=float, default=0.1, help="fraction of the paper's sample counts")
    ap.add_argument("--buckets", type=int, default=16, help="batches per length window")
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--pool", type=int, default=1000, help="readahead: pool images (256 px PNGs)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    r: dict = {"geometry": args.geometry, "threads": torch.get_num_threads()}
    print(f"throughput, {args.geometry} geometry, {torch.get_num_threads()} threads (tiny/random weights: "
          f"code paths timed, no method measured)")
    if {"batching", "kv-cache"} & set(parts):
        b = _backbone(args.geometry, args.layers)
        with torch.no_grad():
            if "batching" in parts:
                v = r["batching"] = bench_batching(b, args.tokens, args.prompts, args.per_prompt, args.batch)
                print(f"  batching  {v['images']} images, {v['images_per_prompt']} per prompt, {args.tokens} codes: "
                      f"per prompt {v['per_prompt_images_per_s']:.3f} vs across prompts (batch {v['batch']}) "
                      f"{v['across_prompts_images_per_s']:.3f} images/s: {v['ratio']:.2f}x, same codes {v['same_codes']}")
            if "kv-cache" in parts:
                v = r["kv_cache"] = bench_kv_cache(b, args.kv_tokens, args.kv_batch)
                print(f"  kv-cache  batch {v['batch']} x {v['tokens']} codes: dynamic {v['dynamic_tokens_per_s']:.1f} vs "
                      f"preallocated {v['preallocated_tokens_per_s']:.1f} tokens/s: {v['ratio']:.2f}x, "
                      f"same codes {v['same_codes']}")
    if "buckets" in parts:
        v = r["buckets"] = bench_buckets(1, args.buckets, args.bucket_scale)
        print(f"  buckets   {v['samples']} samples, 1 epoch: padding {v['random_padding']:.1%} random vs "
              f"{v['bucketed_padding']:.1%} bucketed; {v['random_seconds']:.1f} s vs {v['bucketed_seconds']:.1f} s: "
              f"{v['ratio']:.2f}x")
    if "codes" in parts:
        v = r["codes"] = bench_codes(args.photos)
        print(f"  codes     {v['photos']} photos x 2 flips: encode {v['cold_seconds']:.2f} s ({v['cold_encode_calls']} "
              f"calls) vs cache {v['warm_seconds']:.3f} s ({v['warm_encode_calls']} calls): {v['ratio']:.1f}x, "
              f"same codes {v['same_codes']}")
    if "readahead" in parts:
        v = r["readahead"] = bench_readahead(args.pool)
        print(f"  readahead {v['images']} pool images, {v['workers']} threads: one after the other "
              f"{v['sequential_images_per_s']:.0f} vs read ahead {v['readahead_images_per_s']:.0f} images/s: "
              f"{v['ratio']:.2f}x, same features {v['same_features']}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return r


if __name__ == "__main__":
    main()
