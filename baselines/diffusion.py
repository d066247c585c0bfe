"""DreamBooth and Textual Inversion on Stable Diffusion 1.x (diffusers): UniCTokens' "Gen. Only" rows.

UniCTokens Table 1/2 list "DreamBooth (SD)" and "Text inversion" (1.0B parameters, ~10 training images; Table 2
also has DreamBooth with ~3000 images: `--set n_train_images=3000` uses up to that many of the concept's
photos). Both fine-tune per concept from the same frozen base checkpoint (`--model sd=PATH`, default
`stable-diffusion-v1-5/stable-diffusion-v1-5`, local folder or HF-cache snapshot only) and answer the
generation tasks only.

- `dreambooth-sd` (Ruiz et al., CVPR 2023): the UNet (and, by config, the text encoder) is fine-tuned on the
  concept's photos with the prompt "a sks dog" (rare identifier + class noun), noise-prediction MSE, plus the
  class-specific prior-preservation loss on images the frozen base model drew from "a dog" (cached on disk
  under `<cache>/class_images/`, keyed by the checkpoint's weight hashes, the prompt, the seed and the
  sampling settings). Artifact: `dreambooth/unet/diffusion_pytorch_model.safetensors` (+ `text_encoder/`).
- `textual-inversion` (Gal et al., ICLR 2023): one new token `<name>` is added to the tokenizer, its embedding
  starts from the class noun's and is the only thing trained (everything else frozen). Artifact:
  `learned_embeds.safetensors` (`{token: [1, D]}`, the format `pipeline.load_textual_inversion` reads), loaded
  back through `load_textual_inversion` for prediction.

The base pipeline is never modified: the trained UNet / text encoder are fresh copies read from the
checkpoint files, and prediction builds a per-concept pipeline around them. Training is seeded from the run
seed and the concept name; each generation prompt draws from `derive_seed(seed, "gen", item id)`, so a rerun
gives the same images bit for bit. Benchmark prompts carry `<sks>`: DreamBooth writes it "sks dog", TI
"<name> dog" (a class noun already after the placeholder, as in DreamBench prompts, is not repeated).
Images are scored raw: the safety checker is not loaded (see `unifybench.models.stable_diffusion.pipeline`).
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from unifybench.data.schema import GEN, KNOWLEDGE_GEN, Benchmark, Concept, Item, Prediction
from unifybench.environment import derive_seed
from unifybench.errors import UserError
from unifybench.prompts import with_class_noun
from unifybench.images import open_rgb, save_images
from unifybench.methods.base import Method, generation_items
from unifybench.models import torch_dtype
from unifybench.models.stable_diffusion.pipeline import DEFAULT_CHECKPOINT, quiet_diffusers
from unifybench.progress import maybe_task
from unifybench.settings import fraction, positive, within
from unifybench import trainlog

CLASS_IMAGES_VERSION = 1
EVAL_T = (0.1, 0.3, 0.5, 0.7, 0.9)   # fixed timesteps (fractions of T) of the before/after training loss

# Textual Inversion training prompts (our own wording); "{}" is the learned token.
TI_TEMPLATES = (
    "a photo of a {}", "a picture of the {}", "an image showing a {}", "a snapshot of my {}",
    "a close shot of the {}", "a {} seen from the side", "a well lit photo of a {}", "a dim photo of the {}",
    "a small {} in the frame", "a large {} filling the frame", "a blurry photo of a {}",
    "a sharp, detailed photo of the {}",
)


@dataclass
class DiffusionConfig:
    checkpoint: str = DEFAULT_CHECKPOINT   # folder, cached hub id, or "tiny"; `--model sd=PATH` wins
    variant: str = ""                      # weight variant to read ("fp16"); "" for the default files
    n_train_images: int = 10               # training photos (sorted by name); UniCTokens: ~10 (or ~3000)
    resolution: int = positive(512)        # training crops; SD-1.x's native size (both diffusers READMEs)
    center_crop: bool = False              # False: random crops (both diffusers scripts' default)
    flip_p: float = fraction(0.0)          # horizontal flip probability
    lr: float = positive(5e-6)             # AdamW learning rate (constant schedule)
    scale_lr: bool = False                 # lr x batch_size x grad_accum (diffusers' --scale_lr)
    batch_size: int = positive(1)          # training images per forward pass
    grad_accum: int = positive(1)          # forward passes per optimizer step
    max_train_steps: int = 400             # optimizer steps
    adam_beta1: float = within(0.9, 0, 1, high_open=True)  # AdamW beta1 (the AdamW values: the diffusers scripts' defaults)
    adam_beta2: float = within(0.999, 0, 1, high_open=True)  # AdamW beta2
    weight_decay: float = 1e-2             # AdamW weight decay
    adam_eps: float = positive(1e-8)       # AdamW epsilon
    max_grad_norm: float = 1.0             # gradient clipping norm
    num_inference_steps: int = positive(50)  # the pipeline's scheduler (PNDM for SD-1.x), 50 steps
    guidance_scale: float = 7.5            # SD's classifier-free guidance default
    gen_resolution: int = positive(512)    # generated images are gen_resolution x gen_resolution
    gen_batch_size: int = positive(4)      # images per pipeline call (DreamBench draws 4 per prompt)
    gen_prompts_limit: int = 0             # > 0: only the first N prompts per generation task and concept
    images_per_prompt: int = 0             # > 0: overrides the benchmark's images per prompt


@dataclass
class DreamBoothConfig(DiffusionConfig):
    """Defaults: diffusers' examples/dreambooth/README.md, the Stable Diffusion command "with prior-preservation
    loss": resolution 512, batch 1, gradient accumulation 1, lr 5e-6 (constant, no warm-up),
    prior_loss_weight 1.0, num_class_images 200, max_train_steps 800 (the README's command without prior
    preservation uses 400 steps). Prompt forms from Ruiz et al. ("a [V] [class noun]" / "a [class noun]")."""

    identifier: str = "sks"                # the rare token [V] (the diffusers README's "sks")
    instance_prompt: str = "a {identifier} {class_noun}"  # training prompt of the concept photos
    class_prompt: str = "a {class_noun}"   # prompt of the prior-preservation class images
    prior_preservation: bool = True        # also train on generated class images (the prior loss)
    prior_loss_weight: float = 1.0         # weight of that loss
    num_class_images: int = 200            # class images drawn (once, cached) for it
    class_batch_size: int = positive(4)    # images per call when drawing class images (the script's default)
    train_text_encoder: bool = False       # the README's optional --train_text_encoder, off by default
    max_train_steps: int = 800


@dataclass
class TextualInversionConfig(DiffusionConfig):
    """Defaults: diffusers' examples/textual_inversion/README.md (Stable Diffusion command): resolution 512,
    batch 1 with gradient accumulation 4, lr 5e-4 with --scale_lr (2e-3 effective on one GPU), constant
    schedule, 3000 steps; the script's defaults flip_p 0.5 and one vector per token. Gal et al.: one new
    embedding, initialised from a coarse descriptor of the concept (here the class noun's embedding, the mean
    over its tokens when it has several), everything else frozen."""

    token: str = "<{name}>"                # the placeholder token added to the tokenizer
    initializer: str = ""                  # the word(s) whose embedding starts the token; "": the class noun
    class_noun_in_prompt: bool = True      # prompts say "<name> dog" (False: "<name>" where "<sks>" was)
    lr: float = positive(5e-4)
    scale_lr: bool = True
    grad_accum: int = positive(4)
    max_train_steps: int = 3000
    flip_p: float = fraction(0.5)


_TINY = dict(checkpoint="tiny", n_train_images=3, resolution=32, num_inference_steps=3, gen_resolution=32,
             gen_prompts_limit=1, images_per_prompt=1, max_train_steps=4)


# ----------------------------------------------------------------------------------------------------------
# Photos
# ----------------------------------------------------------------------------------------------------------

def _fit_size(image, size: int):
    """`image` with its shorter side resized to `size` (bicubic); unchanged when it already is."""
    from PIL import Image
    w, h = image.size
    if min(w, h) == size:
        return image
    scale = size / min(w, h)
    return image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)


def _format(template: str, what: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"{what} {template!r}: only {', '.join('{' + k + '}' for k in fields)} can be used ({e})") from None


def _pixels(image, size: int, center_crop: bool, flip_p: float, gen: torch.Generator) -> torch.Tensor:
    """[3, size, size] in [-1, 1]: shorter side resized to `size` (bicubic), then a center or random square
    crop and a horizontal flip with probability `flip_p` (random choices from `gen`)."""
    import numpy as np
    from PIL import Image
    image = _fit_size(image, size)
    w, h = image.size
    if center_crop:
        left, top = (w - size) // 2, (h - size) // 2
    else:
        left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    image = image.crop((left, top, left + size, top + size))
    if flip_p > 0 and float(torch.rand((), generator=gen)) < flip_p:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class _Cycle:
    """Indices 0..n-1 in a fresh random order every pass (epochs over the photos)."""

    def __init__(self, n: int, gen: torch.Generator):
        self.n, self.gen, self.order = n, gen, []

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.gen).tolist()
            out.append(self.order.pop(0))
        return out


# ----------------------------------------------------------------------------------------------------------
# The shared method
# ----------------------------------------------------------------------------------------------------------

class StableDiffusionBaseline(Method):
    """What DreamBooth and Textual Inversion share: the base checkpoint, the denoising loss, generation."""

    tasks = frozenset({GEN, KNOWLEDGE_GEN})
    config_cls = DiffusionConfig

    def setup(self) -> None:
        from unifybench.models.stable_diffusion.pipeline import load_sd
        from unifybench.models.weights import resolve
        cfg = self.config
        self.path = resolve("sd", cfg.checkpoint or DEFAULT_CHECKPOINT, self.ctx)
        self.dtype = torch_dtype(self.ctx.dtype)
        self.sd = load_sd(self.path, device=self.ctx.device, dtype=self.dtype, variant=cfg.variant or None)
        for module in (self.sd.pipe.unet, self.sd.pipe.vae, self.sd.pipe.text_encoder):
            module.requires_grad_(False)   # the base model is frozen; trained parts are fresh copies
        self._active: tuple[str, object] | None = None

    def needs(self, concepts) -> list:
        from unifybench import needs
        return [needs.weights("sd", self.config.checkpoint or DEFAULT_CHECKPOINT, self.ctx, f"method {self.name}")]

    def model_files(self) -> dict[str, Path]:
        return self.sd.model_files()

    @property
    def device(self) -> torch.device:
        return self.sd.pipe.unet.device

    # --- pieces read from the checkpoint files (never shared with the base pipeline) ---
    def _load_component(self, cls, subfolder: str, dtype: torch.dtype):
        with quiet_diffusers():
            return cls.from_pretrained(self.path, subfolder=subfolder, dtype=dtype, use_safetensors=True,
                                       local_files_only=True, variant=self.config.variant or None)

    def _tokenizer(self):
        from transformers import CLIPTokenizer
        with quiet_diffusers():
            return CLIPTokenizer.from_pretrained(self.path, subfolder="tokenizer", local_files_only=True)

    def _pipeline(self, unet=None, text_encoder=None, tokenizer=None):
        """A pipeline over the base components with some of them swapped (the base one is left as it is)."""
        from diffusers import StableDiffusionPipeline
        base = self.sd.pipe

        def pick(mine, theirs):
            return theirs if mine is None else mine

        pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=pick(text_encoder, base.text_encoder),
                                       tokenizer=pick(tokenizer, base.tokenizer), unet=pick(unet, base.unet),
                                       scheduler=type(base.scheduler).from_config(base.scheduler.config),
                                       safety_checker=None, feature_extractor=None, image_encoder=None,
                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # --- training ---
    def _photos(self, concept: Concept) -> list:
        """The training photos, read once and resized (shorter side = resolution; crops are taken per step)."""
        paths = list(concept.train_images[:self.config.n_train_images])
        if not paths:
            raise UserError(f"concept {concept.name!r} has no training images")
        return [_fit_size(open_rgb(p), self.config.resolution) for p in paths]

    def _noise_scheduler(self):
        from diffusers import DDPMScheduler
        with quiet_diffusers():
            sched = DDPMScheduler.from_config(self.sd.pipe.scheduler.config)
        if sched.config.prediction_type not in ("epsilon", "v_prediction"):
            raise UserError(f"{self.path}: unsupported prediction_type {sched.config.prediction_type!r}")
        return sched

    def _encode_text(self, text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(self.device)
        return text_encoder(ids)[0]

    def _latents(self, pixels: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        vae = self.sd.pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist
            latents = dist.sample(generator=gen) if gen is not None else dist.mode()
        return latents * vae.config.scaling_factor

    def _per_sample_loss(self, unet, sched, latents: torch.Tensor, states: torch.Tensor, gen: torch.Generator,
                         timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """Noise-prediction MSE per sample: x_t = scheduler.add_noise(x_0, eps, t), target eps (or v)."""
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen, dtype=torch.float32).to(self.device, latents.dtype)
        if timesteps is None:
            timesteps = torch.randint(0, sched.config.num_train_timesteps, (n,), generator=gen)
        t = timesteps.to(self.device)
        noisy = sched.add_noise(latents, noise, t)
        target = noise if sched.config.prediction_type == "epsilon" else sched.get_velocity(latents, noise, t)
        pred = unet(noisy.to(unet.dtype), t, encoder_hidden_states=states.to(unet.dtype)).sample
        return ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))

    def _eval_loss(self, unet, sched, photos: list, states: torch.Tensor, seed: int) -> float:
        """The denoising loss on the center-cropped photos at fixed timesteps and fixed noise (comparable
        before and after training)."""
        gen = torch.Generator().manual_seed(seed)
        T = sched.config.num_train_timesteps
        total, count = 0.0, 0
        with torch.no_grad():
            for image in photos:
                px = _pixels(image, self.config.resolution, True, 0.0, gen).unsqueeze(0)
                latents = self._latents(px, None).repeat(len(EVAL_T), 1, 1, 1)
                ts = torch.tensor([int(T * f) for f in EVAL_T])
                loss = self._per_sample_loss(unet, sched, latents, states.expand(len(EVAL_T), -1, -1), gen, ts)
                total, count = total + float(loss.sum()), count + len(EVAL_T)
        return total / count

    def _optimizer(self, params: list) -> torch.optim.Optimizer:
        cfg = self.config
        lr = cfg.lr * (cfg.batch_size * cfg.grad_accum if cfg.scale_lr else 1)
        return torch.optim.AdamW(params, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                 weight_decay=cfg.weight_decay, eps=cfg.adam_eps)

    def _check_training_config(self) -> None:
        cfg = self.config
        if cfg.resolution % 8 or cfg.gen_resolution % 8:
            raise UserError(f"{self.name}: resolution and gen_resolution must be multiples of 8")

    # --- prediction ---
    def prompt_for(self, concept: Concept, prompt: str) -> str:
        raise NotImplementedError

    def _concept_pipeline(self, concept: Concept):
        if self._active is None or self._active[0] != concept.name:
            raise UserError(f"{self.name}: no artifact loaded for concept {concept.name!r}")
        return self._active[1]

    def _release(self) -> None:
        self._active = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def draw(self, pipe, prompt: str, n: int, gen: torch.Generator) -> list:
        cfg = self.config
        images = []
        while len(images) < n:
            k = min(max(cfg.gen_batch_size, 1), n - len(images))
            out = pipe(prompt, height=cfg.gen_resolution, width=cfg.gen_resolution,
                       num_inference_steps=cfg.num_inference_steps, guidance_scale=cfg.guidance_scale,
                       num_images_per_prompt=k, generator=gen, output_type="pil")
            images += out.images
        return images

    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        cfg = self.config
        pipe = self._concept_pipeline(concept)
        gen_items = generation_items(items, self.tasks, cfg.gen_prompts_limit)
        counts = [cfg.images_per_prompt or i.n_images for i in gen_items]
        preds = []
        with torch.no_grad(), maybe_task(self.ctx.progress, f"generating {concept.name}", sum(counts)) as advance:
            for n, (item, k) in enumerate(zip(gen_items, counts)):
                gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "gen", item.id))
                images = self.draw(pipe, self.prompt_for(concept, item.prompt), k, gen)
                preds.append(Prediction(item.id, item.concept, item.task, item.prompt,
                                        images=save_images(images, out_dir, f"{item.task}_{n:03d}")))
                advance(k)
        return preds


# ----------------------------------------------------------------------------------------------------------
# DreamBooth
# ----------------------------------------------------------------------------------------------------------

class DreamBoothSD(StableDiffusionBaseline):
    name = "dreambooth-sd"
    config_cls = DreamBoothConfig
    # UniCTokens Table 2's "DreamBooth (~3000 images)": as many of the concept's training photos as the data
    # root provides, up to 3000 (the bundled benchmarks have a handful per concept).
    presets = {"tiny": dict(_TINY, lr=1e-3, num_class_images=2, class_batch_size=2),
               "images-3000": dict(n_train_images=3000)}

    def prompt_for(self, concept: Concept, prompt: str) -> str:
        return with_class_noun(prompt, concept.class_noun, self.config.identifier)

    def instance_prompt(self, concept: Concept) -> str:
        return _format(self.config.instance_prompt, "instance_prompt", identifier=self.config.identifier,
                       class_noun=concept.class_noun)

    def class_prompt(self, concept: Concept) -> str:
        return _format(self.config.class_prompt, "class_prompt", class_noun=concept.class_noun)

    # --- prior preservation: class images drawn by the frozen base model, cached on disk ---
    def class_images(self, prompt: str, n: int) -> list[Path]:
        """`n` images of `prompt` from the base model; image i is seeded by (run seed, prompt, i), so a larger
        `n` reuses the smaller set. Cached under `<cache>/class_images/<key>/` as PNG."""
        from unifybench.store import file_sha256
        cfg = self.config
        key_doc = {"version": CLASS_IMAGES_VERSION,
                   "weights": {role: file_sha256(p, self.ctx.cache_dir) for role, p in self.model_files().items()},
                   "scheduler": dict(self.sd.pipe.scheduler.config), "prompt": prompt, "seed": self.ctx.seed,
                   "steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale,
                   "resolution": cfg.resolution, "dtype": self.ctx.dtype}
        key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest()
        folder = Path(self.ctx.cache_dir) / "class_images" / key
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "key.json").exists():   # what the images are, for people looking in the cache
            tmp = folder / f"key.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(key_doc, indent=1, sort_keys=True, default=str))
            tmp.replace(folder / "key.json")
        paths = [folder / f"{i:05d}.png" for i in range(n)]
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            batch = max(cfg.class_batch_size, 1)
            with torch.no_grad(), maybe_task(self.ctx.progress, f"class images '{prompt}'", len(missing)) as advance:
                for start in range(0, len(missing), batch):
                    chunk = missing[start:start + batch]
                    gens = [torch.Generator().manual_seed(derive_seed(self.ctx.seed, "class", prompt, str(i)))
                            for i in chunk]
                    images = self.sd.pipe(prompt, height=cfg.resolution, width=cfg.resolution,
                                          num_inference_steps=cfg.num_inference_steps,
                                          guidance_scale=cfg.guidance_scale, num_images_per_prompt=len(chunk),
                                          generator=gens, output_type="pil").images
                    for i, image in zip(chunk, images):
                        tmp = paths[i].with_suffix(f".{os.getpid()}.tmp.png")
                        image.save(tmp)
                        tmp.replace(paths[i])   # readers never see half a file
                    advance(len(chunk))
        return paths

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> Path:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel
        cfg = self.config
        self._check_training_config()
        self._release()
        photos = self._photos(concept)
        sched = self._noise_scheduler()
        base = self.sd.pipe
        instance, klass = self.instance_prompt(concept), self.class_prompt(concept)
        class_paths = self.class_images(klass, cfg.num_class_images) if cfg.prior_preservation else []
        if cfg.prior_preservation and not class_paths:
            raise UserError(f"{self.name}: prior preservation needs num_class_images > 0")

        # Trainable copies in float32 (master weights), read from the checkpoint files.
        unet = self._load_component(UNet2DConditionModel, "unet", torch.float32).to(self.device).train()
        unet.requires_grad_(True)
        params = list(unet.parameters())
        text_encoder = base.text_encoder
        if cfg.train_text_encoder:
            text_encoder = self._load_component(CLIPTextModel, "text_encoder", torch.float32).to(self.device)
            text_encoder.train().requires_grad_(True)
            params += list(text_encoder.parameters())
        tokenizer = base.tokenizer
        with torch.no_grad():
            fixed = {p: self._encode_text(base.text_encoder, tokenizer, [p]) for p in (instance, klass)}

        def states(prompt: str, n: int) -> torch.Tensor:
            if cfg.train_text_encoder:
                return self._encode_text(text_encoder, tokenizer, [prompt] * n)
            return fixed[prompt].expand(n, -1, -1)

        eval_seed = derive_seed(self.ctx.seed, "eval", concept.name)
        with torch.no_grad():
            before = self._eval_loss(unet, sched, photos, states(instance, 1), eval_seed)
        gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "train", concept.name))
        inst_cycle, class_cycle = _Cycle(len(photos), gen), _Cycle(max(len(class_paths), 1), gen)
        optimizer = self._optimizer(params)
        losses, prior_losses = [], []
        b = cfg.batch_size
        with maybe_task(self.ctx.progress, f"training {concept.name}", cfg.max_train_steps) as advance:
            for _ in range(cfg.max_train_steps):
                optimizer.zero_grad(set_to_none=True)
                step_loss = step_prior = 0.0
                for _ in range(cfg.grad_accum):
                    px = [_pixels(photos[i], cfg.resolution, cfg.center_crop, cfg.flip_p, gen)
                          for i in inst_cycle.take(b)]
                    cond = [states(instance, b)]
                    if class_paths:
                        px += [_pixels(open_rgb(class_paths[i]), cfg.resolution, cfg.center_crop, cfg.flip_p, gen)
                               for i in class_cycle.take(b)]
                        cond.append(states(klass, b))
                    latents = self._latents(torch.stack(px), gen)
                    per = self._per_sample_loss(unet, sched, latents, torch.cat(cond), gen)
                    loss = per[:b].mean()
                    prior = per[b:].mean() if class_paths else torch.zeros((), device=per.device)
                    total = loss + cfg.prior_loss_weight * prior
                    (total / cfg.grad_accum).backward()
                    step_loss += loss.item() / cfg.grad_accum
                    step_prior += prior.item() / cfg.grad_accum
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                losses.append(step_loss)
                prior_losses.append(step_prior)
                trainlog.step(step_loss, "dreambooth")
                advance()
        unet.eval()
        with torch.no_grad():
            after = self._eval_loss(unet, sched, photos, states(instance, 1), eval_seed)

        folder = Path(out_dir) / "dreambooth"
        folder.mkdir(parents=True, exist_ok=True)
        with quiet_diffusers():
            unet.to(self.dtype).save_pretrained(folder / "unet", safe_serialization=True)
            if cfg.train_text_encoder:
                text_encoder.eval().to(self.dtype).save_pretrained(folder / "text_encoder", safe_serialization=True)
        log = {"concept": concept.name, "instance_prompt": instance, "class_prompt": klass,
               "n_train_images": len(photos), "n_class_images": len(class_paths),
               "class_images": str(class_paths[0].parent) if class_paths else None,
               "eval_loss_before": before, "eval_loss_after": after, "losses": losses, "prior_losses": prior_losses}
        (folder / "train_log.json").write_text(json.dumps(log, indent=1))
        del unet, optimizer, params
        self._release()
        return folder

    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel
        self._release()
        if path is None:
            raise UserError(f"{self.name}: concept {concept.name!r} has no fine-tuned weights")
        folder = Path(path)
        with quiet_diffusers():
            try:
                unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=self.dtype, use_safetensors=True,
                                                            local_files_only=True)
                text_encoder = None
                if (folder / "text_encoder").is_dir():
                    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=self.dtype,
                                                                 use_safetensors=True, local_files_only=True)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load DreamBooth weights from {folder}: {e}") from None
        unet.to(self.device).eval().requires_grad_(False)
        if text_encoder is not None:
            text_encoder.to(self.device).eval().requires_grad_(False)
        self._active = (concept.name, self._pipeline(unet=unet, text_encoder=text_encoder))


# ----------------------------------------------------------------------------------------------------------
# Textual Inversion
# ----------------------------------------------------------------------------------------------------------

class TextualInversionSD(StableDiffusionBaseline):
    name = "textual-inversion"
    config_cls = TextualInversionConfig
    presets = {"tiny": dict(_TINY, lr=1e-2, grad_accum=1)}

    def token_of(self, concept: Concept) -> str:
        return _format(self.config.token, "token", name=concept.name)

    def prompt_for(self, concept: Concept, prompt: str) -> str:
        from unifybench.data.schema import PLACEHOLDER
        token = self.token_of(concept)
        if self.config.class_noun_in_prompt:
            return with_class_noun(prompt, concept.class_noun, token)
        return prompt.replace(PLACEHOLDER, token)

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> Path:
        from safetensors.torch import save_file
        from transformers import CLIPTextModel
        cfg = self.config
        self._check_training_config()
        self._release()
        photos = self._photos(concept)
        sched = self._noise_scheduler()
        token = self.token_of(concept)
        tokenizer = self._tokenizer()
        if token in tokenizer.get_vocab():
            raise UserError(f"{self.name}: the token {token!r} is already in the tokenizer; choose another "
                            f"with --set token=...")
        init_words = cfg.initializer or concept.class_noun
        init_ids = tokenizer(init_words, add_special_tokens=False).input_ids
        if not init_ids:
            raise UserError(f"{self.name}: the initializer {init_words!r} has no tokens")
        tokenizer.add_tokens(token)
        token_id = tokenizer.convert_tokens_to_ids(token)

        # A float32 copy of the text encoder with one more row; that row is replaced, at every lookup, by the
        # one trainable vector, so no other weight can move.
        text_encoder = self._load_component(CLIPTextModel, "text_encoder", torch.float32).to(self.device)
        text_encoder.requires_grad_(False).eval()
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        table = text_encoder.get_input_embeddings()
        init = table.weight[init_ids].mean(dim=0).detach().clone()
        vector = torch.nn.Parameter(init.clone())
        with torch.no_grad():
            table.weight[token_id] = init

        def substitute(module, inputs, output):
            mask = (inputs[0] == token_id).unsqueeze(-1)
            return torch.where(mask, vector.to(output.dtype), output)

        hook = table.register_forward_hook(substitute)
        unet = self.sd.pipe.unet
        eval_seed = derive_seed(self.ctx.seed, "eval", concept.name)
        eval_prompt = TI_TEMPLATES[0].format(token)
        try:
            with torch.no_grad():
                before = self._eval_loss(unet, sched, photos, self._encode_text(text_encoder, tokenizer, [eval_prompt]),
                                         eval_seed)
            gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "train", concept.name))
            cycle = _Cycle(len(photos), gen)
            optimizer = self._optimizer([vector])
            losses = []
            with maybe_task(self.ctx.progress, f"training {concept.name}", cfg.max_train_steps) as advance:
                for _ in range(cfg.max_train_steps):
                    optimizer.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for _ in range(cfg.grad_accum):
                        idx = cycle.take(cfg.batch_size)
                        px = torch.stack([_pixels(photos[i], cfg.resolution, cfg.center_crop, cfg.flip_p, gen)
                                          for i in idx])
                        picks = torch.randint(0, len(TI_TEMPLATES), (len(idx),), generator=gen).tolist()
                        states = self._encode_text(text_encoder, tokenizer, [TI_TEMPLATES[t].format(token) for t in picks])
                        loss = self._per_sample_loss(unet, sched, self._latents(px, gen), states, gen).mean()
                        (loss / cfg.grad_accum).backward()
                        step_loss += loss.item() / cfg.grad_accum
                    if cfg.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_([vector], cfg.max_grad_norm)
                    optimizer.step()
                    losses.append(step_loss)
                    trainlog.step(step_loss, "textual-inversion")
                    advance()
            with torch.no_grad():
                after = self._eval_loss(unet, sched, photos, self._encode_text(text_encoder, tokenizer, [eval_prompt]),
                                        eval_seed)
        finally:
            hook.remove()
        learned = vector.detach().float().cpu().reshape(1, -1).contiguous()
        path = Path(out_dir) / "learned_embeds.safetensors"
        save_file({token: learned}, str(path), metadata={"format": "pt"})   # diffusers' textual-inversion format
        log = {"concept": concept.name, "token": token, "initializer": init_words, "n_train_images": len(photos),
               "eval_prompt": eval_prompt, "eval_loss_before": before, "eval_loss_after": after, "losses": losses}
        (Path(out_dir) / "textual_inversion_log.json").write_text(json.dumps(log, indent=1))
        del text_encoder, optimizer
        self._release()
        return path

    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        from transformers import CLIPTextModel
        self._release()
        if path is None:
            raise UserError(f"{self.name}: concept {concept.name!r} has no learned embedding")
        tokenizer = self._tokenizer()
        text_encoder = self._load_component(CLIPTextModel, "text_encoder", self.dtype).to(self.device)
        text_encoder.eval().requires_grad_(False)
        pipe = self._pipeline(text_encoder=text_encoder, tokenizer=tokenizer)
        with quiet_diffusers():
            try:
                pipe.load_textual_inversion(str(path), token=self.token_of(concept), use_safetensors=True,
                                            local_files_only=True)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load the textual inversion embedding {path}: {e}") from None
        self._active = (concept.name, pipe)
