"""Chameleon image generation with the KV cache: images/s at batch 1 and 8, same seed same codes.

The KV cache is the preallocated one (`ChameleonBackbone.kv_cache`); each image has its own random stream,
so the same seed gives the same first image at batch 1 and batch 8 (checked) as well as on a rerun.

The suite's `ChameleonBackbone.generate_images` (prompt + begin-of-image, then 1024 sampled image codes
against the KV cache) on the tiny random checkpoint (real loading path), or `--geometry real`: Chameleon-7B
width on a `--layers` trunk. Both batch sizes run in this one process; each rerun with the same seed must
give the same codes. bench/gpu.py runs the same measurement at full 7B depth on a GPU (batch 1, 16, 64),
with the HBM-bandwidth bound beside it.

Run: python bench/chameleon_generation.py [--batches 1,8] [--geometry tiny|real] [--tokens 1024]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_geometry import RandomChameleon, sync  # noqa: E402

# Spec HBM bandwidth (bytes/s) by device name, printed beside the measured copy bandwidth.
SPEC_BANDWIDTH = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 NVL": 3.9e12, "H100 PCIe": 2.0e12, "H100": 3.35e12,
                  "A100-SXM4-80GB": 2.04e12, "A100": 1.56e12}


def weight_bytes(b) -> int:
    """Bytes of the weights a decode step streams: the language model (the VQ encoder never runs)."""
    return sum(p.numel() * p.element_size() for n, p in b.model.named_parameters() if "vqmodel" not in n)


def measured_bandwidth(dev, n_bytes: int) -> float:
    """Device-to-device copy bandwidth (read + write bytes per second), median of 5."""
    x = torch.empty(n_bytes // 2, dtype=torch.int16, device=dev)
    y = torch.empty_like(x)
    times = []
    for _ in range(6):
        sync(dev)
        t = time.perf_counter()
        y.copy_(x)
        sync(dev)
        times.append(time.perf_counter() - t)
    del x, y
    return 2 * n_bytes / statistics.median(times[1:])


def spec_bandwidth(dev) -> float | None:
    if not str(dev).startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(dev)
    for key, bw in SPEC_BANDWIDTH.items():
        if all(part in name for part in key.split()):
            return bw
    return None


def generation_rates(b, batches, tokens: int, check_all: bool = False) -> dict:
    """Image tokens/s and images/s of `b.generate_images` (KV cache) at each batch size, the HBM-bandwidth
    bounds (weights / bandwidth per decode step; + the KV cache a step reads), and a same-seed check."""
    dev, dtype = b.device, b.dtype
    b.image_seq_length = tokens
    weights = weight_bytes(b)
    cfg = b.model.config
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.hidden_size * torch.finfo(dtype).bits // 8
    bw = measured_bandwidth(dev, 2 << 30 if str(dev).startswith("cuda") else 64 << 20)
    prompt = list(range(20, 60))           # a 40-token personalized prompt stands in for "<sks> is ... A photo of"
    b.image_seq_length = 2
    b.generate_images(prompt, 1, torch.Generator(device=dev).manual_seed(0), batch_size=1)   # warm-up
    b.image_seq_length = tokens
    rows, first_codes = {}, {}
    for batch in batches:
        sync(dev)
        t = time.perf_counter()
        codes = b.generate_images(prompt, batch, torch.Generator(device=dev).manual_seed(0), batch_size=batch)
        sync(dev)
        dt = time.perf_counter() - t
        if check_all or batch == batches[0]:   # same seed, same codes (on a GPU only at the smallest batch)
            same = bool(torch.equal(codes, b.generate_images(prompt, batch, torch.Generator(device=dev).manual_seed(0),
                                                             batch_size=batch)))
        first_codes[batch] = codes[:min(batches)]   # per-image streams: image i is the same at any batch size
        mean_context = len(prompt) + 1 + tokens / 2
        step_bytes_kv = weights + batch * mean_context * kv_per_token
        rows[str(batch)] = {
            "images_per_s": batch / dt, "tokens_per_s": batch * tokens / dt, "seconds": dt,
            "bound_tokens_per_s_weights": batch * bw / weights,
            "bound_tokens_per_s_weights_kv": batch * bw / step_bytes_kv,
            "fraction_of_weights_bound": (batch * tokens / dt) / (batch * bw / weights),
            **({"same_seed_same_codes": same} if check_all or batch == batches[0] else {})}
    spec = spec_bandwidth(dev)
    smallest = first_codes[min(batches)]
    return {"same_codes_across_batch_sizes": all(torch.equal(c, smallest) for c in first_codes.values()),
            "weights_bytes": weights, "kv_bytes_per_token": kv_per_token, "measured_bandwidth": bw,
            "spec_bandwidth": spec, "image_tokens": tokens, "prompt_tokens": len(prompt) + 1,
            "batches": rows}



def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--geometry", choices=("tiny", "real"), default="tiny")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--tokens", type=int, default=1024, help="image codes per image (1024 = a 512 px image)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.geometry == "real":
        b = RandomChameleon.build(args.layers)
    else:
        from unifybench.models.chameleon.backbone import ChameleonBackbone
        from unifybench.models.chameleon.tiny import tiny_chameleon_path
        b = ChameleonBackbone.load(tiny_chameleon_path())
    r = generation_rates(b, [int(x) for x in args.batches.split(",")], args.tokens, check_all=True)
    print(f"Chameleon image generation with the KV cache ({args.geometry}: {b.model.config.num_hidden_layers} "
          f"layers, hidden {b.hidden_size}, vocab {b.vocab_size}), {args.tokens} codes per image, "
          f"{torch.get_num_threads()} threads")
    for batch, v in r["batches"].items():
        print(f"  batch {batch:>3}: {v['images_per_s']:.4f} images/s  {v['tokens_per_s']:8.1f} tokens/s"
              + (f"  same seed same codes: {v['same_seed_same_codes']}" if "same_seed_same_codes" in v else ""))
    print(f"  the first {min(int(x) for x in r['batches'])} image(s) identical at every batch size: "
          f"{r['same_codes_across_batch_sizes']}")
    rates = [v["images_per_s"] for v in r["batches"].values()]
    if len(rates) > 1:
        print(f"  batch {list(r['batches'])[-1]} / batch {list(r['batches'])[0]}: {rates[-1] / rates[0]:.2f}x images/s")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return r


if __name__ == "__main__":
    main()
