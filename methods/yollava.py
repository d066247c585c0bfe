"""Yo'LLaVA (Nguyen et al., NeurIPS 2024): a personalized LLaVA through learnable prompt tokens.

A concept is a new identifier token `<sks>` plus k latent tokens `<token0>..<token{k-1}>` (added to the
vocabulary once at load; LLaVA has no reserved rows). The personalized prompt `<sks> is <token0>...<token15>.`
opens the user turn, after the image. Training data (loss on the answer and its closing `</s>` only):
recognition positives (the training photos, yes-answers), hard negatives (the local pool ranked by CLIP
similarity to the training photos, most similar first: no-answers), random negatives (the benchmark's random
images), and text-only QA about the concept without the image. Trained: the input-embedding rows of all new
tokens and the output-head row of the identifier only (the paper); preset `code` trains the head rows of
all new tokens (the released code). AdamW lr 1e-3, batch 1, 15 epochs (the released train.sh).

Deviations, on purpose: the answer is followed by a supervised `</s>` (the released code supervises no end
token, so greedy answers never stop); the new rows start from a seeded draw around the base rows' statistics
(the code's HF default resize draw depends on the transformers version).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from unifybench.data.schema import MC, PLACEHOLDER, REC, TEXT_QA, VQA, Benchmark, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.methods.soft_prompt import SoftPromptMethod
from unifybench.models import torch_dtype
from unifybench.progress import maybe_task
from unifybench import trainlog
from unifybench.prompts import NO, QUESTIONS, YES, question_text
from unifybench.settings import positive
from unifybench.training import Sample, collate, sequence_loss


PHI_MISSING = ("yollava preset phi needs a LLaVA checkpoint whose language model is Phi-1.5: "
               "pass --model llava=PATH")

@dataclass
class YoLLaVAConfig:
    """Defaults are the paper's and the released train.sh's (k=16, lr 1e-3, batch 1, 15 epochs)."""

    backbone: str = "llava-hf/llava-1.5-13b-hf"  # "13b", "7b", "tiny", "tiny-phi", a folder or cached hub id
    language_model: str = "any"                 # "phi": require a Phi language model (Yo'LLaVA(Phi-1.5) row)
    num_tokens: int = 16                        # k latent tokens
    identifier: str = "<sks>"                   # the new token that names the concept in prompts
    latent_format: str = "<token{}>"            # names of the k latent tokens ({} is 0..k-1)
    head_rows: str = "identifier"               # output-head rows trained: "identifier" (paper) | "all" (code)
    system_prompt: bool = True                  # the llava_v1 system line before "USER:"
    lr: float = positive(1e-3)                  # AdamW learning rate of the concept tokens
    weight_decay: float = 1e-2                  # AdamW weight decay
    adam_eps: float = positive(1e-8)            # AdamW epsilon
    batch_size: int = positive(1)               # training samples per optimizer step
    epochs: int = positive(15)                  # passes over the training samples
    n_train_images: int = 5                     # training photos used (sorted by name)
    n_recognition_positives: int = 75           # ~15 turns per photo for 5 photos
    n_hard_negatives: int = 100                 # the top of the CLIP-ranked pool
    n_random_negatives: int = 100               # the benchmark's random images
    text_qa_repeats: int = 1                    # each training conversation this many times (without the image)
    pool: str | None = None                     # folder or list file; None: random images + other concepts' photos
    retrieval_clip: str | None = None           # CLIP checkpoint for ranking; None: --model clip=, tiny when tiny
    hflip: bool = True                          # random horizontal flip of training photos (p = 0.5)
    max_new_tokens: int = positive(30)          # answers, greedy


class YoLLaVA(SoftPromptMethod):
    name = "yollava"
    tasks = frozenset({REC, VQA, TEXT_QA, MC})
    config_cls = YoLLaVAConfig
    presets = {
        # The embedded default: random tiny LLaVA + tiny CLIP, a few epochs over a few samples.
        "tiny": dict(backbone="tiny", epochs=3, lr=3e-2, batch_size=2, n_train_images=3, n_recognition_positives=6,
                     n_hard_negatives=3, n_random_negatives=3, max_new_tokens=8),
        # What the released code does: the output-head rows of all k+1 new tokens are trained.
        "code": dict(head_rows="all"),
        # UniCTokens Table 1's Yo'LLaVA(Phi-1.5): a LLaVA whose language model is Phi-1.5 (--model llava=PATH).
        "phi": dict(language_model="phi"),
        # Yo'LLaVA's ablations: without retrieved hard negatives; k latent tokens; n training photos.
        "no-hard-negatives": dict(n_hard_negatives=0),
        **{f"k-{k}": dict(num_tokens=k) for k in (0, 4, 8, 32)},
        **{f"n-{n}": dict(n_train_images=n, n_recognition_positives=15 * n) for n in (1, 3, 7, 10)},
        "tiny-phi": dict(backbone="tiny-phi", language_model="phi", epochs=3, lr=3e-2, batch_size=2,
                         n_train_images=3, n_recognition_positives=6, n_hard_negatives=3, n_random_negatives=3,
                         max_new_tokens=8),
    }

    # --- setup ---
    def setup(self) -> None:
        from unifybench.models.llava.backbone import LlavaBackbone
        from unifybench.models.weights import resolve
        cfg = self.config
        if cfg.head_rows not in ("all", "identifier"):
            raise UserError(f"yollava: head_rows must be 'identifier' or 'all', not {cfg.head_rows!r}")
        if cfg.language_model not in ("any", "phi"):
            raise UserError(f"yollava: language_model must be 'any' or 'phi', not {cfg.language_model!r}")
        if self._phi_unset():
            raise UserError(PHI_MISSING)
        path = resolve("llava", cfg.backbone, self.ctx)
        dtype = torch_dtype(self.ctx.dtype)
        self.token_names = [cfg.identifier] + [cfg.latent_format.format(i) for i in range(cfg.num_tokens)]
        self.backbone = LlavaBackbone.load(path, device=self.ctx.device, dtype=dtype, new_tokens=self.token_names,
                                           seed=self.ctx.seed)
        text_type = self.backbone.model.config.text_config.model_type
        if cfg.language_model == "phi" and text_type != "phi":
            raise UserError(f"{path}: the language model is {text_type!r}, preset phi expects 'phi'")
        self.token_ids = [self.backbone.token_id(n) for n in self.token_names]
        self.sks = self.token_ids[0]
        self.head_ids = self.token_ids if cfg.head_rows == "all" else [self.sks]
        self._pixels: dict[tuple[str, bool], torch.Tensor] = {}
        self._clip = None
        if cfg.n_hard_negatives > 0:
            self._retrieval_clip()  # loaded now so its weights are hashed into results.json

    def needs(self, concepts) -> list:
        from unifybench import needs
        from unifybench.retrieval import retrieval_clip_need
        llava = needs.weights("llava", self.config.backbone, self.ctx, f"method {self.name}")
        if self._phi_unset():
            llava = needs.absent(llava.kind, llava.what, PHI_MISSING)
        return [llava] + ([retrieval_clip_need(*self._clip_args())] if self.config.n_hard_negatives > 0 else [])

    def _phi_unset(self) -> bool:
        """Preset phi names no checkpoint of its own: the user must point --model llava= at one."""
        from unifybench.models.weights import is_tiny, override
        cfg = self.config
        return cfg.language_model == "phi" and not override(self.ctx, "llava") and not is_tiny(cfg.backbone)

    def model_files(self) -> dict[str, Path]:
        files = {f"llava/{p.name}": p for p in self.backbone.weight_files()}
        if self._clip is not None:
            files.update({f"retrieval_clip/{Path(p).name}": Path(p) for p in self._clip.files})
        return files

    # --- prompt pieces ---
    def personalized_prompt(self) -> str:
        """`<sks> is <token0>...<token{k-1}>.` (latent tokens concatenated, a trailing period)."""
        return f"{self.token_names[0]} is {''.join(self.token_names[1:])}."

    def _user(self, question: str) -> str:
        # The benchmark writes the concept as PLACEHOLDER; our identifier token may have another name.
        return f"{self.personalized_prompt()} {question.replace(PLACEHOLDER, self.token_names[0])}"

    def prompt_ids(self, question: str, with_image: bool) -> list[int]:
        from unifybench.models.llava.backbone import SYSTEM
        return self.backbone.prompt_ids(self._user(question), n_images=int(with_image),
                                        system=SYSTEM if self.config.system_prompt else None)

    def _pixel(self, path: Path, flip: bool = False) -> torch.Tensor:
        key = (str(path), flip)
        if key not in self._pixels:
            self._pixels[key] = self.backbone.pixel_values([self.load_rgb(path, flip)])[0]
        return self._pixels[key]

    def _sample(self, question: str, answer: str, kind: str, image: Path | None = None,
                flip: bool = False) -> "LlavaSample":
        b = self.backbone
        prefix = self.prompt_ids(question, image is not None)
        suffix = b.encode_text(answer.replace(PLACEHOLDER, self.token_names[0])) + [b.eos_id]
        return LlavaSample(prefix + suffix, [False] * len(prefix) + [True] * len(suffix), kind, image, flip)

    # --- training data ---
    def training_samples(self, concept: Concept, benchmark: Benchmark, rng: random.Random) -> list["LlavaSample"]:
        cfg = self.config
        photos = list(concept.train_images[:cfg.n_train_images])
        if not photos:
            raise UserError(f"concept {concept.name!r} has no training images")
        flip = (lambda: rng.random() < 0.5) if cfg.hflip else (lambda: False)
        samples = []

        def rec(image: Path, yes: bool) -> LlavaSample:
            return self._sample(rng.choice(QUESTIONS), rng.choice(YES if yes else NO), "rec_positive" if yes
                                else "rec_negative", image, flip())

        for i in range(cfg.n_recognition_positives):
            samples.append(rec(photos[i % len(photos)], True))
        hard = self._hard_negatives(concept, benchmark)
        for path in hard:
            samples.append(rec(path, False))
        taken = set(hard)
        randoms = [p for p in benchmark.random_images() if p not in taken]
        for path in randoms[:cfg.n_random_negatives]:
            samples.append(self._sample(rng.choice(QUESTIONS), rng.choice(NO), "rec_random", path, flip()))
        for _ in range(cfg.text_qa_repeats):
            for question, answer in benchmark.train_conversations(concept):
                samples.append(self._sample(question, answer, "text_qa"))   # without the image (the paper)
        return samples

    def _hard_negatives(self, concept: Concept, benchmark: Benchmark) -> list[Path]:
        """The pool's images most similar to the training photos (CLIP cosine to their mean, descending)."""
        from unifybench.retrieval import list_pool, rank_pool
        cfg = self.config
        if cfg.n_hard_negatives <= 0:
            return []
        if cfg.pool:
            pool = list_pool(cfg.pool)
        else:
            own = set(concept.train_images) | set(concept.test_images)
            pool = list(benchmark.random_images()) + [p for c in benchmark.concepts() if c.name != concept.name
                                                      for p in c.train_images if p not in own]
        ranked = rank_pool(self._retrieval_clip(), list(concept.train_images), pool, self.ctx.cache_dir / "embeddings")
        return [p for p, _ in ranked[:cfg.n_hard_negatives]]

    def _clip_args(self) -> tuple:
        from unifybench.models.weights import is_tiny
        tiny = self.ctx.tiny or is_tiny(self.config.backbone)
        return self.config.retrieval_clip, self.ctx, tiny, "yollava", "rank hard negatives"

    def _retrieval_clip(self):
        if self._clip is None:
            from unifybench.retrieval import retrieval_clip
            self._clip = retrieval_clip(*self._clip_args())
        return self._clip

    # --- training ---
    def train(self, params: list[torch.nn.Parameter], samples: list["LlavaSample"], generator: torch.Generator,
              description: str) -> list[float]:
        """AdamW over `params` only, loss on answers; returns the mean loss of each epoch."""
        cfg = self.config
        b = self.backbone
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps,
                                      betas=(0.9, 0.999))
        steps = (len(samples) + cfg.batch_size - 1) // cfg.batch_size
        losses = []
        with maybe_task(self.ctx.progress, description, steps * cfg.epochs) as advance:
            for _ in range(cfg.epochs):
                order = torch.randperm(len(samples), generator=generator).tolist()
                total, count = 0.0, 0
                for start in range(0, len(order), cfg.batch_size):
                    batch = [samples[i] for i in order[start:start + cfg.batch_size]]
                    ids, mask, targets = collate(batch, b.pad_id, b.device)
                    images = [self._pixel(s.image, s.flip) for s in batch if s.image is not None]
                    px = torch.stack(images) if images else None
                    loss = sequence_loss(_WithPixels(b, px), ids, mask, targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach())
                    count += 1
                    trainlog.step(float(loss.detach()), description)
                    advance()
                losses.append(total / max(count, 1))
                trainlog.epoch(losses[-1], description)
        return losses

    # --- prediction ---
    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        items = [i for i in items if i.task in self.tasks]
        preds = []
        with torch.no_grad():
            with maybe_task(self.ctx.progress, f"answering {concept.name}", len(items)) as advance:
                for item in items:
                    preds.append(self._answer(item))
                    advance()
        return preds

    def _answer(self, item: Item) -> Prediction:
        b = self.backbone
        with_image = item.image is not None and item.task != TEXT_QA
        ids = torch.tensor([self.prompt_ids(question_text(item), with_image)], device=b.device)
        px = self._pixel(item.image)[None] if with_image else None
        out = b.generate_text(ids, max_new_tokens=self.config.max_new_tokens, pixel_values=px)
        text = b.decode([t for t in out if t not in set(self.token_ids[1:])])
        return Prediction(item.id, item.concept, item.task, item.prompt, text=text)


@dataclass
class LlavaSample(Sample):
    """A training sequence and the photo (if any) whose pixels fill its `<image>` placeholder run."""

    image: Path | None = None
    flip: bool = False


class _WithPixels:
    """A backbone view whose forward adds the batch's pixel values (for `training.sequence_loss`)."""

    def __init__(self, backbone, pixel_values):
        self.backbone = backbone
        self.pixel_values = pixel_values

    def forward_hidden(self, input_ids, attention_mask=None):
        return self.backbone.forward_hidden(input_ids, attention_mask=attention_mask, pixel_values=self.pixel_values)

    def logits(self, hidden):
        return self.backbone.logits(hidden)
