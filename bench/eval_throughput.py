"""Generation-metric throughput: our CLIP-I + CLIP-T + DINO scoring vs a straightforward per-image loop.

Both sides use the same models: an open_clip ViT-B/32 (or, `--clip hf`, a transformers CLIP at ViT-L/14 or
ViT-B/32 geometry: what bench/gpu.py uses, as the GPU image has no open_clip) and a transformers DINO ViT-S/16
with their full shapes and RANDOM weights (no weights are downloaded), written in their real folder formats and loaded by
our real loaders. The data are synthetic 512x512 PNGs: `--n-gen` generated images (default 100, 4 per prompt) and
`--n-ref` reference photos per concept.

  ours   `ClipImage`, `ClipText` and `Dino` evaluators as a run calls them: every generated image is read
         and preprocessed once and embedded in batches (CLIP features shared by CLIP-I and CLIP-T), each
         distinct prompt is encoded once, reference features are embedded once (cold on-disk cache, fresh
         folder). Weight hashing for the model fingerprint (once per weights file, memoised in the cache
         folder across runs) is timed separately.
  naive  what the reference scripts do: for each generated image, open it, call the model on it alone,
         re-open and re-embed every reference image, encode the prompt; the same for DINO.

Prints images/second of both, the ratio, and the largest absolute difference between the two sides'
per-image scores (< 1e-5 expected in float32). Process CPU time is printed beside the wall clock: on a
machine shared with other work the wall clock of the two sides (run one after the other) is noisy.

Run: python bench/eval_throughput.py [--n-gen 100] [--n-ref 5] [--device cuda --dtype float16]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unifybench.data.schema import Concept, Item, Prediction

PROMPTS = ["a photo of <sks>", "a <sks> in the jungle", "a <sks> in the snow", "a <sks> on the beach",
           "a <sks> on a cobblestone street", "a <sks> on top of pink fabric", "a <sks> on top of a wooden floor",
           "a <sks> with a city in the background", "a <sks> with a mountain in the background",
           "a <sks> with a blue house in the background", "a <sks> on top of a purple rug in a forest",
           "a <sks> with a wheat field in the background", "a <sks> with a tree and autumn leaves",
           "a <sks> with the Eiffel Tower in the background", "a <sks> floating on top of water",
           "a <sks> floating in an ocean of milk", "a <sks> on top of green grass with sunflowers around it",
           "a <sks> on top of a mirror", "a <sks> on top of the sidewalk in a crowded street",
           "a <sks> on top of a dirt road", "a <sks> on top of a white rug", "a red <sks>", "a purple <sks>",
           "a shiny <sks>", "a wet <sks>", "a cube shaped <sks>"]


def picture(seed: int, side: int = 512) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.stack([0.5 + 0.35 * np.sin(7 * (a * x + b * y) + 3 * f) for a, b, f in rng.uniform(-1, 1, (3, 3))], -1)
    img += rng.normal(0, 0.03, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


# CLIP geometries for the transformers (hf) format: (vision, text, projection); ViT-L/14 is the CLIP-I/T backbone
# of the papers, ViT-B/32 the open_clip default here.
HF_CLIP_GEOMETRY = {
    "vit-l-14": (dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                      image_size=224, patch_size=14),
                 dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12), 768),
    "vit-b-32": (dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=32),
                 dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8), 512),
    "tiny": (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8),
             dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2), 16),
}


def build_models(work: Path, clip_format: str = "open_clip", geometry: str = "vit-b-32") -> tuple[Path, Path]:
    """A random CLIP folder (open_clip ViT-B/32, or transformers CLIP at `geometry`) and a random DINO ViT-S/16
    (the tiny DINO when `geometry` is "tiny": a dry run)."""
    from unifybench.models.encoders.dino import TINY_CONFIG, VITS16_CONFIG, save_random_vit
    clip_dir, dino_dir = work / f"clip-{geometry}-random", work / "dino-vits16-random"
    if clip_format == "hf":
        build_hf_clip(clip_dir, geometry)
    else:
        build_open_clip(clip_dir)
    save_random_vit(dino_dir, TINY_CONFIG if geometry == "tiny" else VITS16_CONFIG, seed=0)
    return clip_dir, dino_dir


def build_open_clip(clip_dir: Path) -> None:
    import open_clip
    from safetensors.torch import save_file
    clip_dir.mkdir()
    cfg = open_clip.get_model_config("ViT-B-32")
    (clip_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {
        "mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic", "resize_mode": "shortest"}}))
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(clip_dir / "open_clip_model.safetensors"),
              metadata={"format": "pt"})


def build_hf_clip(clip_dir: Path, geometry: str) -> None:
    """A random transformers CLIPModel folder with its image processor and a byte-level stand-in tokenizer
    (CLIP's BPE merges ship with open_clip, which the GPU image lacks; text ids are arbitrary for timing)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from unifybench.models.stable_diffusion.tiny import BOS, EOS, VOCAB_SIZE, _byte_symbols
    vision, text, proj = HF_CLIP_GEOMETRY[geometry]
    torch.manual_seed(0)
    config = CLIPConfig(vision_config=vision, text_config=dict(text, vocab_size=VOCAB_SIZE, max_position_embeddings=77),
                        projection_dim=proj)
    CLIPModel(config).eval().save_pretrained(clip_dir)
    side = vision["image_size"]
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(clip_dir)
    symbols = _byte_symbols()
    vocab = {t: i for i, t in enumerate(symbols + [s + "</w>" for s in symbols] + [BOS, EOS])}
    (clip_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (clip_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    CLIPTokenizer(str(clip_dir / "vocab.json"), str(clip_dir / "merges.txt"), model_max_length=77).save_pretrained(clip_dir)


def build_data(work: Path, n_concepts: int, n_gen: int, n_ref: int):
    run = work / "run"
    out = []
    for c in range(n_concepts):
        name = f"c{c}"
        refs = []
        for k in range(n_ref):
            p = work / "refs" / name / f"{k}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            picture(1000 * c + k).save(p)
            refs.append(p)
        concept = Concept(name, "pet", "dog", train_images=tuple(refs))
        items, preds = [], {}
        n_items = (n_gen + 3) // 4
        for i in range(n_items):
            prompt = PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f", variation {i // len(PROMPTS)}")
            iid = f"bench/{name}/gen/{i}"
            items.append(Item(id=iid, concept=name, task="gen", prompt=prompt, n_images=4))
            imgs = []
            for k in range(min(4, n_gen - 4 * i)):
                rel = f"gen/{name}/{i}_{k}.png"
                (run / rel).parent.mkdir(parents=True, exist_ok=True)
                picture(10_000 + 1000 * c + 4 * i + k).save(run / rel)
                imgs.append(rel)
            preds[iid] = Prediction(iid, name, "gen", prompt=prompt, images=imgs)
        out.append((concept, items, preds))
    return run, out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours(data, run: Path, clip_dir: Path, dino_dir: Path, device: str, dtype: str, cache: Path, batch: int):
    from unifybench.evaluators.base import EvalContext
    from unifybench.evaluators.clip_image import ClipImage
    from unifybench.evaluators.image_similarity import FEATURES
    from unifybench.evaluators.clip_text import ClipText
    from unifybench.evaluators.dino import Dino
    FEATURES.clear()
    ctx = EvalContext(run_dir=run, device=device, dtype=dtype, cache_dir=cache,
                      models={"clip": str(clip_dir), "dino": str(dino_dir)})
    evaluators = [ClipImage(batch_size=batch), ClipText(batch_size=batch), Dino(batch_size=batch)]
    scores = {}
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for concept, items, preds in data:
        for ev in evaluators:
            for s in ev.score(concept, items, preds, ctx):
                if s.failed is not None:
                    raise RuntimeError(f"{ev.name} {s.id}: {s.failed}")
                scores[(ev.name, s.id)] = s.score
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, scores, [ev.environment() for ev in evaluators]


@torch.inference_mode()
def naive(data, run: Path, clip, dino, device: str):
    """The per-image loop of the reference scripts (batch of one, references re-embedded every time)."""
    norm = torch.nn.functional.normalize
    dm = dino.model

    def clip_image(path):
        return norm(clip.encode_pixels(clip.preprocess(Image.open(path).convert("RGB")).unsqueeze(0)), dim=-1)

    def dino_image(path):
        x = dino.preprocess(Image.open(path).convert("RGB")).unsqueeze(0).to(device, dino.dtype)
        return norm(dm(pixel_values=x).last_hidden_state[:, 0].float(), dim=-1)

    scores = {}
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for concept, items, preds in data:
        for item in items:
            text = item.prompt.replace("<sks>", concept.class_noun)
            for k, rel in enumerate(preds[item.id].images):
                sid = f"{item.id}#{k}"
                g = clip_image(run / rel)
                sims = [float(g @ clip_image(r).T) for r in concept.train_images]
                scores[("clip_i", sid)] = sum(sims) / len(sims)
                t = norm(clip.encode_texts([text]), dim=-1)
                scores[("clip_t", sid)] = float(g @ t.T)
                d = dino_image(run / rel)
                sims = [float(d @ dino_image(r).T) for r in concept.train_images]
                scores[("dino", sid)] = sum(sims) / len(sims)
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, scores


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-gen", type=int, default=100, help="generated images per concept (100: minutes on 2 cores)")
    ap.add_argument("--n-ref", type=int, default=5, help="reference images per concept")
    ap.add_argument("--n-concepts", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--clip", choices=("open_clip", "hf"), default="open_clip", help="CLIP folder format")
    ap.add_argument("--clip-geometry", choices=sorted(HF_CLIP_GEOMETRY), default="vit-b-32",
                    help="transformers CLIP size (--clip hf); open_clip is always ViT-B/32")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where models and images go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    from unifybench.models.encoders.clip import get_clip
    from unifybench.models.encoders.dino import get_dino
    work = Path(tempfile.mkdtemp(prefix="eval-bench-", dir=args.work_dir))
    try:
        t = time.perf_counter()
        clip_dir, dino_dir = build_models(work, args.clip, args.clip_geometry)
        run, data = build_data(work, args.n_concepts, args.n_gen, args.n_ref)
        clip = get_clip(clip_dir, device=args.device, dtype=args.dtype)
        dino = get_dino(dino_dir, device=args.device, dtype=args.dtype)
        setup_s = time.perf_counter() - t
        cache = work / "cache"
        t = time.perf_counter()
        clip.fingerprint(cache), dino.fingerprint(cache)     # weight hashing: once per file, memoised on disk
        hash_s = time.perf_counter() - t
        n_images = sum(len(p.images) for _, _, preds in data for p in preds.values())
        n_texts = len({i.prompt for _, items, _ in data for i in items})
        t_ours, c_ours, s_ours, env = ours(data, run, clip_dir, dino_dir, args.device, args.dtype, cache, args.batch_size)
        t_naive, c_naive, s_naive = naive(data, run, clip, dino, args.device)
        assert s_ours.keys() == s_naive.keys(), "the two sides scored different samples"
        diffs = {m: max(abs(s_ours[k] - s_naive[k]) for k in s_ours if k[0] == m) for m in ("clip_i", "clip_t", "dino")}
        result = {
            "device": args.device, "dtype": args.dtype, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "clip": f"{args.clip}:{args.clip_geometry if args.clip == 'hf' else 'ViT-B-32'}",
            "models": {"clip": env[0]["backbone"], "dino": env[2]["backbone"]},
            "concepts": args.n_concepts, "generated_images": n_images, "reference_images_per_concept": args.n_ref,
            "distinct_prompts": n_texts, "ours_s": round(t_ours, 3), "naive_s": round(t_naive, 3),
            "ours_images_per_s": round(n_images / t_ours, 3), "naive_images_per_s": round(n_images / t_naive, 3),
            "ours_cpu_s": round(c_ours, 3), "naive_cpu_s": round(c_naive, 3),
            "speedup": round(t_naive / t_ours, 2), "speedup_cpu_time": round(c_naive / c_ours, 2), "speedup_with_weight_hashing": round(t_naive / (t_ours + hash_s), 2),
            "weight_hashing_s": round(hash_s, 3), "setup_s": round(setup_s, 1),
            "max_abs_diff": {m: float(f"{v:.3g}") for m, v in diffs.items()},
            "max_abs_diff_all": float(f"{max(diffs.values()):.3g}"),
        }
        clip_name = "open_clip ViT-B/32" if args.clip == "open_clip" else f"transformers CLIP {args.clip_geometry}"
        print(f"models: {clip_name} + DINO ViT-S/16, random weights, full shapes; device {args.device}, "
              f"dtype {args.dtype}, {result['torch_threads']} torch threads on {result['cpu_count']} CPUs")
        print(f"data: {args.n_concepts} concept(s) x {args.n_gen} generated + {args.n_ref} reference images, "
              f"{n_texts} distinct prompts")
        print(f"ours : {n_images} images in {t_ours:8.2f} s  = {n_images / t_ours:7.2f} images/s  "
              f"(CLIP-I + CLIP-T + DINO; + {hash_s:.2f} s weight hashing once)")
        print(f"naive: {n_images} images in {t_naive:8.2f} s  = {n_images / t_naive:7.2f} images/s")
        print(f"speedup: {t_naive / t_ours:.2f}x wall clock ({t_naive / (t_ours + hash_s):.2f}x counting the weight "
              f"hashing), {c_naive / c_ours:.2f}x in process CPU time ({c_ours:.1f} s vs {c_naive:.1f} s)")
        print("max |ours - naive| per score: " + ", ".join(f"{m} {v:.2e}" for m, v in diffs.items()) +
              ("   (float32: must be < 1e-5)" if args.dtype in ("float32", "fp32") else ""))
        print(json.dumps(result))
        return result
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
