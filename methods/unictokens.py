"""UniCTokens (NeurIPS 2025): unified concept tokens for Show-o, trained in three stages.

Tokens: `<sks>` plus K understanding/shared tokens (0..K-1), M generation tokens (K..K+M-1) and N perception
tokens (K+M..K+M+N-1); 16/8/8 by default (33 rows). Understanding prompts use `<sks>` + tokens 0..K-1 and
K+M..; generation prompts use `<sks>` + tokens 0..K+M-1 (the notes, section 3).

- Stage 1, understanding warm-up: MMU only (positive recognition, random-image negatives, conversational QA)
  with the system prompt "<sks> is <token_0..15>.\\n"; `<sks>` starts at the mean embedding of the class
  word, tokens 0..K-1 at the k-means centroids of the Show-o input embeddings of the training images'
  MAGVIT codes.
- Stage 2, generation from understanding: T2I "A photo of <token_0..23> <sks>." on the (cropped) training
  images + the stage-1 MMU data, loss 0.8 T2I + 0.2 MMU, all 1+K+M rows trained. Tokens K..K+M-1 start from
  the ArcFace embedding of the training faces for people (mean raw 512-d vector -> [M, 512/M] -> linear
  interpolation to [M, hidden]), otherwise from the stage-1 method (paper) or the old image-code rows (code).
- Stage 2 -> 3, generation as perception: MaskGIT images of the concept, the tokens still changing late in
  decoding, k-means into N centroids that initialise the perception tokens ("whitened": the released code's
  step-35 images painted white where tokens change later, re-encoded; "diff": the paper's eq. 5, k-means
  over embedding differences between two decoding steps; "full_image", "random_patch", "none": the
  Table 3 right-hand ablations).
- Stage 3, deepen understanding: recognition-only MMU with "<sks> is <token_0..15><token_24..31>.\\n" and
  T2I on the full images; only `<sks>` and the perception tokens train.

Each stage writes its own safetensors artifact (`stage1/2/3.safetensors`, `perception.safetensors`) through
ConceptTokens with a key of everything that determines it, so an interrupted fit resumes at the first stage
whose artifact is missing or stale. `stages` picks the Table 3 rows ("1", "2" = stage 2 without 1, "1,2",
"1,2,3"). The base Show-o weights never change: concept rows live in reserved ids past the vocabulary.
"""
from __future__ import annotations

import logging
import math
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from unifybench.data.schema import (GEN, KNOWLEDGE_GEN, PLACEHOLDER, REC, TEXT_QA, VQA, Benchmark, Concept,
                                    Item, Prediction)
from unifybench.environment import derive_seed
from unifybench.errors import UserError
from unifybench.images import open_rgb, save_images
from unifybench.methods.base import generation_items
from unifybench.methods.soft_prompt import SoftPromptMethod
from unifybench.models import torch_dtype
from unifybench.progress import maybe_task
from unifybench import trainlog
from unifybench.settings import fraction, positive
from unifybench.training import Sample, collate

log = logging.getLogger(__name__)

# Our own wording of the recognition templates.
REC_QUESTIONS = ("Is <sks> in this photo?", "Can you see <sks> in this image?", "Does this picture show <sks>?",
                 "Is <sks> visible in this photo?", "Do you recognize <sks> in this image?")
YES = ("Yes, <sks> is in this photo.", "Yes, I can see <sks> here.", "Yes, this is <sks>.")
NO = ("No, <sks> is not in this photo.", "No, I cannot see <sks> here.", "No, this is not <sks>.")
T2I_PROMPT = "A photo of {gen} <sks>."
PERCEPTION_PROMPT = {"person": "A photo of {gen} <sks>'s face in detail.",
                     "other": "A photo of {gen} <sks> in the middle of the photo."}
S3_INITS = ("whitened", "diff", "full_image", "random_patch", "none")
_NAME = re.compile(r"(<sks>|<token_\d+>)")


@dataclass
class UniCTokensConfig:
    """Defaults are the paper's (Table 4 and section 3); the `code` preset is the released code's values."""

    backbone: str = "showlab/show-o-512x512"   # local folder or cached hub id; "tiny" for the random tiny model
    llm: str = "microsoft/phi-1_5"             # the tokenizer + Phi config folder
    vq: str = "showlab/magvitv2"               # the MAGVIT-v2 image tokenizer folder
    num_shared: int = 16                       # K shared (understanding) tokens
    num_generation: int = 8                    # M generation tokens
    num_perception: int = 8                    # N perception tokens
    stages: str = "1,2,3"                      # Table 3: "1" | "2" (w/o 1) | "1,2" | "1,2,3"
    t2i_weight: float = 0.8                    # weight of the T2I loss when a step mixes T2I and MMU batches
    mmu_weight: float = 0.2                    # weight of the MMU (understanding) loss in such a step
    max_text_len: int = positive(128)          # T2I prompt length (129 with <|t2i|>)
    # data
    n_positive: int = 30                       # positive recognition samples (training photos cycled)
    n_negative: int = 30                       # random-image negatives
    hflip: bool = True                         # random flip, drawn once per sample (the code materialises batches once)
    train_sot: bool = False                    # code: no <|endoftext|> after <|eoi|> in training (eval has one)
    cond_dropout: float = fraction(0.1)        # probability a T2I sample trains with the empty prompt (for CFG)
    # stage 1
    s1_init: str = "images"                    # images (k-means of VQ-code embeddings) | words
    s1_lr: float = positive(1e-4)              # stage 1: AdamW learning rate
    s1_epochs: int = positive(20)              # stage 1: passes over its samples
    s1_batch: int = positive(4)                # stage 1: samples per optimizer step
    s1_weight_decay: float = 1e-4              # stage 1: AdamW weight decay
    s1_eps: float = positive(1e-6)             # stage 1: AdamW epsilon
    # stage 2
    s2_from_epoch: int = 0                     # stage-1 epoch stage 2 starts from (0 = the last); code: 15
    s2_init: str = "stage1"                    # non-person tokens: stage1 (paper) | image_rows (code)
    face_init: bool = True                     # ArcFace init for person concepts
    s2_lr: float = positive(1e-3)              # stage 2: AdamW learning rate
    s2_epochs: int = positive(20)              # stage 2: passes over its samples
    s2_batch: int = positive(1)                # stage 2: samples per optimizer step
    s2_weight_decay: float = 1e-3              # stage 2: AdamW weight decay
    s2_eps: float = positive(1e-8)             # stage 2: AdamW epsilon
    # stage 2 -> 3
    s3_init: str = "diff"                      # diff (paper eq. 5) | whitened (code) | full_image | random_patch | none
    perception_images: int = 20                # MaskGIT images drawn to initialise the perception tokens
    perception_steps: int = positive(50)       # MaskGIT decoding steps of those images
    perception_guidance: float = 5.0           # their classifier-free guidance scale
    perception_early: float = fraction(0.2)    # step 10 of 50 (n in eq. 5)
    perception_late: float = fraction(0.7)     # step 35 of 50 (m in eq. 5)
    # stage 3
    s3_lr: float = positive(1e-4)              # stage 3: AdamW learning rate
    s3_epochs: int = positive(20)              # stage 3: passes over its samples
    s3_batch: int = positive(1)                # stage 3: samples per optimizer step
    s3_weight_decay: float = 1e-3              # stage 3: AdamW weight decay
    s3_eps: float = positive(1e-8)             # stage 3: AdamW epsilon
    # prediction
    max_new_tokens: int = positive(100)        # understanding answers, greedy
    kv_cache: bool = True                      # answers decode with a KV cache (False: recompute, as the reference)
    gen_steps: int = positive(50)              # MaskGIT decoding steps per generated image
    guidance: float = 5.0                      # classifier-free guidance scale of generation
    gen_batch_size: int = positive(4)          # images per forward, across prompts (speed only: same images)
    gen_prompts_limit: int = 0                 # > 0: only the first N prompts per generation task
    images_per_prompt: int = 0                 # > 0: overrides the benchmark's images per prompt
    kmeans_iters: int = positive(100)          # k-means iterations of every token initialisation


@dataclass
class T2ISample:
    prompt: list[int]        # t2i_prompt(...), max_text_len + 1 ids
    codes: torch.Tensor      # [N] MAGVIT codes


class UniCTokens(SoftPromptMethod):
    name = "unictokens"
    tasks = frozenset({REC, VQA, TEXT_QA, GEN, KNOWLEDGE_GEN})
    config_cls = UniCTokensConfig
    presets = {
        "tiny": dict(backbone="tiny", max_text_len=48, n_positive=4, n_negative=4, s1_epochs=3, s1_lr=3e-2,
                     s2_epochs=2, s2_lr=3e-2, s3_epochs=2, s3_lr=3e-2, perception_images=2, perception_steps=6,
                     perception_guidance=2.0, gen_steps=6, guidance=2.0, gen_prompts_limit=1, images_per_prompt=2,
                     max_new_tokens=8, kmeans_iters=20),
        # The released code: lr 1e-3 for stages 1 and 3, stage 2 from stage-1 epoch 15, non-person stage-2
        # rows left at old image-code rows, the whitened step-35 images for stage 3.
        "code": dict(s1_lr=1e-3, s3_lr=1e-3, s2_from_epoch=15, s2_init="image_rows", s3_init="whitened"),
        # Table 3 (left): training stages; (right): stage-3 initialisation.
        "stage1": dict(stages="1"),
        "stage2-wo1": dict(stages="2"),
        "stage2": dict(stages="1,2"),
        "init-none": dict(s3_init="none"),
        "init-full-image": dict(s3_init="full_image"),
        "init-random-patch": dict(s3_init="random_patch"),
        # Appendix F: token counts K+M+N (the paper's 32 is 16+8+8).
        "tokens-4": dict(num_shared=2, num_generation=1, num_perception=1),
        "tokens-8": dict(num_shared=4, num_generation=2, num_perception=2),
        "tokens-16": dict(num_shared=8, num_generation=4, num_perception=4),
        "tokens-64": dict(num_shared=32, num_generation=16, num_perception=16),
    }

    def __init__(self, ctx, preset=None, overrides=None):
        super().__init__(ctx, preset, overrides)
        cfg = self.config
        try:
            self.stage_list = sorted({int(s) for s in str(cfg.stages).replace(" ", "").split(",") if s})
        except ValueError:
            raise UserError(f"unictokens: stages must be a list like '1,2,3', not {cfg.stages!r}") from None
        if not self.stage_list or not set(self.stage_list) <= {1, 2, 3}:
            raise UserError(f"unictokens: stages must be a subset of 1,2,3 (got {cfg.stages!r})")
        if cfg.s3_init not in S3_INITS:
            raise UserError(f"unictokens: s3_init must be one of {', '.join(S3_INITS)}")
        if cfg.s1_init not in ("images", "words") or cfg.s2_init not in ("stage1", "image_rows"):
            raise UserError("unictokens: s1_init is images|words, s2_init is stage1|image_rows")
        self.face_embedder: Callable[[list[Path]], list] | None = None   # tests may replace it

    # ------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        from unifybench.models.showo.backbone import ShowoBackbone
        from unifybench.models.weights import showo_folders
        cfg = self.config
        b = ShowoBackbone.load(*showo_folders(cfg.backbone, self.ctx, cfg.llm, cfg.vq), device=self.ctx.device,
                               dtype=torch_dtype(self.ctx.dtype))
        b.max_text_len = cfg.max_text_len
        self.backbone = b
        k, m_, n = cfg.num_shared, cfg.num_generation, cfg.num_perception
        self.token_names = [PLACEHOLDER] + [f"<token_{i}>" for i in range(k + m_ + n)]
        self.all_ids = b.reserve_tokens(len(self.token_names))
        self.name_to_id = dict(zip(self.token_names, self.all_ids))
        self.sks = self.all_ids[0]
        self.shared_ids = self.all_ids[1:1 + k]
        self.gen_ids = self.all_ids[1 + k:1 + k + m_]
        self.perc_ids = self.all_ids[1 + k + m_:]
        self._codes: dict[tuple[str, bool], torch.Tensor] = {}
        self._code_cache = None   # ImageCodeCache, made at the first image file
        self._backbone_sha: str | None = None
        self.active: list[int] = []   # token ids of the loaded artifact

    def needs(self, concepts) -> list:
        from unifybench import needs
        from unifybench.models.weights import showo_settings
        cfg = self.config
        out = [needs.weights(role, setting, self.ctx, f"method {self.name}")
               for role, setting in showo_settings(cfg.backbone, cfg.llm, cfg.vq)]
        persons = concepts is None or any(c.category == "person" for c in concepts)
        if cfg.face_init and 2 in self.stage_list and self.face_embedder is None and persons:
            out.append(needs.Need("weights", f"method {self.name}: face weights (stage-2 init)",
                                  lambda: str(self._face_pack(build=False)), "face"))
        return out

    def model_files(self) -> dict[str, Path]:
        b = self.backbone
        files = {"showo/" + b.paths["showo_weights"].name: b.paths["showo_weights"],
                 "magvit/" + b.paths["magvit_weights"].name: b.paths["magvit_weights"]}
        tok = b.paths["phi"] / "tokenizer.json"
        if tok.is_file():
            files["phi/tokenizer.json"] = tok
        return files

    # ------------------------------------------------------------------------------------------ prompts
    def encode(self, text: str) -> list[int]:
        """Text with `<sks>` / `<token_i>` names -> ids; the text between names is tokenised as a whole."""
        ids: list[int] = []
        for part in _NAME.split(text):
            if not part:
                continue
            if _NAME.fullmatch(part):
                if part not in self.name_to_id:
                    raise UserError(f"unictokens: unknown token {part}")
                ids.append(self.name_to_id[part])
            else:
                ids += self.backbone.encode_text(part)
        return ids

    def _names(self, ids: list[int]) -> str:
        names = {v: k for k, v in self.name_to_id.items()}
        return "".join(names[i] for i in ids)

    def understanding_ids(self, active: list[int] | None = None) -> list[int]:
        """The understanding tokens: 0..K-1 then the perception tokens (those present)."""
        active = self.all_ids if active is None else active
        return [i for i in self.shared_ids + self.perc_ids if i in active]

    def generation_ids(self, active: list[int] | None = None) -> list[int]:
        active = self.all_ids if active is None else active
        return [i for i in self.shared_ids + self.gen_ids if i in active]

    def system_text(self, active: list[int] | None = None) -> str:
        """`<sks> is <token_0..15><token_24..31>.\\n`"""
        return f"{PLACEHOLDER} is {self._names(self.understanding_ids(active))}.\n"

    def personalized_prompt(self) -> list[int]:
        """The loaded concept's system prompt as ids (`<sks> is <tokens>.\n`): what the forgetting
        evaluators' "prompt" condition puts at the start of the user turn (ShowoBackbone.chat_ids)."""
        return self.encode(self.system_text(self.active))

    def understanding_prompt(self, question: str, active: list[int] | None = None) -> list[int]:
        """`USER: <sks> is <tokens>.\\n{question} ASSISTANT:` as ids."""
        return self.encode("USER: " + self.system_text(active) + question + " ASSISTANT:")

    def generation_text(self, prompt: str, active: list[int] | None = None) -> str:
        """The placeholder becomes `<token_0..23> <sks>` (the reference's --inverse_prompt)."""
        return prompt.replace(PLACEHOLDER, f"{self._names(self.generation_ids(active))} {PLACEHOLDER}")

    def generation_prompt(self, prompt: str, active: list[int] | None = None) -> list[int]:
        return self.encode(self.generation_text(prompt, active))

    # ------------------------------------------------------------------------------------------ images
    def _image_codes(self, path: Path | None, flip: bool = False) -> torch.Tensor:
        """MAGVIT codes of an image file (from the on-disk code cache), or of the black stand-in for None."""
        key = (str(path), flip)
        if key not in self._codes:
            b = self.backbone
            if path is None:   # text-only questions: a black stand-in image
                self._codes[key] = b.encode_images([b.blank_image()], flip=flip)[0]
            else:
                if self._code_cache is None:
                    from unifybench.models.image_codes import ImageCodeCache
                    self._code_cache = ImageCodeCache.for_backbone(
                        b, lambda p, f: b.encode_images([open_rgb(p)], flip=f)[0], self.ctx.cache_dir)
                self._codes[key] = self._code_cache.codes(path, flip)
        return self._codes[key]

    def _code_embeddings(self, codes: torch.Tensor) -> torch.Tensor:
        """Base Show-o input embeddings of image codes [.., N] -> [.., N, H] (float32)."""
        b = self.backbone
        emb = b.input_embeddings()
        weight = emb.weight
        return weight[codes.to(weight.device).long() + b.image_offset].float()

    # ------------------------------------------------------------------------------------------ data
    def mmu_sample(self, codes: torch.Tensor, question: str, answer: str, kind: str,
                   active: list[int]) -> Sample:
        b = self.backbone
        prefix = b.mmu_prefix(codes, sot=self.config.train_sot) + self.understanding_prompt(question, active)
        target = self.encode(" " + answer) + [b.eot_id]
        return Sample(prefix + target, [False] * len(prefix) + [True] * len(target), kind)

    def mmu_samples(self, concept: Concept, benchmark: Benchmark, rng: random.Random, active: list[int],
                    recognition_only: bool = False) -> list[Sample]:
        cfg = self.config
        photos = list(concept.train_images)
        if not photos:
            raise UserError(f"concept {concept.name!r} has no training images")
        flip = (lambda: rng.random() < 0.5) if cfg.hflip else (lambda: False)
        out = []
        for i in range(cfg.n_positive):
            out.append(self.mmu_sample(self._image_codes(photos[i % len(photos)], flip()), rng.choice(REC_QUESTIONS),
                                       rng.choice(YES), "rec_positive", active))
        negatives = list(benchmark.random_images())
        for i in range(cfg.n_negative if negatives else 0):
            out.append(self.mmu_sample(self._image_codes(negatives[i % len(negatives)], flip()),
                                       rng.choice(REC_QUESTIONS), rng.choice(NO), "rec_negative", active))
        if not recognition_only:
            for j, (q, a) in enumerate(benchmark.train_conversations(concept)):
                out.append(self.mmu_sample(self._image_codes(photos[j % len(photos)], flip()), q, a, "qa", active))
        return out

    def t2i_samples(self, concept: Concept, rng: random.Random, active: list[int], cropped: bool) -> list[T2ISample]:
        b = self.backbone
        images = list(concept.cropped_images) if cropped and concept.cropped_images else list(concept.train_images)
        prompt = b.t2i_prompt(self.encode(T2I_PROMPT.format(gen=self._names(self.generation_ids(active)))))
        return [T2ISample(prompt, self._image_codes(p, self.config.hflip and rng.random() < 0.5)) for p in images]

    # ------------------------------------------------------------------------------------------ losses
    def mmu_loss(self, batch: list[Sample]) -> torch.Tensor:
        b = self.backbone
        ids, _, targets = collate(batch, b.pad_id, b.device)
        hidden, _ = b.forward_hidden(ids, b.mmu_mask(ids))
        nxt = targets[:, 1:]
        where = nxt != -100
        return F.cross_entropy(b.logits(hidden[:, :-1][where]), nxt[where])

    def t2i_loss(self, batch: list[T2ISample], gen: torch.Generator) -> torch.Tensor:
        """Masked-token CE (no shift) at <|soi|>, the masked image positions and <|eoi|>; cosine mask ratio."""
        b = self.backbone
        seqs, labels = [], []
        n = b.num_vq_tokens
        for s in batch:
            t = float(torch.rand((), generator=gen))
            count = max(1, round(n * max(math.cos(math.pi / 2 * t), 0.0)))
            where = torch.randperm(n, generator=gen)[:count]
            img = s.codes.long() + b.image_offset
            inp = img.clone()
            inp[where] = b.mask_id
            lab = torch.full((n,), -100, dtype=torch.long)
            lab[where] = img[where]
            drop = float(torch.rand((), generator=gen)) < self.config.cond_dropout
            prompt = b.uncond_prompt() if drop else s.prompt
            seqs.append(b.t2i_sequence(prompt, inp.tolist()))
            labels.append([-100] * len(prompt) + [b.soi_id] + lab.tolist() + [b.eoi_id])
        ids = torch.tensor(seqs, device=b.device)
        lab = torch.tensor(labels, device=b.device)
        hidden, _ = b.forward_hidden(ids, b.t2i_mask(ids))
        where = lab != -100
        return F.cross_entropy(b.logits(hidden[where]), lab[where])

    # ------------------------------------------------------------------------------------------ training
    def _train(self, tokens, trainable: list[int], mmu: list[Sample], t2i: list[T2ISample], lr: float,
               weight_decay: float, eps: float, epochs: int, batch: int, gen: torch.Generator, desc: str,
               snapshot_epoch: int = 0) -> tuple[dict, dict | None]:
        """AdamW on the concept rows; rows not in `trainable` are restored after every step (as the code
        does). The batch order is drawn once (the code materialises its loader once); masks every step."""
        cfg = self.config
        params = [p for p in (tokens.embed, tokens.head, tokens.head_bias) if p is not None]
        frozen = torch.ones(len(tokens.token_names), dtype=torch.bool)
        frozen[trainable] = False
        keep = [p.detach()[frozen].clone() for p in params]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, eps=eps, betas=(0.9, 0.999))
        mmu_order = torch.randperm(len(mmu), generator=gen).tolist() if mmu else []
        t2i_order = torch.randperm(len(t2i), generator=gen).tolist() if t2i else []
        mmu_batches = [[mmu[i] for i in mmu_order[s:s + batch]] for s in range(0, len(mmu_order), batch)]
        t2i_batches = [[t2i[i] for i in t2i_order[s:s + batch]] for s in range(0, len(t2i_order), batch)]
        steps = max(len(mmu_batches), len(t2i_batches))
        losses, snapshot = [], None
        before = self.eval_loss(mmu, t2i)
        with maybe_task(self.ctx.progress, desc, steps * epochs) as advance:
            for epoch in range(1, epochs + 1):
                total = 0.0
                for step in range(steps):
                    parts = []
                    if t2i_batches:
                        parts.append((cfg.t2i_weight if mmu_batches else 1.0,
                                      self.t2i_loss(t2i_batches[step % len(t2i_batches)], gen)))
                    if mmu_batches:
                        parts.append((cfg.mmu_weight if t2i_batches else 1.0,
                                      self.mmu_loss(mmu_batches[step % len(mmu_batches)])))
                    loss = sum(w * l for w, l in parts)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        for p, k in zip(params, keep):
                            p[frozen] = k
                    total += float(loss.detach())
                    trainlog.step(float(loss.detach()), desc)
                    advance()
                losses.append(total / max(steps, 1))
                trainlog.epoch(losses[-1], desc)
                if epoch == snapshot_epoch:
                    snapshot = {k: v.detach().clone() for k, v in tokens.state_dict().items()}
        return {"epoch_losses": losses, "loss_before": before, "loss_after": self.eval_loss(mmu, t2i)}, snapshot

    @torch.no_grad()
    def eval_loss(self, mmu: list[Sample], t2i: list[T2ISample], seed: int = 0) -> float:
        """The stage's loss over all its samples with fixed masks (no condition dropout): before vs after."""
        cfg = self.config
        gen = torch.Generator().manual_seed(seed)
        dropout, self.config.cond_dropout = cfg.cond_dropout, 0.0
        try:
            parts = []
            if t2i:
                parts.append((cfg.t2i_weight if mmu else 1.0,
                              sum(float(self.t2i_loss([s], gen)) for s in t2i) / len(t2i)))
            if mmu:
                parts.append((cfg.mmu_weight if t2i else 1.0,
                              sum(float(self.mmu_loss([s])) for s in mmu) / len(mmu)))
        finally:
            self.config.cond_dropout = dropout
        return sum(w * l for w, l in parts)

    # ------------------------------------------------------------------------------------------ initialisation
    def _kmeans(self, x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
        return kmeans(x, k, gen, iters=self.config.kmeans_iters)

    def _train_image_embeddings(self, concept: Concept, rng: random.Random) -> torch.Tensor:
        flips = [self.config.hflip and rng.random() < 0.5 for _ in concept.train_images]
        codes = torch.stack([self._image_codes(p, f) for p, f in zip(concept.train_images, flips)])
        return self._code_embeddings(codes).reshape(-1, self.backbone.hidden_size)

    def _word_embedding(self, text: str) -> torch.Tensor:
        ids = self.backbone.encode_text(text)
        if not ids:
            raise UserError(f"unictokens: cannot tokenise the class word {text!r}")
        w = self.backbone.input_embeddings().weight
        return w[torch.tensor(ids, device=w.device)].float().mean(0)

    def _base_rows(self, index: list[int]):
        """Rows the code leaves uninitialised: the old image-code rows at the same index (notes 4.1)."""
        b = self.backbone
        rows = torch.tensor([b.image_offset + i for i in index], device=b.input_embeddings().weight.device)
        head = b.output_head()
        return (b.input_embeddings().weight[rows].float().cpu(), head.weight[rows].float().cpu(),
                head.bias[rows].float().cpu())

    def _new_tokens(self, n_rows: int, embed_init: dict[int, torch.Tensor]):
        """ConceptTokens for the first `n_rows` names; embedding rows from `embed_init` (row -> vector) or the
        base image-code rows; head rows/bias always from the base image-code rows (the code's behaviour)."""
        from unifybench.models.concept_tokens import ConceptTokens
        emb, head, bias = self._base_rows(list(range(n_rows)))
        for row, vec in embed_init.items():
            emb[row] = vec.float().cpu()
        ids = self.all_ids[:n_rows]
        return ConceptTokens(ids, emb, ids, head, bias, self.token_names[:n_rows])

    def stage1_init(self, concept: Concept, rng: random.Random, gen: torch.Generator) -> dict[int, torch.Tensor]:
        cfg = self.config
        init = {0: self._word_embedding(concept.class_noun)}
        if cfg.s1_init == "images":
            cents = self._kmeans(self._train_image_embeddings(concept, rng), cfg.num_shared, gen)
        else:
            words = [concept.class_noun] + [w for w in re.findall(r"[A-Za-z]+", concept.info.replace(PLACEHOLDER, ""))]
            mean = torch.stack([self._word_embedding(" " + w) for w in words]).mean(0)
            cents = mean[None].expand(cfg.num_shared, -1)
        for i in range(cfg.num_shared):
            init[1 + i] = cents[i]
        return init

    def stage2_init(self, concept: Concept, rng: random.Random, gen: torch.Generator) -> dict[int, torch.Tensor]:
        cfg = self.config
        first = 1 + cfg.num_shared
        if cfg.face_init and concept.category == "person":
            vecs = self.face_init(concept)
            if vecs is not None:
                return {first + i: vecs[i] for i in range(cfg.num_generation)}
            log.warning("unictokens: no face found in the training images of %s; class-word/stage-1 init instead",
                        concept.name)
        if cfg.s2_init == "image_rows":
            return {}
        cents = self._kmeans(self._train_image_embeddings(concept, rng), cfg.num_generation, gen)
        return {first + i: cents[i] for i in range(cfg.num_generation)}

    def face_init(self, concept: Concept) -> torch.Tensor | None:
        """Mean raw ArcFace embedding of the training faces -> [M, D/M] -> linear interpolation to [M, hidden]."""
        m = self.config.num_generation
        embedder = self.face_embedder or self._default_face_embedder()
        vecs = [torch.as_tensor(v, dtype=torch.float32) for v in embedder(list(concept.train_images)) if v is not None]
        if not vecs:
            return None
        mean = torch.stack(vecs).mean(0)
        if mean.numel() % m:
            raise UserError(f"unictokens: face embedding size {mean.numel()} is not divisible by M={m}")
        grid = mean.view(1, m, -1)
        return F.interpolate(grid, size=self.backbone.hidden_size, mode="linear", align_corners=False)[0]

    def _face_pack(self, build: bool = True) -> Path | str:
        """The antelopev2 pack folder: `--model face=ROOT`, the tiny pack in tiny runs, else ~/.insightface;
        `build=False` (the run's preflight) builds no tiny pack and describes it instead."""
        from unifybench.models.weights import TINY_PLACE, is_tiny, override, tiny_folder
        root = override(self.ctx, "face")
        if root:
            root = Path(root).expanduser()
            cands = [root / "models" / "antelopev2", root / "antelopev2", root]
            pack = next((c for c in cands if c.is_dir() and any(c.glob("*.onnx"))), None)
        elif self.ctx.tiny or is_tiny(self.config.backbone):
            if not build:
                from unifybench.models.tiny_cache import tiny_root
                return TINY_PLACE.format(setting="tiny", root=tiny_root(self.ctx.cache_dir))
            pack = tiny_folder("face", self.ctx.cache_dir)
        else:
            pack = Path("~/.insightface/models/antelopev2").expanduser()
        if pack is None or not pack.is_dir():
            raise UserError("unictokens: stage-2 face init of a person needs the insightface antelopev2 pack: pass "
                            "--model face=ROOT or --set face_init=false")
        return pack

    def _default_face_embedder(self):
        """insightface (antelopev2, det 640, largest face, raw embedding) through the face evaluator's loader."""
        import numpy as np

        from unifybench.models.encoders.face import get_face_app
        app = get_face_app(self._face_pack(), device=self.ctx.device)

        def embed(paths: list[Path]) -> list:
            out = []
            for p in paths:
                rgb = open_rgb(p)
                w, h = rgb.size
                r = 1280 / max(w, h)
                rgb = rgb.resize((max(1, round(w * r)), max(1, round(h * r))), Image.BILINEAR)
                faces = app.faces(np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1]))
                if not faces:
                    out.append(None)
                    continue
                face = max(faces, key=lambda f: float((f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])))
                out.append(np.asarray(face.embedding, dtype=np.float32))
            return out
        return embed

    # ------------------------------------------------------------------------------------------ perception
    def perception(self, concept: Concept, rng: random.Random, gen: torch.Generator, out_dir: Path) -> torch.Tensor | None:
        """Stage 2 -> 3: N centroids for the perception tokens (None: leave the image-code rows)."""
        cfg = self.config
        b = self.backbone
        n = cfg.num_perception
        if cfg.s3_init == "none" or n == 0:
            return None
        if cfg.s3_init == "full_image":
            return self._kmeans(self._train_image_embeddings(concept, rng), n, gen)
        if cfg.s3_init == "random_patch":
            emb = self._train_image_embeddings(concept, rng)
            return emb[torch.randperm(emb.shape[0], generator=gen)[:n]]
        steps = cfg.perception_steps
        early = max(0, min(steps - 1, round(steps * cfg.perception_early) - 1))
        late = max(0, min(steps - 1, round(steps * cfg.perception_late) - 1))
        kind = "person" if concept.category == "person" else "other"
        prompt = b.t2i_prompt(self.encode(PERCEPTION_PROMPT[kind].format(gen=self._names(self.generation_ids()))))
        dgen = torch.Generator(device=b.device).manual_seed(int(torch.randint(0, 2**31, (), generator=gen)))
        final, rec = b.generate_images(prompt, cfg.perception_images, dgen, steps=steps,
                                       guidance=cfg.perception_guidance, batch_size=1,
                                       record_steps=(early, late, steps - 1))
        if cfg.s3_init == "diff":   # paper eq. 5: k-means over x_m - x_n where the late and early steps differ
            changed = rec[late] != rec[early]
            diffs = (self._code_embeddings(rec[late]) - self._code_embeddings(rec[early]))[changed.to(b.device)]
            if diffs.shape[0] < n:
                diffs = (self._code_embeddings(final) - self._code_embeddings(rec[early])).reshape(-1, b.hidden_size)
            return self._kmeans(diffs, n, gen)
        # "whitened" (the code): the late-step image painted white where tokens still change, re-encoded.
        diff = (rec[late] != final).view(-1, 1, b.grid, b.grid).float()
        pixels = b.decode_pixels(rec[late])
        up = F.interpolate(diff, size=pixels.shape[-2:], mode="nearest").to(pixels.device)
        painted = torch.where(up > 0, torch.ones_like(pixels), pixels.clamp(-1, 1))
        folder = out_dir / "perception"
        folder.mkdir(parents=True, exist_ok=True)
        codes = []
        for i, img in enumerate(painted):
            arr = ((img + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            Image.fromarray(arr).save(folder / f"{i}.png")
            codes.append(b.encode_pixels(img[None])[0])
        return self._kmeans(self._code_embeddings(torch.stack(codes)).reshape(-1, b.hidden_size), n, gen)

    # ------------------------------------------------------------------------------------------ fit
    def _stage_key(self, concept: Concept, stage: str) -> str:
        from unifybench.store import canonical_hash
        cfg = asdict(self.config)
        order = ["s1", "s2", "perception", "s3"]
        upto = order[:order.index(stage) + 1]
        prefixes = tuple(p + "_" for p in upto) + (("s3_init",) if "perception" in upto else ())
        common = {k: v for k, v in cfg.items() if not re.match(r"^(s[123]_|perception_|max_new|kv_cache|gen_|guidance|"
                                                                    r"images_per|face_init)", k)}
        staged = {k: v for k, v in cfg.items() if k.startswith(prefixes)}
        if "s2" in upto:
            staged["face_init"] = cfg["face_init"]
        return canonical_hash({"concept": concept.name, "stage": stage, "seed": self.ctx.seed, "common": common,
                               "staged": staged, "backbone": self.backbone_hash()})

    def _cached(self, path: Path, key: str):
        from unifybench.models.concept_tokens import ConceptTokens
        if not path.is_file():
            return None
        try:
            tokens, header = ConceptTokens.load(path)
        except UserError:
            return None
        return (tokens, header) if header.get("key") == key else None

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> Path:
        from unifybench.models.concept_tokens import ConceptTokens, attach, detach
        cfg = self.config
        b = self.backbone
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        k, m = cfg.num_shared, cfg.num_generation
        n1, n2, n3 = 1 + k, 1 + k + m, len(self.all_ids)
        seed = lambda *p: derive_seed(self.ctx.seed, *p, concept.name)  # noqa: E731
        header_base = {"method": self.name, "concept": concept.name, "backbone": str(b.path),
                       "backbone_sha256": self.backbone_hash(), "config": self.describe()["config"]}
        tokens, last = None, None

        # ---- stage 1
        if 1 in self.stage_list:
            key = self._stage_key(concept, "s1")
            path = out_dir / "stage1.safetensors"
            hit = self._cached(path, key)
            if hit is None:
                rng, gen = random.Random(seed("s1", "data")), torch.Generator().manual_seed(seed("s1", "train"))
                tokens = self._new_tokens(n1, self.stage1_init(concept, rng, gen))
                attach(b, tokens)
                mmu = self.mmu_samples(concept, benchmark, rng, self.all_ids[:n1])
                losses, snap = self._train(tokens, list(range(n1)), mmu, [], cfg.s1_lr, cfg.s1_weight_decay,
                                           cfg.s1_eps, cfg.s1_epochs, cfg.s1_batch, gen, f"stage 1 {concept.name}",
                                           snapshot_epoch=cfg.s2_from_epoch if cfg.s2_from_epoch < cfg.s1_epochs else 0)
                detach(b)
                if snap is not None:   # stage 2 starts from this epoch (the code: 15 of 20)
                    early = ConceptTokens(tokens.token_ids.tolist(), snap["embed"], tokens.head_ids.tolist(),
                                          snap["head"], snap.get("head_bias"), tokens.token_names)
                    early.save(out_dir / f"stage1_epoch{cfg.s2_from_epoch}.safetensors",
                               dict(header_base, key=key, stage=1, epoch=cfg.s2_from_epoch))
                tokens.save(path, dict(header_base, key=key, stage=1, **losses, samples=_count(mmu)))
            last = path
        # ---- stage 2
        if 2 in self.stage_list:
            key = self._stage_key(concept, "s2")
            path = out_dir / "stage2.safetensors"
            if self._cached(path, key) is None:
                rng, gen = random.Random(seed("s2", "data")), torch.Generator().manual_seed(seed("s2", "train"))
                if 1 in self.stage_list:
                    start = out_dir / (f"stage1_epoch{cfg.s2_from_epoch}.safetensors"
                                       if 0 < cfg.s2_from_epoch < cfg.s1_epochs else "stage1.safetensors")
                    s1, _ = ConceptTokens.load(start)
                    init = {i: s1.embed[i] for i in range(n1)}
                else:   # Table 3 "stage 2 w/o 1": the stage-1 rows initialised, never trained
                    init = self.stage1_init(concept, random.Random(seed("s1", "data")),
                                            torch.Generator().manual_seed(seed("s1", "train")))
                init.update(self.stage2_init(concept, rng, gen))
                tokens = self._new_tokens(n2, init)
                if 1 in self.stage_list:   # the trained stage-1 head rows too
                    with torch.no_grad():
                        tokens.head[:n1] = s1.head
                        tokens.head_bias[:n1] = s1.head_bias
                attach(b, tokens)
                active = self.all_ids[:n2]
                mmu = self.mmu_samples(concept, benchmark, rng, self.all_ids[:n1])   # the stage-1 data and prompt
                t2i = self.t2i_samples(concept, rng, active, cropped=True)
                losses, _ = self._train(tokens, list(range(n2)), mmu, t2i, cfg.s2_lr, cfg.s2_weight_decay,
                                        cfg.s2_eps, cfg.s2_epochs, cfg.s2_batch, gen, f"stage 2 {concept.name}")
                detach(b)
                tokens.save(path, dict(header_base, key=key, stage=2, **losses,
                                       samples={**_count(mmu), "t2i": len(t2i)}))
            last = path
        # ---- stage 2 -> 3 and stage 3
        if 3 in self.stage_list:
            prev = out_dir / ("stage2.safetensors" if 2 in self.stage_list else "stage1.safetensors")
            if not prev.is_file():
                raise UserError("unictokens: stage 3 needs stage 1 or 2 in `stages`")
            pkey = self._stage_key(concept, "perception")
            ppath = out_dir / "perception.safetensors"
            hit = self._cached(ppath, pkey)
            s2, _ = ConceptTokens.load(prev)
            if hit is None:
                rng, gen = random.Random(seed("p", "data")), torch.Generator().manual_seed(seed("p", "train"))
                t = self._new_tokens(n3, {i: s2.embed[i] for i in range(s2.embed.shape[0])})
                with torch.no_grad():
                    t.head[:s2.head.shape[0]] = s2.head
                    t.head_bias[:s2.head.shape[0]] = s2.head_bias
                attach(b, t)
                cents = self.perception(concept, rng, gen, out_dir)
                detach(b)
                if cents is not None:
                    with torch.no_grad():
                        t.embed[n2:] = cents.float().cpu()
                t.save(ppath, dict(header_base, key=pkey, stage="perception", s3_init=cfg.s3_init))
            key = self._stage_key(concept, "s3")
            path = out_dir / "stage3.safetensors"
            if self._cached(path, key) is None:
                rng, gen = random.Random(seed("s3", "data")), torch.Generator().manual_seed(seed("s3", "train"))
                tokens, _ = ConceptTokens.load(ppath)
                attach(b, tokens)
                active = self.all_ids
                mmu = self.mmu_samples(concept, benchmark, rng, active, recognition_only=True)
                t2i = self.t2i_samples(concept, rng, active, cropped=False)
                trainable = [0] + list(range(n2, n3))
                losses, _ = self._train(tokens, trainable, mmu, t2i, cfg.s3_lr, cfg.s3_weight_decay, cfg.s3_eps,
                                        cfg.s3_epochs, cfg.s3_batch, gen, f"stage 3 {concept.name}")
                detach(b)
                tokens.save(path, dict(header_base, key=key, stage=3, **losses,
                                       samples={**_count(mmu), "t2i": len(t2i)}))
            last = path
        return last

    # ------------------------------------------------------------------------------------------ predict
    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        from unifybench.models.concept_tokens import ConceptTokens, attach
        if path is None:
            raise UserError("unictokens: nothing was trained for this concept")
        tokens, header = ConceptTokens.load(path)
        ids = tokens.token_ids.tolist()
        if header.get("method") != self.name or ids != self.all_ids[:len(ids)]:
            raise UserError(f"{path}: concept tokens of {header.get('method')!r} do not fit this unictokens setup")
        attach(self.backbone, tokens)
        self.active = ids

    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        cfg = self.config
        gen_items = generation_items(items, self.tasks, cfg.gen_prompts_limit)
        text_items = [i for i in items if i.task in (REC, VQA, TEXT_QA)]
        preds = []
        with torch.no_grad():
            with maybe_task(self.ctx.progress, f"answering {concept.name}", len(text_items)) as advance:
                for item in text_items:
                    preds.append(self.answer(item))
                    advance()
            preds += self.generate_all(gen_items, Path(out_dir), concept.name)
        return preds

    def answer(self, item: Item) -> Prediction:
        b = self.backbone
        codes = self._image_codes(item.image if item.task != TEXT_QA else None)
        ids = b.mmu_prefix(codes, sot=True) + self.understanding_prompt(item.prompt, self.active)
        out = b.generate_text(ids, max_new_tokens=self.config.max_new_tokens, use_cache=self.config.kv_cache)
        return Prediction(item.id, item.concept, item.task, item.prompt, text=b.decode_text(out).strip())

    def generate_all(self, gen_items: list[Item], out_dir: Path, concept_name: str) -> list[Prediction]:
        """Every image of the concept's prompts, `gen_batch_size` images per forward across prompts; each
        item seeded by `derive_seed(seed, "gen", item id)`, each image its own stream (`unifybench.models.
        streams`): the images of generating each item alone, at any batch size."""
        from unifybench.models.streams import image_generators
        cfg, b = self.config, self.backbone
        prompts, generators, owner = [], [], []
        for k, item in enumerate(gen_items):
            n = cfg.images_per_prompt or item.n_images
            gen = torch.Generator(device=b.device).manual_seed(derive_seed(self.ctx.seed, "gen", item.id))
            prompts += [b.t2i_prompt(self.generation_prompt(item.prompt, self.active))] * n
            generators += image_generators(gen, n)
            owner += [k] * n
        preds = []
        with maybe_task(self.ctx.progress, f"generating {concept_name}", len(prompts)) as advance:
            codes = b.generate_image_rows(prompts, generators, steps=cfg.gen_steps, guidance=cfg.guidance,
                                          batch_size=cfg.gen_batch_size)
            for k, item in enumerate(gen_items):
                mine = codes[[r for r, o in enumerate(owner) if o == k]]
                paths = save_images(b.decode_images(mine), out_dir, f"{item.task}_{k:03d}", advance)
                preds.append(Prediction(item.id, item.concept, item.task, item.prompt, images=paths))
        return preds


def _count(samples: list[Sample]) -> dict[str, int]:
    return {k: sum(1 for s in samples if s.kind == k) for k in sorted({s.kind for s in samples})}


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iters: int = 100) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations (until assignments stop changing); [k, D] float32 centroids.

    Deterministic for a generator state. Fewer distinct points than k: the missing centroids repeat points."""
    x = x.float()
    n = x.shape[0]
    if n == 0:
        raise ValueError("k-means of no points")
    first = int(torch.randint(0, n, (), generator=gen))
    cents = [x[first]]
    d2 = ((x - cents[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            idx = int(torch.randint(0, n, (), generator=gen))
        else:
            u = float(torch.rand((), generator=gen)) * total
            idx = int(torch.searchsorted(d2.cumsum(0).cpu(), torch.tensor([u])).clamp(max=n - 1))
        cents.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    c = torch.stack(cents)
    assign = None
    for _ in range(iters):
        new = torch.cdist(x, c).argmin(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if members.shape[0]:
                c[j] = members.mean(0)
    return c.cpu()
