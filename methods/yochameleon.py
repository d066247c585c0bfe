"""Yo'Chameleon (Nguyen et al., CVPR 2025): personalized understanding and generation on Chameleon/Anole.

A concept is an identifier `<sks>` plus k generation tokens `<g>` and k understanding tokens `<u>`;
the personalized prompt is `<sks> is <g1..gk><u1..uk>.`. With self-prompting every answer begins with
the token set of its task: understanding answers with `<u1..uk>`, image answers with `<g..>` (the
reference code never trains the `<g>` prefix for images; the paper does, and so do we). Soft
positives: pool images ranked by CLIP similarity to the training images, the top N kept, and more
generation tokens for more similar ranks; the real images get all k. Loss on answer spans only.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from unifybench.data.schema import (GEN, KNOWLEDGE_GEN, PLACEHOLDER, REC, TEXT_QA, VQA, Benchmark, Concept,
                                    Item, Prediction)
from unifybench.environment import derive_seed
from unifybench.errors import UserError
from unifybench.images import save_images
from unifybench.methods.base import generation_items
from unifybench.methods.soft_prompt import SoftPromptMethod
from unifybench.models import torch_dtype
from unifybench.progress import maybe_task
from unifybench.prompts import NO, QUESTIONS, YES
from unifybench.settings import positive, within
from unifybench.training import OptimConfig, Sample, train_tokens

# Our own wording of the recognition templates (the reference ones are not reused).
GEN_PROMPT = "A photo of <sks>."


@dataclass
class YoChameleonConfig:
    """Defaults are the paper's (32 tokens, 16 per task, ~1000 soft positives; lr 1e-3, batch 4, 16 epochs)."""

    backbone: str = "leloy/Anole-7b-v0.1-hf"   # local folder or a snapshot in the HF cache; "tiny"
    num_tokens: int = positive(16)             # k, per task
    identifier: str = "<reserved16200>"        # reserved Chameleon token used as <sks>
    first_latent: int = 16201                  # <g> = <reserved16201..>, then <u>
    head_rows: str = "all"                     # output-head rows trained: "all" new tokens | "identifier"
    self_prompting: bool = True                # answers start with their task's token set
    lr: float = positive(1e-3)                 # AdamW learning rate of the concept tokens
    weight_decay: float = 1e-4                 # AdamW weight decay
    adam_eps: float = positive(1e-6)           # AdamW epsilon
    batch_size: int = positive(4)              # training samples per step
    epochs: int = positive(16)                 # passes over the training samples
    length_buckets: int = 0                    # > 0: batches of similar length (less padding; other batches)
    n_train_images: int = 5                    # training photos used (sorted by name; 4-5 in the paper)
    n_recognition_positives: int = 200         # positive recognition samples (photos repeated)
    n_hard_negatives: int = 100                # pool images ranked right after the soft positives
    n_random_negatives: int = 100              # the benchmark's random images
    n_soft_positives: int = 1000               # top-N pool images by CLIP similarity
    n_real_generation: int = 67                # real photos (repeated) as generation targets
    pool: str | None = None                    # folder or list file; None: random images + other concepts' photos
    retrieval_clip: str | None = None          # CLIP checkpoint for ranking; None: --model clip=, tiny when tiny
    hflip: bool = True                         # random horizontal flip of training photos (p = 0.5)
    max_new_tokens: int = positive(30)         # understanding answers, greedy
    temperature: float = positive(1.0)         # image sampling: the Anole defaults, no CFG
    top_k: int = 50                            # image sampling: top-k
    top_p: float = within(1.0, 0, 1, low_open=True)  # image sampling: nucleus
    gen_batch_size: int = positive(8)          # images per forward, across prompts (speed only: same images)
    gen_prompts_limit: int = 0                 # > 0: only the first N generation prompts per concept
    images_per_prompt: int = 0                 # > 0: overrides the benchmark's images per prompt


def load_chameleon(ctx, backbone: str):
    """The Chameleon/Anole backbone of a method setting, through the one weights resolver (`--model
    chameleon=PATH`, else the setting: a folder, a cached hub id, or "tiny")."""
    from unifybench.models.chameleon.backbone import ChameleonBackbone
    from unifybench.models.weights import resolve
    return ChameleonBackbone.load(resolve("chameleon", backbone, ctx), device=ctx.device, dtype=torch_dtype(ctx.dtype))


class ChameleonPrompting:
    """Prompt pieces and `predict` for a method that puts a concept prompt in front of Chameleon queries.

    The class using it sets `self.backbone`, `self.sks` (the identifier's id), `self.token_ids` (ids dropped
    from answers), `self._image_codes = {}` and `self._code_cache = None`, has `load_rgb` and a config with the answer/generation settings
    (max_new_tokens, temperature, top_k, top_p, gen_batch_size, gen_prompts_limit, images_per_prompt), and
    provides `personalized_prompt()`; `_generation_prefix()` is what an image answer starts with.
    """

    def _text(self, text: str) -> list[int]:
        """Encode text, with the placeholder replaced by the identifier token."""
        ids: list[int] = []
        for n, part in enumerate(text.split(PLACEHOLDER)):
            if n:
                ids.append(self.sks)
            if part:
                ids += self.backbone.encode_text(part)
        return ids

    def _image_block(self, path: Path, flip: bool = False) -> list[int]:
        """`<boi> codes <eoi>` of an image file; the frozen VQGAN codes come from the on-disk code cache."""
        key = (str(path), flip)
        if key not in self._image_codes:
            if self._code_cache is None:
                from unifybench.models.image_codes import ImageCodeCache
                b = self.backbone
                self._code_cache = ImageCodeCache.for_backbone(
                    b, lambda p, f: b.encode_images([self.load_rgb(p, f)])[0], self.ctx.cache_dir)
            codes = self._code_cache.codes(path, flip).tolist()
            self._image_codes[key] = [self.backbone.boi_id] + codes + [self.backbone.eoi_id]
        return self._image_codes[key]

    def _sample(self, human: list[int], answer: list[int], kind: str) -> Sample:
        """`<s> human <eot> answer <eot>`, loss on the answer and its closing end of turn."""
        b = self.backbone
        prefix = b.chat_ids(None, [human])
        suffix = answer + [b.eot_id]
        return Sample(prefix + suffix, [False] * len(prefix) + [True] * len(suffix), kind)

    def _generation_prefix(self) -> list[int]:
        return []

    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        preds = []
        gen_items = generation_items(items, self.tasks, self.config.gen_prompts_limit)
        text_items = [i for i in items if i.task in (REC, VQA, TEXT_QA)]
        with torch.no_grad():
            with maybe_task(self.ctx.progress, f"answering {concept.name}", len(text_items)) as advance:
                for item in text_items:
                    preds.append(self._answer(item))
                    advance()
            preds += self._generate_all(gen_items, out_dir, concept.name)
        return preds

    def _answer(self, item: Item) -> Prediction:
        b = self.backbone
        parts = [self._text(" " + item.prompt)] + ([self._image_block(item.image)] if item.image is not None else [])
        ids = torch.tensor([b.chat_ids(self.personalized_prompt(), parts)], device=b.model.device)
        out = b.generate_text(ids, max_new_tokens=self.config.max_new_tokens)
        # Drop the self-prompting tokens and any concept token before decoding the answer text.
        text = b.decode_answer(out, set(self.token_ids))
        return Prediction(item.id, item.concept, item.task, item.prompt, text=text)

    def _n_images(self, item: Item) -> int:
        return self.config.images_per_prompt or item.n_images

    def _generation_prompt(self, item: Item) -> list[int]:
        prompt = self.backbone.chat_ids(self.personalized_prompt(), [self._text(" " + item.prompt)])
        return prompt + self._generation_prefix()  # e.g. Yo'Chameleon's answer starts with its generation tokens

    def _generate_all(self, gen_items: list[Item], out_dir: Path, concept_name: str) -> list[Prediction]:
        """Every image of the concept's prompts, `gen_batch_size` images per forward across prompts.

        Each item's seed is `derive_seed(seed, "gen", item id)` and each of its images has its own stream
        (`unifybench.models.streams`), so the images are those of generating the item alone, at any batch size."""
        from unifybench.models.streams import image_generators
        b, cfg = self.backbone, self.config
        prompts, generators, owner = [], [], []
        for k, item in enumerate(gen_items):
            n = self._n_images(item)
            gen = torch.Generator(device=b.model.device).manual_seed(derive_seed(self.ctx.seed, "gen", item.id))
            prompts += [self._generation_prompt(item)] * n
            generators += image_generators(gen, n)
            owner += [k] * n
        preds = []
        with maybe_task(self.ctx.progress, f"generating {concept_name}", len(prompts)) as advance:
            codes = b.generate_image_rows(prompts, generators, temperature=cfg.temperature, top_k=cfg.top_k,
                                          top_p=cfg.top_p, batch_size=cfg.gen_batch_size)
            for k, item in enumerate(gen_items):
                mine = codes[[r for r, o in enumerate(owner) if o == k]]
                paths = save_images(b.decode_images(mine), out_dir, f"{item.task}_{k:03d}", advance)
                preds.append(Prediction(item.id, item.concept, item.task, item.prompt, images=paths))
        return preds


class YoChameleon(ChameleonPrompting, SoftPromptMethod):
    name = "yochameleon"
    tasks = frozenset({REC, VQA, TEXT_QA, GEN, KNOWLEDGE_GEN})
    config_cls = YoChameleonConfig
    presets = {
        # The embedded default: random tiny Chameleon + tiny CLIP, a few steps, a few images; 4 tokens per task
        # and 16 new tokens, so that an answer has text after its self-prompting prefix (tiny text is non-empty).
        "tiny": dict(backbone="tiny", epochs=3, lr=3e-2, n_recognition_positives=6, n_hard_negatives=3,
                     n_random_negatives=3, n_soft_positives=6, n_real_generation=3, n_train_images=3,
                     gen_prompts_limit=1, images_per_prompt=2, num_tokens=4, max_new_tokens=16),
        # What the released code does: lm_head rows restored for the identifier only at test, no <g> prefix.
        "code": dict(head_rows="identifier", self_prompting=False),
        # Ablations (supp. Fig. 2, main Sec. 3.3): soft-positive counts; positive images only (no retrieved
        # images at all); two token sets concatenated without self-prompting.
        **{f"soft-{n}": dict(n_soft_positives=n) for n in (0, 200, 500)},
        "positive-only": dict(n_soft_positives=0, n_hard_negatives=0),
        "separated": dict(self_prompting=False),
    }

    def setup(self) -> None:
        cfg = self.config
        self.backbone = load_chameleon(self.ctx, cfg.backbone)
        k = cfg.num_tokens
        names = [cfg.identifier] + [f"<reserved{cfg.first_latent + i}>" for i in range(2 * k)]
        self.token_names = names
        self.token_ids = [self.backbone.token_id(n) for n in names]
        self.sks = self.token_ids[0]
        self.g_ids = self.token_ids[1:1 + k]
        self.u_ids = self.token_ids[1 + k:]
        self.head_ids = self.token_ids if cfg.head_rows == "all" else [self.sks]
        if cfg.head_rows not in ("all", "identifier"):
            raise UserError(f"yochameleon: head_rows must be 'all' or 'identifier', not {cfg.head_rows!r}")
        self._image_codes: dict[tuple[str, bool], list[int]] = {}
        self._code_cache = None   # ImageCodeCache, made at the first image
        self._clip = None
        if self._uses_retrieval():
            self._retrieval_clip()  # loaded now so its weights are hashed into results.json

    def needs(self, concepts) -> list:
        from unifybench import needs
        from unifybench.retrieval import retrieval_clip_need
        out = [needs.weights("chameleon", self.config.backbone, self.ctx, f"method {self.name}")]
        if self._uses_retrieval():
            out.append(retrieval_clip_need(*self._clip_args()))
        return out

    def _uses_retrieval(self) -> bool:
        return self.config.n_soft_positives > 0 or self.config.n_hard_negatives > 0

    def model_files(self) -> dict[str, Path]:
        files = {f"chameleon/{p.name}": p for p in self.backbone.weight_files()}
        if self._clip is not None:
            files.update({f"retrieval_clip/{Path(p).name}": Path(p) for p in self._clip.files})
        return files

    # --- prompt pieces (token ids; `_text`, `_image_block`, `_sample` come from ChameleonPrompting) ---
    def personalized_prompt(self, g: int | None = None) -> list[int]:
        """`<sks> is <g1..gk><u1..uk>.`"""
        g_ids = self.g_ids if g is None else self.g_ids[:g]
        return [self.sks] + self.backbone.encode_text(" is ") + g_ids + self.u_ids + self.backbone.encode_text(".")

    def _generation_prefix(self) -> list[int]:
        """With self-prompting an image answer starts with the generation tokens, as trained."""
        return list(self.g_ids) if self.config.self_prompting else []

    # --- training data ---
    def training_samples(self, concept: Concept, benchmark: Benchmark, rng: random.Random) -> list[Sample]:
        cfg = self.config
        photos = list(concept.train_images[:cfg.n_train_images])
        if not photos:
            raise UserError(f"concept {concept.name!r} has no training images")
        u = self.u_ids if cfg.self_prompting else []
        prompt = self.personalized_prompt()
        flip = (lambda: rng.random() < 0.5) if cfg.hflip else (lambda: False)
        samples = []

        def rec(image: Path, yes: bool) -> Sample:
            question = self._text(" " + rng.choice(QUESTIONS))
            answer = self._text(rng.choice(YES if yes else NO))
            return self._sample(prompt + question + self._image_block(image, flip()), u + answer, "rec")

        for i in range(cfg.n_recognition_positives):
            samples.append(rec(photos[i % len(photos)], True))
        soft, hard = self._retrieve(concept, benchmark)
        for path in hard[:cfg.n_hard_negatives]:
            samples.append(rec(path, False))
        chosen = set(soft)   # once: a set per candidate made this loop quadratic
        randoms = [p for p in benchmark.random_images() if p not in chosen]
        for path in randoms[:cfg.n_random_negatives]:
            samples.append(rec(path, False))
        for question, answer in benchmark.train_conversations(concept):
            samples.append(self._sample(prompt + self._text(" " + question), u + self._text(answer), "text_qa"))
        # Generation: the real photos with all k <g> tokens, soft positives with fewer.
        gen_human = prompt + self._text(" " + GEN_PROMPT)
        for i in range(cfg.n_real_generation):
            g = self.g_ids if cfg.self_prompting else []
            samples.append(self._sample(gen_human, g + self._image_block(photos[i % len(photos)], flip()), "gen"))
        from unifybench.retrieval import allocate_tokens
        for path, n_tok in zip(soft, allocate_tokens(len(soft), cfg.num_tokens)):
            g = self.g_ids[:n_tok]
            human = self._text("A photo of ") + g + self._text(".")
            samples.append(self._sample(human, (g if cfg.self_prompting else []) + self._image_block(path, flip()),
                                        "soft_positive"))
        return samples

    def _retrieve(self, concept: Concept, benchmark: Benchmark) -> tuple[list[Path], list[Path]]:
        """(soft positives, hard negatives): the top N of the pool by CLIP similarity, then the next ones."""
        from unifybench.retrieval import list_pool, rank_pool
        cfg = self.config
        if cfg.n_soft_positives <= 0 and cfg.n_hard_negatives <= 0:
            return [], []
        if cfg.pool:
            pool = list_pool(cfg.pool)
        else:
            own = set(concept.train_images) | set(concept.test_images)
            pool = list(benchmark.random_images()) + [p for c in benchmark.concepts() if c.name != concept.name
                                                      for p in c.train_images if p not in own]
        ranked = [p for p, _ in rank_pool(self._retrieval_clip(), list(concept.train_images), pool,
                                          self.ctx.cache_dir / "embeddings")]
        soft = ranked[:cfg.n_soft_positives]
        return soft, ranked[len(soft):len(soft) + cfg.n_hard_negatives]

    def _clip_args(self) -> tuple:
        from unifybench.models.weights import is_tiny
        tiny = self.ctx.tiny or is_tiny(self.config.backbone)
        return self.config.retrieval_clip, self.ctx, tiny, "yochameleon", "rank soft positives"

    def _retrieval_clip(self):
        if self._clip is None:
            from unifybench.retrieval import retrieval_clip
            self._clip = retrieval_clip(*self._clip_args())
        return self._clip

    # --- fit / load / predict ---
    def train(self, params: list[torch.nn.Parameter], samples: list[Sample], generator: torch.Generator,
              description: str) -> list[float]:
        cfg = self.config
        return train_tokens(self.backbone, params, samples,
                            OptimConfig(cfg.lr, cfg.weight_decay, cfg.adam_eps, cfg.batch_size, cfg.epochs,
                                        length_buckets=cfg.length_buckets),
                            generator, self.ctx.progress, description)
