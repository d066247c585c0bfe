"""The two jobs the fault-injection suite (tests/test_fault_injection.py) runs, in-process as its reference and
in subprocesses that it kills with SIGKILL.

* ``pipeline``: ``unifybench.run`` of :class:`Painter` (a user's own Method subclass: a real, small method, so a
  run takes seconds, not the minutes of a tiny backbone) on the bundled mini benchmark, scored by
  recognition, judge_qa and t2i_score against a judge server. Everything below the method is the product's:
  the runner, its unit keys and markers, the run lock, the work queue, scoring, the judge client and its cache.
* ``judge``: judge_qa and t2i_score scoring fixed answers and images through ``unifybench.scoring.score`` with
  short timeouts (:data:`FAST`): the command line keeps the papers' 60 s timeout, too long for a hang test.

``python -c "import fault_injection; fault_injection.main()" pipeline|judge OUT CACHE BASE_URL`` (with this
folder on PYTHONPATH, so the class is ``fault_injection.Painter`` in every process, as in the reference).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from unifybench.data.schema import KNOWLEDGE_GEN, REC, TEXT_QA, VQA, Prediction
from unifybench.methods.base import Method

JUDGE_MODEL = "fake-judge"
CONCEPTS = ["dog", "cat"]
LIMIT = 3                              # items per task and concept in the pipeline
EVALUATORS = ["recognition", "judge_qa", "t2i_score"]
# The judge job's evaluators: a hang costs 0.4 s, not 60; one worker, so that requests arrive in item order and
# a rotating fault server (judge_server.FakeJudge(rotate=...)) gives each one the same faults in every run.
FAST = {"timeout": 0.4, "backoff": 0.01, "max_retries": 4, "workers": 1}


@dataclass
class PainterConfig:
    steps: int = 16
    lr: float = 0.3
    noise: float = 0.05
    # Pacing only (no number depends on them): each step and each image takes this long, so that a kill
    # aimed at "the 5th step" or "the 3rd image" lands inside that stage on a busy machine.
    step_seconds: float = 0.03
    image_seconds: float = 0.06


class Painter(Method):
    """Learns a concept's colour (the mean RGB of its training photos) by noisy SGD from a random start; answers
    recognition by colour distance, questions with a random share of the reference's words, and paints one
    flat image per requested image, red, green or blue as torch's RNG draws it. Every output depends on the
    seeds the runner sets before fit and before predict, and on the saved artifact: what a resume must redo
    exactly."""

    name = "painter"
    tasks = frozenset({REC, VQA, TEXT_QA, KNOWLEDGE_GEN})
    config_cls = PainterConfig

    def fit(self, concept, benchmark, out_dir):
        import torch
        from safetensors.torch import save_file

        from unifybench import trainlog
        target = torch.stack([_mean_rgb(p) for p in concept.train_images]).mean(0)
        colour = torch.randn(3).requires_grad_()
        for _ in range(self.config.steps):   # plain SGD (torch.optim would import torch._dynamo: seconds)
            loss = ((colour - target - self.config.noise * torch.randn(3)) ** 2).mean()
            (grad,) = torch.autograd.grad(loss, colour)
            with torch.no_grad():
                colour -= self.config.lr * grad
            trainlog.step(loss.item())
            time.sleep(self.config.step_seconds)
        path = Path(out_dir) / "colour.safetensors"
        save_file({"colour": colour.detach().clone()}, str(path))
        return path

    def load_artifact(self, concept, path):
        from safetensors.torch import load_file
        self.colour = load_file(str(path))["colour"]

    def predict(self, concept, items, out_dir):
        import torch
        from PIL import Image
        out = []
        for item in items:
            p = Prediction(item.id, item.concept, item.task, item.prompt)
            if item.task == REC:
                near = float(torch.exp(-4 * (_mean_rgb(item.image) - self.colour).abs().sum()))
                p.text = "Yes" if float(torch.rand(1)) < near else "No"
            elif item.task in (VQA, TEXT_QA):
                words = (item.answer or "").split()
                keep = int(torch.randint(0, len(words) + 1, (1,)))
                p.text = " ".join(words[:keep]) or "I cannot tell."
            else:
                folder = Path(out_dir) / "images"
                folder.mkdir(parents=True, exist_ok=True)
                for k in range(item.n_images):
                    rgb = [(230, 20, 20), (20, 230, 20), (20, 20, 230)][int(torch.randint(0, 3, (1,)))]
                    path = folder / f"{item.id.rsplit('/', 1)[-1]}_{k}.png"
                    Image.new("RGB", (8, 8), rgb).save(path)
                    p.images.append(str(path))
                    time.sleep(self.config.image_seconds)
            out.append(p)
        return out


def _mean_rgb(path):
    import torch
    from PIL import Image
    with Image.open(path) as im:
        small = im.convert("RGB").resize((8, 8))
    return torch.tensor(list(small.tobytes()), dtype=torch.float32).view(-1, 3).mean(0) / 255


def run_pipeline(out: Path, cache: Path, base_url: str):
    import unifybench
    return unifybench.run(method=Painter, concepts=CONCEPTS, evaluators=EVALUATORS, limit=LIMIT,
                          output_dir=out, cache_dir=cache, judge_base_url=base_url, judge_model=JUDGE_MODEL,
                          no_progress=True)


def judge_answers():
    """(benchmark, concepts, predictions, image files to paint) of the judge job: every VQA and text QA item
    of the first concept with a deterministic answer (none, half or all of the reference's words), and its
    first knowledge_gen item with 4 images: 14 judge requests, 2 for each fault of a 7-entry rotation."""
    from unifybench.data.unifybench import UnifyBenchMini
    bench = UnifyBenchMini()
    concept = bench.concept(CONCEPTS[0])
    preds, paint = [], {}
    drawn = False
    for n, item in enumerate(bench.items(concept)):
        p = Prediction(item.id, item.concept, item.task, item.prompt)
        if item.task in (VQA, TEXT_QA):
            words = item.answer.split()
            p.text = " ".join(words[: (n % 3) * len(words) // 2]) or "No idea."
        elif item.task == KNOWLEDGE_GEN and not drawn:
            drawn = True
            for k in range(4):
                rel = f"img/{item.id.rsplit('/', 1)[-1]}_{k}.png"
                paint[rel] = [(230, 20, 20), (20, 230, 20), (20, 20, 230)][(n + k) % 3]
                p.images.append(rel)
        else:
            continue
        preds.append(p)
    return bench, [concept], {concept.name: preds}, paint


def run_judge(out: Path, cache: Path, base_url: str) -> dict:
    from PIL import Image

    from unifybench.evaluators.judge_qa import JudgeQA
    from unifybench.evaluators.knowledge import KnowledgeT2I
    from unifybench.runspec import RunSpec
    from unifybench.scoring import score
    from unifybench.store import write_json
    bench, concepts, preds, paint = judge_answers()
    for rel, rgb in paint.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (out / rel).exists():
            im = Image.new("RGB", (8, 8), rgb)
            im.putpixel((7, 7), (int(rel[-5]),) * 3)   # 4 distinct images (identical ones are asked once)
            im.save(out / rel)
    spec = RunSpec(method="predictions", output_dir=out, cache_dir=cache, seed=0, judge_base_url=base_url,
                   judge_model=JUDGE_MODEL)
    evaluators = [JudgeQA(**FAST), KnowledgeT2I(**FAST)]
    asked = {c: {p.id for p in ps} for c, ps in preds.items()}   # the other items: not asked, not missing
    results = score(bench, concepts, preds, evaluators, out, spec, asked=asked)
    doc = {"results": results, "judge": {e.name: e.environment()["judge"] for e in evaluators}}
    write_json(out / "results.json", doc)
    return doc


def main() -> None:
    job, out, cache, base_url = sys.argv[1:5]
    {"pipeline": run_pipeline, "judge": run_judge}[job](Path(out), Path(cache), base_url)
    print(json.dumps({"done": job}))
