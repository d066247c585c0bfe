"""Every GPU figure in one command: random weights at real geometry, torch + transformers only, one JSON + one table.

  PYTHONPATH=. python3 bench/gpu.py --out gpu-figures          # on one H100/H200, under 8 minutes
  PYTHONPATH=. python3 bench/gpu.py --dry-run --out /tmp/gpu    # small sizes on the CPU (a test runs this)

Sections (each timed; one that fails is recorded with its error and the others still run):
  concept_tokens       Chameleon-7B (32 layers, V=65536, H=4096) bf16, batch 4 x (prompt + 1024 image codes):
                       training step time and peak step memory, concept tokens vs full matrices (the
                       reference approach), measured gradient + AdamW bytes;
  chameleon_generation image generation with the KV cache (the suite's `generate_images`) at batch 1, 16, 64:
                       image tokens/s against the HBM-bandwidth bound (weight bytes / bandwidth per decode
                       step; also with the KV-cache bytes a step reads), bandwidth measured by a copy;
  showo_maskgit        Show-o (Phi-1.5, 24 layers) 512 px MaskGIT, 50 steps, CFG 5, + MAGVIT-v2 decode:
                       images/s at batch 1 and 16; MMU decode with the KV cache vs full recomputation;
  generation_metrics   CLIP-I + CLIP-T + DINO in fp16 (transformers CLIP at ViT-L/14 geometry, DINO
                       ViT-S/16, random weights), ours vs the per-image loop, images/s.
Nothing is downloaded; models are random, so only timings and memory mean anything. The GPU image has no
open_clip, diffusers, lm-eval or insightface: nothing imported here (or by what it imports) needs them.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from real_geometry import RandomChameleon, random_showo  # noqa: E402

FULL = dict(layers=32, geometry={}, train_batch=4, train_codes=1024, train_steps=3, gen_batches=(1, 16, 64),
            gen_tokens=1024, showo_layers=24, showo_hidden=None, showo_vq_tokens=1024, showo_real_vq=True,
            maskgit_steps=50, maskgit_batches=(1, 16), mmu_tokens=64, metrics_images=400, metrics_dtype="float16",
            clip_geometry="vit-l-14")
DRY = dict(layers=1, geometry=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                   num_key_value_heads=4, vocab_size=16640),
           train_batch=2, train_codes=16, train_steps=2, gen_batches=(1, 2), gen_tokens=8, showo_layers=1,
           showo_hidden=64, showo_vq_tokens=16, showo_real_vq=False, maskgit_steps=2, maskgit_batches=(1, 2),
           mmu_tokens=4, metrics_images=8, metrics_dtype="float32", clip_geometry="tiny")


def section_concept_tokens(dev, dtype, s) -> dict:
    from concept_tokens_memory import compare_steps, image_batch
    b = RandomChameleon.build(s["layers"], device=dev, dtype=dtype, **s["geometry"])
    ids = list(range(16200, 16233))
    r = compare_steps(b, image_batch(b, ids, s["train_batch"], s["train_codes"]), s["train_steps"], ids)
    from chameleon_generation import weight_bytes
    r["weights_bytes"] = weight_bytes(b)
    del b
    return r


def section_chameleon_generation(dev, dtype, s) -> dict:
    from chameleon_generation import generation_rates
    b = RandomChameleon.build(s["layers"], device=dev, dtype=dtype, **s["geometry"])
    r = generation_rates(b, s["gen_batches"], s["gen_tokens"])
    del b
    return r


def section_showo(dev, dtype, s, work: Path) -> dict:
    from showo_decode import maskgit_rate, mmu_rates
    b = random_showo(s["showo_layers"], device=dev, dtype=dtype, num_vq_tokens=s["showo_vq_tokens"],
                     cache=work / "showo", hidden=s["showo_hidden"], with_vq=s["showo_real_vq"])
    out = {"resolution": b.resolution, "layers": s["showo_layers"], "steps": s["maskgit_steps"], "guidance": 5.0,
           "images_per_s": {str(n): maskgit_rate(b, n, s["maskgit_steps"], str(dev)) for n in s["maskgit_batches"]}}
    out["mmu"] = mmu_rates(b, s["mmu_tokens"], 3, str(dev))
    out["mmu"]["speedup"] = out["mmu"]["kv_cache"] / out["mmu"]["recompute"]
    del b
    return out


def section_generation_metrics(dev, s, work: Path) -> dict:
    import eval_throughput
    args = ["--device", str(dev), "--dtype", s["metrics_dtype"], "--n-gen", str(s["metrics_images"]),
            "--clip", "hf", "--clip-geometry", s["clip_geometry"], "--work-dir", str(work)]
    return eval_throughput.main(args)


def environment(dev) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(dev)}
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - the GPU image has it
        pass
    if str(dev).startswith("cuda"):
        p = torch.cuda.get_device_properties(dev)
        env.update(gpu=p.name, gpu_memory_bytes=p.total_memory, cuda=torch.version.cuda)
    return env


def markdown(doc: dict) -> str:
    """One table: figure, ours, the other side (or the bound), ratio."""
    gib = 2 ** 30
    rows = ["| figure | value | compared with | ratio |", "|---|---|---|---|"]
    sec = doc["sections"]
    ct = sec.get("concept_tokens", {})
    if "step_s" in ct:
        st, sb = ct["step_s"], ct["state_bytes"]
        rows.append(f"| concept-token step, batch {ct['batch'][0]} x {ct['batch'][1]} | {st['ours'] * 1e3:.0f} ms "
                    f"| full matrices {st['full'] * 1e3:.0f} ms | {ct['step_ratio']:.2f}x faster |")
        rows.append(f"| gradient + AdamW bytes (measured) | {sb['ours'] / 2**20:.2f} MiB | {sb['full'] / gib:.2f} GiB "
                    f"| {ct['memory_ratio']:.0f}x less |")
        if "peak_step_bytes" in ct:
            pk = ct["peak_step_bytes"]
            rows.append(f"| peak step memory above the weights | {pk['ours'] / gib:.2f} GiB | {pk['full'] / gib:.2f} GiB "
                        f"| {pk['full'] / max(pk['ours'], 1):.2f}x |")
    cg = sec.get("chameleon_generation", {})
    for batch, r in cg.get("batches", {}).items():
        rows.append(f"| Chameleon image tokens/s, batch {batch} | {r['tokens_per_s']:.0f} ({r['images_per_s']:.3f} img/s) "
                    f"| HBM bound {r['bound_tokens_per_s_weights']:.0f} (weights), "
                    f"{r['bound_tokens_per_s_weights_kv']:.0f} (+KV) | {100 * r['fraction_of_weights_bound']:.0f}% of bound |")
    sm = sec.get("showo_maskgit", {})
    for batch, v in sm.get("images_per_s", {}).items():
        rows.append(f"| Show-o {sm['resolution']} px MaskGIT ({sm['steps']} steps, CFG 5), batch {batch} | "
                    f"{v:.3f} img/s | | |")
    if "mmu" in sm:
        m = sm["mmu"]
        rows.append(f"| Show-o MMU decode, prompt {m['prompt_len']} | {m['kv_cache']:.1f} tok/s (KV cache) "
                    f"| {m['recompute']:.1f} tok/s (recompute) | {m['speedup']:.2f}x |")
    gm = sec.get("generation_metrics", {})
    if "ours_images_per_s" in gm:
        rows.append(f"| CLIP-I + CLIP-T + DINO, {gm['dtype']} | {gm['ours_images_per_s']:.1f} img/s "
                    f"| per-image loop {gm['naive_images_per_s']:.1f} img/s | {gm['speedup']:.2f}x |")
    for name, v in sec.items():
        if "error" in v:
            rows.append(f"| {name} | FAILED: {v['error']} | | |")
    head = (f"{doc['environment'].get('gpu', doc['environment']['device'])}, torch {doc['environment']['torch']}, "
            f"{'DRY RUN (small sizes: the figures mean nothing)' if doc['dry_run'] else 'real geometry'}, "
            f"random weights; total {doc['total_s']:.0f} s")
    return head + "\n\n" + "\n".join(rows) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-figures"))
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--dry-run", action="store_true", help="small sizes, for a CPU test of the script")
    ap.add_argument("--only", default=None, help="comma-separated sections")
    args = ap.parse_args(argv)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu" and not args.dry_run:
        print("warning: no GPU; real geometry on a CPU takes hours (use --dry-run)", file=sys.stderr)
    s = DRY if args.dry_run else FULL
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    sections = {
        "concept_tokens": lambda: section_concept_tokens(dev, dtype, s),
        "chameleon_generation": lambda: section_chameleon_generation(dev, dtype, s),
        "showo_maskgit": lambda: section_showo(dev, dtype, s, work),
        "generation_metrics": lambda: section_generation_metrics(dev, s, work),
    }
    wanted = args.only.split(",") if args.only else list(sections)
    doc = {"dry_run": args.dry_run, "environment": environment(dev), "dtype": str(dtype), "sizes": s,
           "sections": {}, "seconds": {}}
    t_all = time.perf_counter()
    try:
        for name in wanted:
            t = time.perf_counter()
            print(f"[gpu.py] {name} ...", flush=True)
            try:
                doc["sections"][name] = sections[name]()
            except Exception as e:  # one section's failure is recorded; the others still run
                traceback.print_exc()
                doc["sections"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            doc["seconds"][name] = time.perf_counter() - t
            if dev.type == "cuda":
                doc["sections"][name]["max_memory_allocated"] = torch.cuda.max_memory_allocated(dev)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            print(f"[gpu.py] {name}: {doc['seconds'][name]:.1f} s", flush=True)
            doc["total_s"] = time.perf_counter() - t_all
            (args.out / "gpu.json").write_text(json.dumps(doc, indent=2, default=str))   # after every section
    finally:
        shutil.rmtree(work, ignore_errors=True)   # random weights and images: nothing worth keeping
    doc["total_s"] = time.perf_counter() - t_all
    (args.out / "gpu.json").write_text(json.dumps(doc, indent=2, default=str))
    table = markdown(doc)
    (args.out / "gpu.md").write_text(table)
    print(table)
    return doc


if __name__ == "__main__":
    main()
