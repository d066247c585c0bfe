"""MC-LLaVA (An et al.): multi-concept personalization of LLaVA through jointly trained concept tokens.

The method as the public code runs it (project notes on MC-LLaVA, section 2): every concept of a scenario
gets an identifier `<name>` and k = 16 latent tokens; the system prompt defines ALL of the scenario's
concepts, "<A> is <token0>...<token15>." one after the other (no separator), after the llava_v1 system line;
a turn is `{system} USER: <image>\\n{question} ASSISTANT: {answer}`. Training is joint: one set of tokens per
scenario, trained on the shuffled union of its concepts' samples (single-concept QA; no multi-concept
image is trained on). Per concept: each training photo with 5 positive recognition turns, up to 100 random
images with a negative turn each, every other concept's training photos with 10 negative turns each about
this concept, and the text-only training conversations. Only the new tokens' input-embedding rows and
output-head rows train (through our concept-token splice: the base matrices are never touched). AdamW lr
1e-3, betas (0.9, 0.999), weight decay 1e-6, eps 1e-8, batch 1, 15 epochs, random horizontal flips.

Initialisation (``init="kmeans"``, the paper's "personalized textual prompt"): each training photo is padded
to a square with the CLIP mean colour and resized to the vision tower's size; its patch features (the
tower's penultimate layer, CLS dropped, through the projector) are kept where the shipped mask, padded and
nearest-resized to the patch grid, is foreground; the concept's kept patches are clustered by k-means
(sklearn, 16 clusters or fewer when fewer patches, n_init=10, random_state=0); the centroids, rescaled to the
mean norm of the base embedding rows, become the latent tokens' embedding rows and their mean the
identifier's. A benchmark without masks gives the whole photo: the artifact header says which
(``init_features``). ``init="random"``: the seeded draw of the base rows' statistics (as the code without
``--use_k_means``). The output-head rows keep that draw in both (as the code).

Backbone: LLaVA-1.6 (``base_model="llava-1.6"``, transformers' LlavaNextForConditionalGeneration, anyres, as
the reference defaults; 13B by default as UniCTokens lists it); ``base_model="llava-1.5"`` runs on
LlavaForConditionalGeneration instead (576 image tokens; the reference has no such path).

Visual prompt (``visual_prompt=True``, the reference's SoM evaluation): on multi-concept images, for the
choice, VQA and grounding items, each concept's bank of masked raw CLIP patch features is compared with the
image's patches (cosine), the maps are averaged, upsampled bilinearly to the padded square and cropped,
made relative (minus the mean of all concepts' maps, then rescaled into the map's own range); a concept is
marked when more than GAMMA = 100/65536 of the pixels exceed TAU = 0.318, at its maximum, with its number
(1-based, scenario order) in white on a black box; the system prompt then says "<A> is located at 'Mark
Number 1'." for each marked concept.

Where the reference is broken, this does it right (each difference on purpose):
- all training sources are on by default (the code's flags all default to off: an empty training set);
- no checkpoint is selected on the test set: the last epoch is the artifact (the code saves ``best`` by
  the test recognition score, and its eval scripts load fixed epochs 14 or 11);
- the visual prompt is never used for recognition (the code's SoM recognition prompt is built from the
  test labels: "Mark number k is <X>" names the asked concept on negatives too);
- scenarios are matched exactly (the benchmark splits scenario names at "_"; the code takes the first
  folder whose name contains the concept name), marks are numbered in the one scenario order both when
  drawn and when named, square images are marked too (the code crops them to nothing);
- the answer is followed by a supervised `</s>` and the loss covers exactly the answer (the code's window
  is 1-2 tokens off and never trains an end token, so greedy answers do not stop);
- a mask is foreground where it is above half its maximum (the code needs exactly 255: a 0/1 mask gives
  no patch and k-means fails), and ``init="kmeans"`` without masks uses the whole photo (the code crashes);
- float32 parameters for the trained rows whatever the backbone dtype (the code's bf16 AdamW loses small
  updates);
- identifiers are vocabulary slots ``<id0>``.. written as ``<name>`` in every text (the model sees one
  token per identifier, as with the code's added ``<name>``), latent tokens are dropped from answers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from unifybench.data.schema import CAPTION, MC, PLACEHOLDER, REC, TEXT_QA, VQA, Benchmark, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.methods.soft_prompt import SoftPromptMethod
from unifybench.methods.yochameleon import NO, QUESTIONS, YES   # our own recognition wording (shared)
from unifybench.models import torch_dtype
from unifybench.progress import maybe_task
from unifybench.settings import positive
from unifybench.training import Sample, collate, sequence_loss

MC_SUFFIX = "\nIMPORTANT: Answer the question using a single letter."
TAU, GAMMA = 0.318, 100 / 65536
VISUAL_PROMPT_TYPES = ("mi_sq", "mi_mq")
MARKED_TASKS = (MC, VQA)
BANKS_FILE = "visual_prompt_banks.safetensors"


@dataclass
class MCLLaVAConfig:
    """Defaults: the public code's train_joint.py with every data source on (notes 2.5-2.6)."""

    base_model: str = "llava-1.6"        # "llava-1.6" (LLaVA-NeXT, anyres) | "llava-1.5"
    backbone: str = "13b"                # "13b", "7b", "tiny", a folder or a cached hub id (--model llava-next=
                                         # PATH wins; --model llava=PATH for base_model="llava-1.5")
    num_tokens: int = positive(16)       # latent tokens per concept
    max_concepts: int = positive(4)      # identifier slots in the vocabulary (the largest scenario)
    init: str = "kmeans"                 # "kmeans" (masked visual features) | "random"
    kmeans_n_init: int = positive(10)    # sklearn 1.2.2's default, which the code ran with
    lr: float = positive(1e-3)           # AdamW learning rate of the concept tokens
    weight_decay: float = 1e-6           # AdamW weight decay
    adam_eps: float = positive(1e-8)     # AdamW epsilon
    batch_size: int = positive(1)        # training samples per optimizer step
    epochs: int = 15                     # passes over the scenario's training samples
    positives_per_image: int = 5         # "yes" recognition samples per training photo of a concept
    n_random_negatives: int = 100        # "no" samples per concept from the benchmark's random images
    joint_negatives_per_image: int = 10  # "no" samples per photo of each other concept in the scenario
    conversations: bool = True           # the text-only training conversations (without the image)
    hflip: bool = True                   # p = 0.5
    visual_prompt: bool = False          # SoM marks on multi-concept images at test time
    max_new_tokens: int = positive(64)   # greedy


class MCLLaVA(SoftPromptMethod):
    name = "mc-llava"
    description = "MC-LLaVA: jointly trained concept tokens per scenario on LLaVA-1.6"
    tasks = frozenset({REC, VQA, TEXT_QA, MC, CAPTION})
    config_cls = MCLLaVAConfig
    presets = {
        "tiny": dict(backbone="tiny", num_tokens=4, epochs=2, lr=3e-2, positives_per_image=1, n_random_negatives=2,
                     joint_negatives_per_image=1, kmeans_n_init=1, max_new_tokens=6),
        "llava-1.5": dict(base_model="llava-1.5"),
        "tiny-llava-1.5": dict(base_model="llava-1.5", backbone="tiny", num_tokens=4, epochs=2, lr=3e-2,
                               positives_per_image=1, n_random_negatives=2, joint_negatives_per_image=1,
                               kmeans_n_init=1, max_new_tokens=6),
        "visual-prompt": dict(visual_prompt=True),
    }

    # --- setup ---
    def setup(self) -> None:
        cfg = self.config
        if cfg.base_model not in ("llava-1.6", "llava-1.5"):
            raise UserError(f"mc-llava: base_model must be 'llava-1.6' or 'llava-1.5', not {cfg.base_model!r}")
        if cfg.init not in ("kmeans", "random"):
            raise UserError(f"mc-llava: init must be 'kmeans' or 'random', not {cfg.init!r}")
        k = cfg.num_tokens
        self.slots = [(f"<id{i}>", [f"<token{k * i + j}>" for j in range(k)]) for i in range(cfg.max_concepts)]
        names = [ident for ident, _ in self.slots] + [t for _, lat in self.slots for t in lat]
        self.vision = _vision(cfg, self.ctx, names)
        self.backbone = self.vision.backbone
        self.slot_ids = [(self.backbone.token_id(i), [self.backbone.token_id(t) for t in lat]) for i, lat in self.slots]
        self.latent_ids = {t for _, lat in self.slot_ids for t in lat}
        self._members: list[str] = []            # the scenario whose tokens are attached
        self._joint: tuple | None = None         # (scenario key, tokens, header, samples) of the last fit
        self._clip_banks: dict[str, torch.Tensor] = {}

    def needs(self, concepts) -> list:
        from unifybench import needs
        from unifybench.methods.mc_llava_vision import ROLE_15, ROLE_NEXT
        role = ROLE_NEXT if self.config.base_model == "llava-1.6" else ROLE_15
        return [needs.weights(role, self.config.backbone, self.ctx, f"method {self.name}")]

    def model_files(self) -> dict[str, Path]:
        return {f"llava/{p.name}": p for p in self.backbone.weight_files()}

    # --- texts ---
    def _ids_for(self, members: list[str]) -> tuple[list[int], list[str]]:
        if len(members) > len(self.slots):
            raise UserError(f"mc-llava: a scenario of {len(members)} concepts needs max_concepts >= {len(members)}")
        ids, names = [], []
        for (ident, lat), (ident_id, lat_ids) in zip(self.slots[:len(members)], self.slot_ids):
            ids += [ident_id] + lat_ids
            names += [ident] + lat
        return ids, names

    def definitions(self, members: list[str]) -> str:
        """"<id0> is <token0>...<token{k-1}>.<id1> is ..." (the code's concatenation, no separator)."""
        return "".join(f"{ident} is {''.join(lat)}." for ident, lat in self.slots[:len(members)])

    def _text(self, text: str, unit: str, members: list[str]) -> str:
        """A benchmark text with the unit concept's placeholder and every <name> written as its slot token."""
        text = text.replace(PLACEHOLDER, f"<{unit}>")
        for (ident, _), m in zip(self.slots, members):
            text = text.replace(f"<{m}>", ident)
        return text

    def _system(self, members: list[str], marks: dict[str, int] | None = None) -> str:
        from unifybench.models.llava.backbone import SYSTEM
        text = SYSTEM + " " + self.definitions(members)
        for m, number in (marks or {}).items():
            text += f" <{m}> is located at 'Mark Number {number}'."
        return self._text(text, members[0], members)

    # --- training data ---
    def _sample(self, members, unit, question, answer, kind, image=None, flip=False) -> "MCSample":
        v, b = self.vision, self.backbone
        user = self._text(question, unit, members)
        inputs = v.encode(self.load_rgb(image, flip)) if image is not None else None
        prefix = v.prompt_ids(user, inputs, self._system(members))
        suffix = b.encode_text(self._text(answer, unit, members)) + [b.eos_id]
        return MCSample(prefix + suffix, [False] * len(prefix) + [True] * len(suffix), kind, image, flip)

    def training_samples(self, concepts: list[Concept], benchmark: Benchmark, rng: random.Random) -> list["MCSample"]:
        cfg = self.config
        members = [c.name for c in concepts]
        flip = (lambda: rng.random() < 0.5) if cfg.hflip else (lambda: False)
        samples = []
        for c in concepts:
            if not c.train_images:
                raise UserError(f"concept {c.name!r} has no training images")
            for photo in c.train_images:
                for _ in range(cfg.positives_per_image):
                    samples.append(self._sample(members, c.name, rng.choice(QUESTIONS), rng.choice(YES),
                                                "rec_positive", photo, flip()))
            for photo in benchmark.random_images()[:cfg.n_random_negatives]:
                samples.append(self._sample(members, c.name, rng.choice(QUESTIONS), rng.choice(NO), "rec_random",
                                            photo, flip()))
            for other in concepts:
                if other.name != c.name:
                    for photo in other.train_images:
                        for _ in range(cfg.joint_negatives_per_image):
                            samples.append(self._sample(members, c.name, rng.choice(QUESTIONS), rng.choice(NO),
                                                        "rec_joint_negative", photo, flip()))
            if cfg.conversations:
                for q, a in benchmark.train_conversations(c):
                    samples.append(self._sample(members, c.name, q, a, "text_qa"))
        return samples

    # --- fit ---
    def fit(self, concept: Concept, benchmark, out_dir: Path) -> Path:
        from unifybench.environment import derive_seed
        from unifybench.models.concept_tokens import ConceptTokens, attach, detach
        concepts = benchmark.joint_concepts(concept)
        members = [c.name for c in concepts]
        key = "_".join(members)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        artifact = Path(out_dir) / "concept_tokens.safetensors"
        if self._joint is not None and self._joint[0] == key:   # a scenario is trained once; same seed, same rows
            _, tokens, samples, losses, extra = self._joint
            if self.config.visual_prompt:
                self._save_banks(concepts, benchmark, artifact.with_name(BANKS_FILE))
            return self._save(tokens, artifact, concept, members, samples, losses, extra)
        detach(self.backbone)
        rng = random.Random(derive_seed(self.ctx.seed, "data", key))
        samples = self.training_samples(concepts, benchmark, rng)
        ids, names = self._ids_for(members)
        b = self.backbone
        tokens = ConceptTokens.from_base(b.input_embeddings(), b.output_head(), ids, ids, names)
        extra = {"scenario": members}
        if self.config.init == "kmeans":
            extra["init_features"] = self._kmeans_init(tokens, concepts, benchmark)
        attach(b, tokens)
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "order", key))
        losses = self.train(list(tokens.parameters()), samples, gen, f"training {key}")
        self._joint = (key, tokens, samples, losses, extra)
        self._members = members
        if self.config.visual_prompt:
            self._save_banks(concepts, benchmark, artifact.with_name(BANKS_FILE))
        return self._save(tokens, artifact, concept, members, samples, losses, extra)

    def _save(self, tokens, artifact, concept, members, samples, losses, extra) -> Path:
        kinds = sorted({s.kind for s in samples})
        header = {"method": self.name, "concept": concept.name, "backbone": str(self.backbone.path),
                  "backbone_sha256": self.backbone_hash(), "config": self.describe()["config"],
                  "epoch_losses": losses, "samples": {k: sum(1 for s in samples if s.kind == k) for k in kinds},
                  **extra}
        tokens.save(artifact, header)
        return artifact

    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        from unifybench.models.concept_tokens import ConceptTokens, attach
        tokens, header = ConceptTokens.load(path)
        members = header.get("scenario") or []
        if header.get("method") != self.name or concept.name not in members or \
                tokens.token_ids.tolist() != self._ids_for(members)[0]:
            raise UserError(f"{path}: concept tokens of {header.get('method')!r} do not fit this {self.name} setup")
        if header.get("backbone_sha256") != self.backbone_hash():
            raise UserError(f"{path}: concept tokens were trained on another backbone ({header.get('backbone')})")
        attach(self.backbone, tokens)
        self._members = members
        if self.config.visual_prompt:
            self._load_banks(Path(path).with_name(BANKS_FILE), members)

    # --- initialisation from masked visual features ---
    def _kmeans_init(self, tokens, concepts: list[Concept], benchmark) -> str:
        from sklearn.cluster import KMeans
        cfg = self.config
        k = cfg.num_tokens
        base = self.backbone.input_embeddings().weight.detach().float()
        target_norm = float(base.norm(dim=1).mean())
        sources = []
        with torch.no_grad():
            for i, c in enumerate(concepts):
                masks = benchmark.train_masks(c)
                feats, source = self.vision.patch_features(c.train_images, masks, self.load_rgb, projected=True)
                sources.append(source)
                x = feats.cpu().double().numpy()
                n = min(k, len(x))
                km = KMeans(n_clusters=n, random_state=0, n_init=cfg.kmeans_n_init).fit(x)
                cent = torch.tensor(km.cluster_centers_, dtype=torch.float32)
                cent = cent / cent.norm(dim=1, keepdim=True).clamp_min(1e-12) * target_norm
                row = i * (k + 1)
                tokens.embed[row] = cent.mean(0).to(tokens.embed.device)
                tokens.embed[row + 1:row + 1 + n] = cent.to(tokens.embed.device)
        return ", ".join(f"{c.name}: {s}" for c, s in zip(concepts, sources))

    # --- training ---
    def train(self, params: list[torch.nn.Parameter], samples: list["MCSample"], generator: torch.Generator,
              description: str) -> list[float]:
        cfg = self.config
        b, v = self.backbone, self.vision
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps,
                                      betas=(0.9, 0.999))
        steps = (len(samples) + cfg.batch_size - 1) // cfg.batch_size
        cache: dict = {}
        losses = []
        with maybe_task(self.ctx.progress, description, steps * cfg.epochs) as advance:
            for _ in range(cfg.epochs):
                order = torch.randperm(len(samples), generator=generator).tolist()
                total = 0.0
                for start in range(0, len(order), cfg.batch_size):
                    batch = [samples[i] for i in order[start:start + cfg.batch_size]]
                    ids, mask, targets = collate(batch, b.pad_id, b.device)
                    images = []
                    for s in batch:
                        if s.image is not None:
                            if (s.image, s.flip) not in cache:
                                cache[(s.image, s.flip)] = v.encode(self.load_rgb(s.image, s.flip))
                            images.append(cache[(s.image, s.flip)])
                    loss = sequence_loss(_WithImages(v, v.batch(images)), ids, mask, targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach())
                    advance()
                losses.append(total / max(steps, 1))
        return losses

    # --- prediction ---
    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        items = [i for i in items if i.task in self.tasks]
        members = self._members or [concept.name]
        preds = []
        with torch.no_grad():
            with maybe_task(self.ctx.progress, f"answering {concept.name}", len(items)) as advance:
                for item in items:
                    preds.append(self._answer(item, concept, members))
                    advance()
        return preds

    def _question(self, item: Item) -> str:
        if item.task != MC:
            return item.prompt
        query = dict(item.meta).get("query")
        if query is None:
            query = "\n".join([item.prompt, *(f"{lt}. {t}" for lt, t in item.options)])
        return query + MC_SUFFIX

    def _answer(self, item: Item, concept: Concept, members: list[str]) -> Prediction:
        v, b = self.vision, self.backbone
        with_image = item.image is not None and item.task != TEXT_QA
        image, marks = (self.load_rgb(item.image) if with_image else None), None
        if (with_image and self.config.visual_prompt and item.task in MARKED_TASKS
                and dict(item.meta).get("type") in VISUAL_PROMPT_TYPES):
            image, marks = self._mark(image, members)
        inputs = v.encode(image) if image is not None else None
        ids = v.prompt_ids(self._text(self._question(item), concept.name, members), inputs,
                           self._system(members, marks))
        out = v.generate(torch.tensor([ids], device=b.device), inputs, self.config.max_new_tokens)
        text = b.decode([t for t in out if t not in self.latent_ids])
        for (ident, _), m in zip(self.slots, members):
            text = text.replace(ident, f"<{m}>")
        return Prediction(item.id, item.concept, item.task, item.prompt, text=text)

    # --- the visual prompt (SoM) ---
    def _save_banks(self, concepts: list[Concept], benchmark, path: Path) -> None:
        """Raw CLIP patch features of each concept's masked training photos (the banks the marks compare with),
        saved beside the tokens so that a resumed run marks the same way."""
        from safetensors.torch import save_file
        banks = {}
        with torch.no_grad():
            for c in concepts:
                banks[c.name] = self.vision.patch_features(c.train_images, benchmark.train_masks(c), self.load_rgb,
                                                           projected=False)[0].contiguous()
        save_file(banks, str(path))

    def _load_banks(self, path: Path, members: list[str]) -> None:
        from safetensors import safe_open
        if not path.is_file():
            raise UserError(f"{path}: the visual prompt's feature banks are missing (fit again with visual_prompt)")
        with safe_open(str(path), framework="pt") as f:
            if set(f.keys()) != set(members):
                raise UserError(f"{path}: feature banks of {sorted(f.keys())}, expected {members}")
            self._clip_banks = {m: f.get_tensor(m) for m in members}

    def _mark(self, image, members: list[str]):
        from unifybench.methods.mc_llava_vision import draw_marks, place_marks
        maps = self.vision.confidence_maps(image, [self._clip_banks[m] for m in members])
        points = place_marks(maps, TAU, GAMMA)
        marks = {m: i + 1 for i, m in enumerate(members) if points[i] is not None}
        return draw_marks(image, points), marks


@dataclass
class MCSample(Sample):
    image: Path | None = None
    flip: bool = False


class _WithImages:
    """A backbone view whose forward adds the batch's image inputs (for `training.sequence_loss`)."""

    def __init__(self, vision, images):
        self.vision, self.images = vision, images

    def forward_hidden(self, input_ids, attention_mask=None):
        return self.vision.forward_hidden(input_ids, attention_mask, self.images)

    def logits(self, hidden):
        return self.vision.backbone.logits(hidden)


def _vision(cfg: MCLLaVAConfig, ctx, token_names: list[str]):
    from unifybench.methods.mc_llava_vision import LlavaNextVision, LlavaVision
    dtype = torch_dtype(ctx.dtype)
    cls = LlavaNextVision if cfg.base_model == "llava-1.6" else LlavaVision
    return cls.load(cfg.backbone, ctx, dtype, token_names)
