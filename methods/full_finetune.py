"""Full-model fine-tuning of Chameleon/Anole: Yo'Chameleon's supplementary, Sec. 1 and Table 1.

"For full-model fine-tuning, we fine-tune Chameleon using the prompt "A photo of <sks>" with a learning rate
of 1e-7, a batch size of 2, over maximum 1000 iterations"; Table 1 reports iter=300 (the default here) and
iter=500 (preset ``iter500``). Every parameter of the language model (embeddings, decoder layers, final norm,
output head; not the VQ image tokenizer) is trained with AdamW on `<s>A photo of <sks>.<eot>` followed by a
training photo's image tokens (loss on the image block and its end of turn), each photo also mirrored
(Yo'Chameleon flips its photos at random, p = 0.5; here both copies are kept, so no draw is needed), for
`iterations` optimizer steps over seeded shuffles of those samples.

The concept is the identifier alone: `personalized_prompt()` is `<sks>`, put in front of every query as
Yo'Chameleon puts its personalized prompt. The artifact is the fine-tuned language-model tensors
(safetensors, all of them change). The base weights are kept in memory (on the CPU) when the backbone is
loaded; after every fit, and on `unload()`, they are copied back bit for bit, so each concept starts from the
base and the forgetting stage measures the true base model.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, REC, TEXT_QA, VQA, Benchmark, Concept
from unifybench.environment import derive_seed
from unifybench.errors import UserError
from unifybench.images import open_rgb
from unifybench.methods.base import Method
from unifybench.methods.yochameleon import GEN_PROMPT, ChameleonPrompting, YoChameleonConfig, load_chameleon
from unifybench.settings import positive, within
from unifybench.training import OptimConfig, Sample, train_tokens

log = logging.getLogger(__name__)

FORMAT = "unifybench.full_finetune/1"
ARTIFACT = "full_weights.safetensors"
_YO = YoChameleonConfig()


@dataclass
class FullFinetuneConfig:
    """Defaults: the supplementary's (lr 1e-7, batch 2, 300 iterations, "A photo of <sks>"); the optimizer's
    weight decay / eps and the answer / generation settings are Yo'Chameleon's."""

    backbone: str = _YO.backbone               # local folder or a snapshot in the HF cache; "tiny"
    identifier: str = _YO.identifier           # reserved Chameleon token used as <sks> (as Yo'Chameleon)
    prompt: str = GEN_PROMPT                   # "A photo of <sks>."
    lr: float = positive(1e-7)                 # AdamW learning rate of all the model's weights
    weight_decay: float = _YO.weight_decay     # AdamW weight decay
    adam_eps: float = positive(_YO.adam_eps)   # AdamW epsilon
    batch_size: int = positive(2)              # training samples per optimizer step
    iterations: int = positive(300)            # optimizer steps (Table 1: 300; preset iter500: 500)
    n_train_images: int = 0                    # training photos used, sorted by name; 0: all of them
    hflip: bool = True                         # each photo also mirrored
    max_new_tokens: int = positive(_YO.max_new_tokens)  # understanding answers, greedy
    temperature: float = positive(_YO.temperature)  # image sampling: the Anole defaults, no CFG
    top_k: int = _YO.top_k                     # image sampling: top-k
    top_p: float = within(_YO.top_p, 0, 1, low_open=True)  # image sampling: nucleus
    gen_batch_size: int = positive(_YO.gen_batch_size)  # images generated per forward batch
    gen_prompts_limit: int = _YO.gen_prompts_limit   # > 0: only the first N generation prompts per task
    images_per_prompt: int = _YO.images_per_prompt   # > 0: overrides the benchmark's images per prompt


class ChameleonFullFinetune(ChameleonPrompting, Method):
    name = "chameleon-full-ft"
    tasks = frozenset({REC, VQA, TEXT_QA, GEN, KNOWLEDGE_GEN})
    config_cls = FullFinetuneConfig
    presets = {
        "iter500": dict(iterations=500),
        # The embedded default: the random tiny Chameleon, a few steps at a rate that moves the loss.
        "tiny": dict(backbone="tiny", iterations=8, lr=1e-3, gen_prompts_limit=1, images_per_prompt=2,
                     max_new_tokens=8),
    }
    load_rgb = staticmethod(open_rgb)

    def setup(self) -> None:
        cfg = self.config
        self.backbone = load_chameleon(self.ctx, cfg.backbone)
        self.sks = self.backbone.token_id(cfg.identifier)
        self.token_ids = [self.sks]
        self._image_codes: dict[tuple[str, bool], list[int]] = {}
        self._code_cache = None   # ImageCodeCache, made at the first image
        model = self.backbone.model
        tokenizer = {id(p) for p in model.model.vqmodel.parameters()}
        # The language model's parameters, by name (named_parameters lists a tied tensor once).
        self.lm_params = {n: p for n, p in model.named_parameters() if id(p) not in tokenizer}
        self._base = {n: p.detach().to("cpu", copy=True) for n, p in self.lm_params.items()}

    def needs(self, concepts) -> list:
        from unifybench import needs
        return [needs.weights("chameleon", self.config.backbone, self.ctx, f"method {self.name}")]

    def model_files(self) -> dict[str, Path]:
        return {f"chameleon/{p.name}": p for p in self.backbone.weight_files()}

    def personalized_prompt(self) -> list[int]:
        """The identifier alone: the concept lives in the weights."""
        return [self.sks]

    # --- base weights ---
    @torch.no_grad()
    def unload(self) -> None:
        """The base weights back into the backbone, bit for bit."""
        for n, p in self.lm_params.items():
            p.copy_(self._base[n])

    # --- fit ---
    def training_samples(self, concept: Concept) -> list[Sample]:
        """`<s>A photo of <sks>.<eot>` + a photo's image block (and its mirror image) + `<eot>`."""
        cfg = self.config
        photos = list(concept.train_images[:cfg.n_train_images] if cfg.n_train_images else concept.train_images)
        if not photos:
            raise UserError(f"concept {concept.name!r} has no training images")
        human = self._text(cfg.prompt)
        flips = (False, True) if cfg.hflip else (False,)
        return [self._sample(human, self._image_block(p, f), "gen") for p in photos for f in flips]

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> Path:
        cfg = self.config
        if self.backbone.dtype != torch.float32:
            log.warning("%s: weights in %s; updates of lr %g may round away (use --dtype float32)", self.name,
                        str(self.backbone.dtype).replace("torch.", ""), cfg.lr)
        self.unload()   # from the base, whatever concept was loaded for the last predict
        samples = self.training_samples(concept)
        params = list(self.lm_params.values())
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "order", concept.name))
        optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.adam_eps, cfg.batch_size, epochs=0,
                            max_steps=cfg.iterations)
        try:
            for p in params:
                p.requires_grad_(True)
            losses = train_tokens(self.backbone, params, samples, optim, gen, self.ctx.progress,
                                  f"fine-tuning {concept.name}")
            for p in params:
                p.grad = None
            return self._save(Path(out_dir) / ARTIFACT, concept, samples, losses)
        finally:
            for p in params:
                p.requires_grad_(False)
                p.grad = None
            self.unload()   # the next concept starts from the base

    def _save(self, path: Path, concept: Concept, samples: list[Sample], losses: list[float]) -> Path:
        from safetensors.torch import save_file
        tensors = {n: p.detach().cpu().contiguous() for n, p in self.lm_params.items()}
        unchanged = sorted(n for n, t in tensors.items() if torch.equal(t, self._base[n]))
        if len(unchanged) == len(tensors):
            log.warning("%s: fine-tuning %s changed no weight (lr %g in %s)", self.name, concept.name,
                        self.config.lr, self.backbone.dtype)
        header = {"format": FORMAT, "method": self.name, "concept": concept.name,
                  "backbone": str(self.backbone.path), "backbone_sha256": self.backbone_hash(),
                  "config": self.describe()["config"], "iterations": self.config.iterations,
                  "epoch_losses": losses, "samples": len(samples), "unchanged_tensors": unchanged}
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata={"unifybench": json.dumps(header, sort_keys=True)})
        tmp.replace(path)
        return path

    # --- load ---
    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        """The concept's fine-tuned weights into the backbone: every language-model tensor must be in the file,
        with its shape, and nothing else; a file that does not fit is a UserError and leaves the base in."""
        from safetensors import SafetensorError, safe_open
        if path is None:
            raise UserError(f"{self.name}: concept {concept.name!r} has no fine-tuned weights")
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                try:
                    meta = json.loads((f.metadata() or {}).get("unifybench", "{}"))
                except ValueError:
                    meta = {}
                if meta.get("format") != FORMAT or meta.get("method") != self.name:
                    raise UserError(f"{path}: not {self.name} weights (format {meta.get('format')!r}, "
                                    f"method {meta.get('method')!r})")
                if meta.get("backbone_sha256") != self.backbone_hash():
                    raise UserError(f"{path}: fine-tuned from another backbone than {self.backbone.path}")
                keys = set(f.keys())
                missing = [n for n in self.lm_params if n not in keys]
                extra = sorted(keys - set(self.lm_params))
                if missing or extra:
                    raise UserError(f"{path}: {len(missing)} language-model tensors missing (e.g. "
                                    f"{(missing or ['-'])[0]!r}), {len(extra)} unknown (e.g. {(extra or ['-'])[0]!r})")
                for n, p in self.lm_params.items():
                    shape = list(f.get_slice(n).get_shape())
                    if shape != list(p.shape):
                        raise UserError(f"{path}: tensor {n!r} has shape {shape}, the backbone's is {list(p.shape)}")
                with torch.no_grad():
                    for n, p in self.lm_params.items():
                        p.copy_(f.get_tensor(n))
        except (OSError, SafetensorError) as e:
            self.unload()
            raise UserError(f"{path}: not a readable {self.name} weights file ({e})") from None
        except Exception:
            self.unload()
            raise
