"""DINO ViT-S/16 (`facebook/dino-vits16` layout) for the DINO image-similarity metric, from LOCAL files.

`load_dino(folder)` loads a transformers ViT folder (`config.json` with model_type "vit" + weights) with
`ViTModel.from_pretrained(folder, add_pooling_layer=False)`. The embedding is the CLS token of the last
hidden state, i.e. after the final LayerNorm, as DINO's own `forward` returns it; the ViT pooler is never
used (it was never trained for DINO checkpoints; transformers #25377/#25392). Preprocessing is DINO's eval
transform, not the checkpoint's `preprocessor_config.json` (the generic ViTImageProcessor squashes to
224x224): PIL bicubic resize of the short side to 256, centre crop 224, ImageNet mean/std. For another
input size the resize side keeps the 256/224 ratio.

`tiny_dino_path()` builds (once, atomically) a tiny RANDOM ViT with the same architecture and input size
in the same folder format; it goes through the same `load_dino` path as a real checkpoint.
`DinoModel` has the attributes `unifybench.models.encoders.clip.embed_images_cached` needs, so reference features
are cached on disk by (model fingerprint, image sha256) like CLIP's.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from unifybench.models.tiny_cache import build_once, tiny_root
from typing import Callable, Sequence

import torch

from unifybench.errors import UserError
from unifybench.models import torch_dtype
from unifybench.models.local import checkpoint_files

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE, CROP = 256, 224

TINY_NAME = "dino-v1"
TINY_WEIGHTS = "model.safetensors"
# The real ViT-S/16 architecture and input size (224, patch 16, CLS token, final LayerNorm), tiny widths.
# A larger init spread than ViT's 0.02 so that random features differ between pictures.
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "image_size": 224, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
               "layer_norm_eps": 1e-6, "initializer_range": 0.1, "hidden_act": "gelu"}
# facebook/dino-vits16 (for the throughput bench: full size, random weights).
VITS16_CONFIG = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
                 "image_size": 224, "patch_size": 16, "num_channels": 3, "qkv_bias": True,
                 "layer_norm_eps": 1e-6, "hidden_act": "gelu"}


class DinoTransform:
    """PIL image -> [3, crop, crop]: bicubic short side `resize`, centre crop `crop`, ImageNet normalisation."""

    def __init__(self, crop: int = CROP, resize: int | None = None):
        self.crop = int(crop)
        self.resize = int(resize) if resize is not None else int(round(self.crop * RESIZE / CROP))

    def __call__(self, image) -> torch.Tensor:
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode
        image = F.resize(image.convert("RGB"), self.resize, interpolation=InterpolationMode.BICUBIC)
        x = F.to_tensor(F.center_crop(image, self.crop))
        return F.normalize(x, IMAGENET_MEAN, IMAGENET_STD)

    def __repr__(self) -> str:
        return (f"DinoTransform(resize {self.resize} bicubic, center crop {self.crop}, "
                f"ImageNet mean {IMAGENET_MEAN} std {IMAGENET_STD})")


@dataclass
class DinoModel:
    """A loaded DINO ViT: CLS features of the last hidden state, DINO's eval preprocessing."""

    model: torch.nn.Module
    preprocess: Callable               # PIL.Image -> Tensor[3, 224, 224]
    id: str                            # "hf-vit:dino-vits16"
    files: list[Path]
    device: torch.device
    dtype: torch.dtype
    config_files: list[Path]
    preprocess_id: str
    kind: str = "hf-vit"
    _fingerprint: str | None = None

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] preprocessed pixels -> [B, D] float32 CPU CLS features (not normalised)."""
        out = self.model(pixel_values=pixels.to(self.device, self.dtype))
        return out.last_hidden_state[:, 0].float().cpu()

    def encode_images(self, images: Sequence, batch_size: int = 32) -> torch.Tensor:
        if batch_size < 1:
            raise UserError("batch_size must be >= 1")
        out = [self.encode_pixels(torch.stack([self.preprocess(im) for im in images[s:s + batch_size]]))
               for s in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def fingerprint(self, cache_dir: Path | None = None) -> str:
        """sha256 over what determines the features: id, weights, config, preprocessing, dtype, device."""
        if self._fingerprint is None:
            from unifybench.store import canonical_hash, file_sha256
            self._fingerprint = canonical_hash({
                "id": self.id, "weights": [file_sha256(p, cache_dir) for p in self.files],
                "configs": [file_sha256(p) for p in self.config_files], "preprocess": self.preprocess_id,
                "dtype": str(self.dtype), "device": self.device.type, "feature": "last_hidden_state[:, 0]"})
        return self._fingerprint

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "files": [str(p) for p in self.files],
                "feature": "CLS of last_hidden_state (no pooler)", "preprocess": self.preprocess_id,
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}


def load_dino(path: str | Path, device: str | torch.device = "cpu",
              dtype: str | torch.dtype = torch.float32) -> DinoModel:
    """Load a DINO ViT from a local transformers folder (nothing is downloaded)."""
    dtype = torch_dtype(dtype)
    device = torch.device(device)
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"DINO checkpoint {folder} is not a folder: pass a local transformers ViT folder "
                        f"(config.json + model.safetensors, the facebook/dino-vits16 layout); nothing is downloaded")
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{folder} has no config.json (a transformers ViT folder is needed)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file} is not valid JSON: {e}") from None
    if cfg.get("model_type") != "vit":
        raise UserError(f"{cfg_file} has model_type {cfg.get('model_type')!r}; DINO ViT-S/16 "
                        f"(facebook/dino-vits16) is a 'vit' checkpoint")
    weights = checkpoint_files(folder, "DINO")   # pickles refused, headers checked, before transformers reads
    from transformers import ViTModel
    model = ViTModel.from_pretrained(folder, add_pooling_layer=False, dtype=dtype, local_files_only=True,
                                     use_safetensors=True).to(device).eval()
    transform = DinoTransform(crop=int(model.config.image_size))
    return DinoModel(model=model, preprocess=transform, id=f"hf-vit:{folder.name}", files=weights, device=device,
                     dtype=dtype, config_files=[cfg_file], preprocess_id=repr(transform))


_LOADED: dict[tuple, DinoModel] = {}
_LOADED_LOCK = threading.Lock()


def get_dino(path: str | Path, device: str | torch.device = "cpu",
             dtype: str | torch.dtype = torch.float32) -> DinoModel:
    """`load_dino` once per (path, device, dtype) in this process."""
    key = (str(path), str(torch.device(device)), torch_dtype(dtype))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_dino(path, device=device, dtype=dtype)
        return _LOADED[key]


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / TINY_WEIGHTS).is_file()


def tiny_dino_path(cache_dir: Path | None = None) -> Path:
    """A tiny RANDOM DINO ViT (seed 0) in transformers' folder format, built once under
    `<cache_dir or ~/.cache/unifybench>/tiny/dino-v1/`. It measures nothing; it exercises the code path."""
    return build_once(tiny_root(cache_dir) / TINY_NAME, lambda tmp: save_random_vit(tmp, TINY_CONFIG, seed=0), _complete)


def save_random_vit(folder: Path, config: dict, seed: int = 0) -> Path:
    """A randomly initialised `ViTModel` (no pooler) written with `save_pretrained` (safetensors)."""
    from transformers import ViTConfig, ViTModel
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTModel(ViTConfig(**config), add_pooling_layer=False).eval()
    model.save_pretrained(folder, safe_serialization=True)
    for f in folder.iterdir():
        f.chmod(0o644)
    folder.chmod(0o755)
    return folder
