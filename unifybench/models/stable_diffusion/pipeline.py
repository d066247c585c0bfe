"""Stable Diffusion 1.x through diffusers, from a local folder or a snapshot already in the HF cache.

`load_sd` is the one loading path, for real checkpoints and for the tiny random one of `tiny_sd`:
`StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True, ...)`.
Only safetensors weights are read (a folder with `.bin` weights only is refused rather than unpickled),
and nothing is downloaded: a hub id resolves through `resolve_model_path`, which reads the local cache only.
The weight role on the command line is `--model sd=PATH` (`RunContext.models["sd"]`).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from unifybench.errors import UserError
from unifybench.models.safe_weights import check_safetensors, refuse_pickle_only

DEFAULT_CHECKPOINT = "stable-diffusion-v1-5/stable-diffusion-v1-5"
ROLE = "sd"
# The components whose weights are loaded (hashed into results.json) and the file stem each library uses.
WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


@contextlib.contextmanager
def quiet_diffusers():
    """Hide diffusers' and transformers' loading bars and notices (the checks are made explicitly)."""
    from diffusers.utils import logging as d_logging

    from unifybench.models.local import quiet_logging, quiet_transformers
    with quiet_logging(d_logging), quiet_transformers():
        yield


def weight_files(folder: Path, variant: str | None = None) -> dict[str, list[Path]]:
    """component -> the safetensors files `from_pretrained` reads for it (shards listed by their index)."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(f"{folder}: not a diffusers Stable Diffusion folder (no model_index.json)")
    try:
        doc = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{index}: cannot read it: {e}") from None
    if "StableDiffusion" not in str(doc.get("_class_name", "")):
        raise UserError(f"{index}: a {doc.get('_class_name')!r} checkpoint, not a Stable Diffusion pipeline")
    out = {}
    for component, stem in WEIGHT_STEMS.items():
        name = f"{stem}.{variant}.safetensors" if variant else f"{stem}.safetensors"
        single = folder / component / name
        sharded = folder / component / f"{name}.index.json"
        if single.is_file():
            out[component] = [check_safetensors(single, f"Stable Diffusion {component}")]
        elif sharded.is_file():
            try:
                shards = sorted(set(json.loads(sharded.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"{sharded}: malformed safetensors index ({type(e).__name__}: {e})") from None
            out[component] = [check_safetensors(folder / component / s, f"Stable Diffusion {component}")
                              for s in shards]
        else:
            # Pickles are refused by name, never handed to diffusers (whose fallback would unpickle them).
            refuse_pickle_only(folder / component, f"Stable Diffusion {component}", name)
            raise UserError(f"{folder / component}: no {name} (only safetensors weights are read)")
    return out


@dataclass
class StableDiffusion:
    pipe: object                 # diffusers.StableDiffusionPipeline
    path: Path
    files: dict[str, list[Path]]

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
             variant: str | None = None) -> "StableDiffusion":
        from diffusers import StableDiffusionPipeline
        path = Path(path)
        files = weight_files(path, variant)
        with quiet_diffusers():
            try:
                # No safety checker: the DreamBench protocol scores the raw generated images, and the checker
                # would replace flagged ones by black images (silently moving CLIP/DINO numbers).
                pipe = StableDiffusionPipeline.from_pretrained(
                    path, local_files_only=True, use_safetensors=True, safety_checker=None,
                    requires_safety_checker=False, dtype=dtype, variant=variant)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load Stable Diffusion from {path}: {e}") from None
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe=pipe, path=path, files=files)

    def weight_files(self) -> list[Path]:
        return [p for component in WEIGHT_STEMS for p in self.files[component]]

    def model_files(self) -> dict[str, Path]:
        """role -> weight file, for hashing into results.json (`sd/unet/diffusion_pytorch_model.safetensors`)."""
        return {f"sd/{p.parent.name}/{p.name}": p for p in self.weight_files()}


def load_sd(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
            variant: str | None = None) -> StableDiffusion:
    return StableDiffusion.load(path, device=device, dtype=dtype, variant=variant)
