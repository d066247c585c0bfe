"""Scale rehearsal: the whole `unifybench run` pipeline at real data sizes on the tiny backbone, per stage.

A synthetic benchmark in the UnifyBench layout (N concepts with the real item counts: 5 training and 5 test
photos, 10 VQA, 10 text QA, 5 knowledge prompts; 100 DreamBench-style prompts x 4 images; 100 random images)
and a retrieval pool of P images are written, then Yo'Chameleon runs with the paper's data settings
(1000 soft positives, 100 hard + 100 random negatives, 200 recognition positives, 67 real generation
targets, batch 4) through the real runner on a tiny random Chameleon + tiny CLIP. Every stage is timed by
wrapping the function that does it: its self time (a stage nested in another counts once) and the peak RSS:

  data index, retrieval, sample building, tables, report, each evaluator       (the suite's own)
  image encoding (VQGAN), encoders (CLIP/DINO forwards), training, answering, generation   (the models')

The model's work is cut by default so 20 concepts fit 30 minutes on 2 cores: 1 epoch (`--epochs 16`: the
paper's) and a tiny Chameleon with a 64-token image grid (`--image-tokens 1024`: the real 32x32 grid); every
count the suite handles stays the paper's. Several sizes give each stage's growth as a fitted exponent (log
time vs log size), beside the growth of the work itself (answers, scored items):

  python bench/scale.py                              # 20 concepts, 10k pool (~22 min on 2 cores)
  python bench/scale.py --concepts 1,5,20 --pool 10000  # growth in concepts
  python bench/scale.py --concepts 1 --pool 1000,10000,100000   # growth in the pool (100k: ~7 min more)
  python bench/scale.py --quick                      # small sizes, a test runs this
Each size runs cold: its own cache folder (CLIP embeddings, image codes), so no point reads another's work.
Tiny models: the numbers time the pipeline and say nothing about any method.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

# The models' own work (every other stage is the suite's): the backbone's VQGAN, the concept-token fit,
# decoding; the CLIP/DINO forwards of retrieval and scoring ("encoders", counted out of the stage calling them).
MODEL_STAGES = ("image encoding", "training", "answering", "generation", "encoders")


# --------------------------------------------------------------------------------------------- the data

def _picture(seed: int, side: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    img = np.stack([0.5 + 0.4 * np.sin(6 * (a * x + b * y) + 3 * f) for a, b, f in rng.uniform(-1, 1, (3, 3))], -1)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def write_benchmark(root: Path, n_concepts: int, n_prompts: int, n_random: int = 100, side: int = 64) -> None:
    """The UnifyBench folder layout with the real per-concept item counts (texts are synthetic)."""
    names = [f"c{i:02d}" for i in range(n_concepts)]
    (root / "concept" / "train").mkdir(parents=True)
    (root / "concepts_list.json").write_text(json.dumps(names))
    for k, name in enumerate(names):
        train, test = root / "concept" / "train" / name, root / "concept" / "test" / name
        train.mkdir()
        test.mkdir(parents=True)
        for i in range(5):
            _picture(1000 * k + i, side).save(train / f"{i}.png")
            _picture(1000 * k + 500 + i, side).save(test / f"{i}.png")
        kind = ("pet", "object")[k % 2]
        (train / "info.json").write_text(json.dumps({
            "class": ("dog", "mug")[k % 2], "info": f"<{name}> is concept number {k}.",
            "extra_info": [f"<{name}> likes fact {j}." for j in range(5)], "category": kind,
            "conversation_type": ("animal", "object")[k % 2], "generation_type": ("live_subject", "object")[k % 2]}))
        (train / "conversations.json").write_text(json.dumps({"0.png": [
            {"query": f"What is <{name}>?", "answer": f"<{name}> is number {k}."} for _ in range(3)]}))
        (test / "vqa.json").write_text(json.dumps([{"image": f"{i % 5}.png", "question": f"What is in photo {i}?",
                                                    "answer": "A thing."} for i in range(10)]))
        (test / "text_only.json").write_text(json.dumps([{"question": f"Tell me fact {i} about <{name}>.",
                                                          "answer": f"Fact {i}."} for i in range(10)]))
        (test / "t2i_conditions.json").write_text(json.dumps(
            {"personalized_driven_generation": [f"A photo of <{name}> showing fact {j}." for j in range(5)]}))
    (root / "random_images").mkdir()
    for i in range(n_random):
        _picture(900_000 + i, side).save(root / "random_images" / f"{i}.png")
    prompts = {t: [f"a <sks> in scene {i}" for i in range(n_prompts)] for t in ("object", "live_subject")}
    (root / "prompts_to_eval.json").write_text(json.dumps(prompts))


def write_pool(folder: Path, n: int, side: int = 32) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        _picture(i, side).save(folder / f"{i:06d}.png")


# ------------------------------------------------------------------------------------------ measuring

class Stages:
    """Self time (wall, less the stages nested inside) and peak RSS (kernel high-water mark, reset per outermost
    stage) of each named stage: retrieval inside sample building, the CLIP forwards inside retrieval, each
    count once."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak_mib: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._children: list[float] = []     # per open stage: wall time of the stages nested in it

    @contextlib.contextmanager
    def stage(self, name: str):
        outermost = not self._children
        if outermost:
            _reset_peak()
        self._children.append(0.0)
        t = time.perf_counter()
        try:
            yield
        finally:
            wall = time.perf_counter() - t
            self.seconds[name] += wall - self._children.pop()
            self.calls[name] += 1
            if self._children:
                self._children[-1] += wall
            else:
                self.peak_mib[name] = max(self.peak_mib[name], _peak_mib())

    def wrap(self, owner, attr: str, name: str):
        original = getattr(owner, attr)

        def timed(*a, **k):
            with self.stage(name):
                return original(*a, **k)
        setattr(owner, attr, timed)
        return original


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")   # resets VmHWM to the current RSS (Linux)


def _peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_once(work: Path, n_concepts: int, pool_size: int, args) -> dict:
    """One full run at (n_concepts, pool_size); returns the per-stage figures."""
    from unifybench import html_report, runner
    from unifybench.data import unifybench as ub_data
    from unifybench.methods.yochameleon import ChameleonPrompting, YoChameleon
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.encoders.clip import ClipModel
    from unifybench.models.encoders.dino import DinoModel
    from unifybench.registry import EVALUATORS
    from unifybench.runspec import RunSpec

    data, pool = work / f"data-{n_concepts}", work / f"pool-{pool_size}"
    if not data.exists():
        write_benchmark(data, n_concepts, args.prompts, args.random)
    if not pool.exists():
        t = time.perf_counter()
        write_pool(pool, pool_size)
        print(f"  (wrote a {pool_size}-image pool in {time.perf_counter() - t:.0f} s)", flush=True)
    out = work / f"run-{n_concepts}-{pool_size}"
    shutil.rmtree(out, ignore_errors=True)
    st = Stages()
    restore = []

    def wrap(owner, attr, name):
        restore.append((owner, attr, st.wrap(owner, attr, name)))

    wrap(ub_data.UnifyBench, "_load", "data index")   # the only place the benchmark's files are read
    wrap(YoChameleon, "_retrieve", "retrieval")
    wrap(YoChameleon, "training_samples", "sample building")
    wrap(ChameleonBackbone, "encode_images", "image encoding")   # the frozen VQGAN, inside sample building
    for encoder in (ClipModel, DinoModel):
        wrap(encoder, "encode_pixels", "encoders")
    wrap(ClipModel, "encode_texts", "encoders")
    wrap(YoChameleon, "train", "training")
    wrap(ChameleonPrompting, "_answer", "answering")
    wrap(ChameleonPrompting, "_generate_all", "generation")
    wrap(runner, "write_run_table", "tables")
    evaluator_names = [e.name for e in EVALUATORS.entries()
                       if e.name in ("recognition", "bleu", "clip_i", "clip_t", "dino")]
    for name in evaluator_names:
        wrap(EVALUATORS.get(name), "score", f"eval {name}")
    overrides = dict(backbone=str(args.backbone), pool=str(pool), epochs=args.epochs, n_soft_positives=args.soft,
                     n_hard_negatives=args.hard, n_random_negatives=args.random, n_recognition_positives=args.positives,
                     n_real_generation=args.real_gen,
                     n_train_images=5, gen_prompts_limit=0, images_per_prompt=0, max_new_tokens=args.max_new_tokens,
                     lr=1e-3)
    spec = RunSpec(method="yochameleon", benchmark="unifybench", data_root=str(data), overrides=overrides,
                          output_dir=out, cache_dir=work / f"cache-{n_concepts}c-{pool_size}p", tiny=True, progress=False,
                          evaluators=evaluator_names)
    t = time.perf_counter()
    try:
        doc = runner.run(spec)
        with st.stage("report"):
            from unifybench.resultsfile import load_results
            html_report.build_report(load_results(out / "results.json"), out / "report.html")
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)
    total = time.perf_counter() - t
    results = doc["results"]["unifybench"]
    return {"concepts": n_concepts, "pool": pool_size, "total_s": total, "seconds": dict(st.seconds),
            "peak_mib": dict(st.peak_mib), "calls": dict(st.calls),
            "other_s": total - sum(st.seconds.values()),
            "scored": {k: v.get("n") for k, v in results.items()}}


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two usable points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def summary(runs: list[dict]) -> str:
    stages = sorted({s for r in runs for s in r["seconds"]},
                    key=lambda s: (s in MODEL_STAGES, s.startswith("eval"), s))
    lines = []
    head = f"{'stage':<22}" + "".join(f"{str(r['concepts']) + 'c/' + str(r['pool']) + 'p':>16}" for r in runs)
    lines.append(head + f"{'exp(concepts)':>15}{'exp(pool)':>11}")
    by_pool = [r for r in runs if r["pool"] == runs[0]["pool"]]
    by_concepts = [r for r in runs if r["concepts"] == runs[0]["concepts"]]
    for s in stages + ["(runner, other)", "total"]:
        def sec(r):
            return r["total_s"] if s == "total" else r["other_s"] if s.startswith("(") else r["seconds"].get(s, 0.0)
        cells = "".join(f"{sec(r):>9.2f}s {100 * sec(r) / r['total_s']:>4.0f}%" for r in runs)
        ec = exponent([r["concepts"] for r in by_pool], [sec(r) for r in by_pool])
        ep = exponent([r["pool"] for r in by_concepts], [sec(r) for r in by_concepts])
        kind = " (model)" if s in MODEL_STAGES else ""
        lines.append(f"{s + kind:<22}{cells}{'' if ec is None else f'{ec:>15.2f}':>15}"
                     f"{'' if ep is None else f'{ep:>11.2f}':>11}")
    # The work itself, for reading the exponents above: recognition asks every concept about every concept's
    # test photos, so its items (and answering) grow as concepts squared by the benchmark's definition.
    work = {"answers": lambda r: r["calls"].get("answering", 0)} | {
        f"scored {k}": (lambda r, k=k: r["scored"].get(k) or 0) for k in runs[-1]["scored"]}
    for label, count in work.items():
        ec = exponent([r["concepts"] for r in by_pool], [count(r) for r in by_pool])
        ep = exponent([r["pool"] for r in by_concepts], [count(r) for r in by_concepts])
        lines.append(f"{'work: ' + label:<22}" + "".join(f"{count(r):>16}" for r in runs)
                     + f"{'' if ec is None else f'{ec:>15.2f}':>15}{'' if ep is None else f'{ep:>11.2f}':>11}")
    lines.append("peak RSS per stage (MiB): " + "; ".join(
        f"{r['concepts']}c/{r['pool']}p " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["peak_mib"].items()))
        for r in runs[-1:]))
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", default="20", help="comma-separated concept counts")
    ap.add_argument("--pool", default="10000", help="comma-separated pool sizes (100000: the large case)")
    ap.add_argument("--epochs", type=int, default=1, help="training epochs (the paper: 16; each is the same work again)")
    ap.add_argument("--soft", type=int, default=1000, help="soft positives per concept")
    ap.add_argument("--prompts", type=int, default=100, help="generation prompts per concept (x 4 images)")
    ap.add_argument("--max-new-tokens", type=int, default=30)
    ap.add_argument("--random", type=int, default=100, help="random images (easy negatives) of the benchmark")
    ap.add_argument("--hard", type=int, default=100, help="hard negatives per concept")
    ap.add_argument("--positives", type=int, default=200, help="recognition positives per concept")
    ap.add_argument("--real-gen", type=int, default=67, help="real photos as generation targets")
    ap.add_argument("--image-tokens", type=int, default=64, choices=(1024, 256, 64, 16),
                    help="image grid of the tiny Chameleon (1024: the real 32x32; fewer: less model work per image)")
    ap.add_argument("--quick", action="store_true", help="1-2 concepts, 20 pool images, small counts (a test; one pool size, so no pool exponent)")
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.concepts, args.pool, args.epochs, args.soft, args.prompts, args.max_new_tokens = "1,2", "20", 1, 4, 1, 2
        args.random, args.hard, args.positives, args.real_gen = 4, 2, 4, 2
    import torch
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=args.work_dir))
    from unifybench.models.chameleon.tiny import tiny_chameleon_path
    args.backbone = tiny_chameleon_path(work / "models", resolution=4 * math.isqrt(args.image_tokens))
    concepts = [int(x) for x in args.concepts.split(",")]
    pools = [int(x) for x in args.pool.split(",")]
    sizes = [(c, pools[0]) for c in concepts] + [(concepts[0], p) for p in pools[1:]]
    runs = []
    try:
        for c, p in sizes:
            print(f"run: {c} concepts, pool {p}, {args.epochs} epochs, {args.soft} soft positives, "
                  f"{args.prompts} prompts x 4 images", flush=True)
            runs.append(run_once(work, c, p, args))
            print(f"  total {runs[-1]['total_s']:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nTINY RANDOM MODELS: the figures time the pipeline and say nothing about any method.")
    print(summary(runs))
    doc = {"settings": vars(args) | {"work_dir": None, "json": None, "backbone": None}, "runs": runs}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    return doc


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
