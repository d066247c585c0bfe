"""CLIP backbones for CLIP-I/CLIP-T, loaded from LOCAL weights by open_clip's or transformers' own loaders.

`load_clip(path)` accepts
  * an open_clip folder: `open_clip_config.json` + weights (`open_clip_model.safetensors`, ...), the
    format open_clip writes for the HF hub, loaded with open_clip's `local-dir:` schema;
  * an HF `transformers` CLIP folder (`config.json` with model_type "clip" + weights), loaded with
    `CLIPModel.from_pretrained` and the checkpoint's own image processor;
  * an open_clip architecture name plus a safetensors weights file, `"ARCH:/path/to/weights.safetensors"`
    or `arch=` (e.g. `ViT-B-32-quickgelu:/ckpt/openai-b32.safetensors`).
Weights are read from safetensors only (`unifybench.models.safe_weights`): a pickle (`.bin`, `.pt`, OpenAI's
TorchScript `ViT-B-32.pt` archives) is refused with the command that converts it.

`tiny_clip_path()` builds (once) a tiny random CLIP in open_clip's folder format, which then goes
through the same `load_clip` path as a real checkpoint. `embed_images_cached` keeps reference-image
embeddings on disk keyed by model weights, preprocessing and image content.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from unifybench.models import torch_dtype
from unifybench.models.tiny_cache import build_once, tiny_root
from typing import Callable, Sequence

import torch

from unifybench.errors import DataError, UserError
from unifybench.models.safe_weights import PICKLE_SUFFIXES, check_safetensors, refuse_pickle, refuse_pickle_only

log = logging.getLogger(__name__)

OPEN_CLIP_CONFIG = "open_clip_config.json"
TINY_NAME = "clip-v1"
TINY_WEIGHTS = "open_clip_model.safetensors"
# The real CLIP architecture (ViT image tower, causal text transformer, BPE tokenizer), tiny widths.
TINY_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}

_OPEN_CLIP_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass
class ClipModel:
    """A loaded CLIP: projected (unnormalised) image/text features, the checkpoint's own preprocessing."""

    model: torch.nn.Module
    preprocess: Callable                 # PIL.Image -> Tensor[3, H, W] (the checkpoint's eval transform)
    id: str                              # "open_clip:ViT-B-32", "open_clip:clip-v1", "hf:clip-vit-large-patch14"
    files: list[Path]                    # weight files used (hash these to identify the model)
    kind: str                            # "open_clip" | "hf"
    device: torch.device
    dtype: torch.dtype
    config_files: list[Path] = field(default_factory=list)   # configs that shape the model's outputs
    preprocess_id: str = ""              # identifies the preprocessing (part of embedding cache keys)
    _tokenizer: Callable | None = None
    _tokenizer_factory: Callable | None = None
    _fingerprint: str | None = None

    # --- images -------------------------------------------------------------------------------------
    def _pixel_dtype(self) -> torch.dtype:
        for m in self.model.modules():
            if isinstance(m, torch.nn.Conv2d):
                return m.weight.dtype
        return self.dtype

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] preprocessed pixels -> [B, D] float32 CPU features (not normalised)."""
        pixels = pixels.to(self.device, self._pixel_dtype())
        if self.kind == "hf":
            out = self.model.get_image_features(pixel_values=pixels)
            feats = out if isinstance(out, torch.Tensor) else out.pooler_output
        else:
            feats = self.model.encode_image(pixels)
        return feats.float().cpu()

    def encode_images(self, images: Sequence, batch_size: int = 32) -> torch.Tensor:
        """PIL images -> [N, D] float32 CPU features (projected, not normalised)."""
        if batch_size < 1:
            raise UserError("batch_size must be >= 1")
        out = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start:start + batch_size]])
            out.append(self.encode_pixels(batch))
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)

    # --- texts --------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Callable:
        if self._tokenizer is None:
            self._tokenizer = self._tokenizer_factory()
        return self._tokenizer

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts -> [N, D] float32 CPU features (projected, not normalised); truncated to the context."""
        out = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            if self.kind == "hf":
                tok = self.tokenizer(chunk, padding="max_length", truncation=True,
                                     max_length=self.model.config.text_config.max_position_embeddings,
                                     return_tensors="pt")
                res = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                   attention_mask=tok["attention_mask"].to(self.device))
                feats = res if isinstance(res, torch.Tensor) else res.pooler_output
            else:
                # open_clip's SimpleTokenizer truncates to the context length (keeping the end token).
                feats = self.model.encode_text(self.tokenizer(chunk).to(self.device))
            out.append(feats.float().cpu())
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)

    @property
    def embed_dim(self) -> int:
        if self.kind == "hf":
            return int(self.model.config.projection_dim)
        return int(self.model.text_projection.shape[1]) if getattr(self.model, "text_projection", None) is not None \
            else int(self.model.visual.output_dim)

    # --- identity -----------------------------------------------------------------------------------
    def fingerprint(self, cache_dir: Path | None = None) -> str:
        """sha256 over what determines the features: id, weights, configs, preprocessing, dtype, device."""
        if self._fingerprint is None:
            from unifybench.store import canonical_hash, file_sha256
            self._fingerprint = canonical_hash({
                "id": self.id,
                "weights": [file_sha256(p, cache_dir) for p in self.files],
                "configs": [file_sha256(p) for p in self.config_files],
                "preprocess": self.preprocess_id,
                "dtype": str(self.dtype),
                "device": self.device.type,
            })
        return self._fingerprint

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "files": [str(p) for p in self.files],
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}


# ------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------
def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())


def split_arch(spec: str) -> tuple[str | None, str]:
    """"ViT-B-32:/ckpt/w.pt" -> ("ViT-B-32", "/ckpt/w.pt") when the prefix is a known open_clip model."""
    head, sep, tail = spec.partition(":")
    if sep and head and "/" not in head and not Path(spec).exists():
        import open_clip
        if head in open_clip.list_models():
            return head, tail
    return None, spec


# The safetensors names open_clip writes; its `local-dir:` loader takes these before any other file.
OPEN_CLIP_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors")


def _find_open_clip_weights(folder: Path) -> list[Path]:
    """The weights file of an open_clip hub folder, by the file names open_clip writes, header checked; a
    folder of pickles only is refused. Our own rule, not open_clip's private `_find_checkpoint_in_dir`."""
    for name in OPEN_CLIP_WEIGHT_NAMES:
        if (folder / name).is_file():
            return [check_safetensors(folder / name, "CLIP")]
    refuse_pickle_only(folder, "CLIP", OPEN_CLIP_WEIGHT_NAMES[0])
    return []


def load_clip(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = torch.float32,
              arch: str | None = None) -> ClipModel:
    """Load a CLIP from local files (see the module docstring for the accepted layouts)."""
    dtype = torch_dtype(dtype)
    device = torch.device(device)
    if arch is None and isinstance(path, str):
        arch, path = split_arch(path)
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"CLIP checkpoint {path} does not exist (pass a local open_clip folder, an HF CLIP "
                        f"folder, or ARCH:/path/to/weights; nothing is downloaded)")
    if path.is_dir():
        if arch is not None:
            raise UserError(f"{path} is a folder; an architecture name is only used with a weights file")
        if (path / OPEN_CLIP_CONFIG).is_file():
            return _load_open_clip_dir(path, device, dtype)
        if (path / "config.json").is_file():
            return _load_hf(path, device, dtype)
        raise UserError(f"{path} holds neither {OPEN_CLIP_CONFIG} (open_clip) nor config.json (transformers CLIP)")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise _refuse_pickle_file(path)
    check_safetensors(path, "CLIP")
    if arch is None:
        raise UserError(f"CLIP weights file {path} needs its open_clip architecture: pass ARCH:{path} "
                        f"(e.g. ViT-B-32-quickgelu for OpenAI weights, ViT-L-14 for LAION ones)")
    return _load_open_clip_file(arch, path, device, dtype)


def _open_clip_model(model, preprocess, tokenizer_factory, id_: str, files, configs, device, dtype) -> ClipModel:
    model.eval()
    return ClipModel(model=model, preprocess=preprocess, id=id_, files=[Path(f) for f in files], kind="open_clip",
                     device=device, dtype=dtype, config_files=[Path(c) for c in configs],
                     preprocess_id="open_clip:" + _text_hash(repr(preprocess)),
                     _tokenizer_factory=tokenizer_factory)


def _load_open_clip_dir(folder: Path, device, dtype) -> ClipModel:
    import open_clip
    weights = _find_open_clip_weights(folder)
    if not weights:
        raise UserError(f"{folder} has {OPEN_CLIP_CONFIG} but no weights file ({' or '.join(OPEN_CLIP_WEIGHT_NAMES)})")
    name = f"local-dir:{folder.resolve()}"
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, precision=_OPEN_CLIP_PRECISION[dtype], device=device)
    return _open_clip_model(model, preprocess, lambda: open_clip.get_tokenizer(name), f"open_clip:{folder.name}",
                            weights, [folder / OPEN_CLIP_CONFIG], device, dtype)


def _load_open_clip_file(arch: str, file: Path, device, dtype) -> ClipModel:
    import open_clip
    if arch not in open_clip.list_models():
        raise UserError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    if "openai" in file.name.lower() and "quickgelu" not in arch.lower():
        log.warning("%s looks like OpenAI CLIP weights, which were trained with QuickGELU; use the "
                    "'%s-quickgelu' architecture or the features will be wrong", file, arch)
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch, pretrained=str(file), precision=_OPEN_CLIP_PRECISION[dtype], device=device)
    return _open_clip_model(model, preprocess, lambda: open_clip.get_tokenizer(arch), f"open_clip:{arch}",
                            [file], [], device, dtype)


def _refuse_pickle_file(file: Path) -> UserError:
    """A pickle CLIP weights file; OpenAI's TorchScript archives (read by their zip directory, nothing
    unpickled) get the command that saves their state dict, the others the plain conversion."""
    dst = file.with_suffix(".safetensors").absolute()
    if not _is_torchscript(file):
        return refuse_pickle(file, "CLIP", dst)
    skip = ("input_resolution", "context_length", "vocab_size")   # attributes, not weights
    hint = (f"it is an OpenAI TorchScript archive; convert it once in a trusted environment: python -c \"import "
            f"torch, safetensors.torch as s; m = torch.jit.load('{file.absolute()}', map_location='cpu'); "
            f"s.save_file({{k: v.contiguous().clone() for k, v in m.state_dict().items() if k not in {skip}}}, "
            f"'{dst}')\" and pass ARCH:{dst} with its QuickGELU architecture (e.g. ViT-B-32-quickgelu)")
    return refuse_pickle(file, "CLIP", hint=hint)


def _load_hf(folder: Path, device, dtype) -> ClipModel:
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("model_type") != "clip":
        raise UserError(f"{folder}/config.json has model_type {cfg.get('model_type')!r}; a CLIP checkpoint "
                        f"(model_type 'clip') is needed")
    from transformers import CLIPModel
    try:
        from transformers import CLIPImageProcessorPil as Processor   # PIL resampling, as the original CLIP
    except ImportError:  # pragma: no cover
        from transformers import CLIPImageProcessor as Processor
    from unifybench.models.local import checkpoint_files
    weights = checkpoint_files(folder, "CLIP")   # pickles refused, headers checked, before transformers reads
    model = CLIPModel.from_pretrained(folder, dtype=dtype, local_files_only=True,
                                      use_safetensors=True).to(device).eval()
    try:
        processor = Processor.from_pretrained(folder, local_files_only=True)
    except OSError as e:
        raise UserError(f"{folder} has no image processor config (preprocessor_config.json): {e}") from None

    def preprocess(image):
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    def tokenizer():
        from transformers import AutoTokenizer
        try:
            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except OSError as e:
            raise UserError(f"{folder} has no tokenizer files, needed to encode texts: {e}") from None

    configs = [p for p in (folder / "config.json", folder / "preprocessor_config.json") if p.is_file()]
    return ClipModel(model=model, preprocess=preprocess, id=f"hf:{folder.name}", files=weights, kind="hf",
                     device=device, dtype=dtype, config_files=configs,
                     preprocess_id=f"hf:{type(processor).__name__}:" + _text_hash(processor.to_json_string()),
                     _tokenizer_factory=tokenizer)


_LOADED: dict[tuple, ClipModel] = {}
_LOADED_LOCK = threading.Lock()


def get_clip(path: str | Path, device: str | torch.device = "cpu",
             dtype: str | torch.dtype = torch.float32) -> ClipModel:
    """`load_clip` once per (path, device, dtype) in this process, shared by CLIP-I and CLIP-T."""
    key = (str(path), str(torch.device(device)), torch_dtype(dtype))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_clip(path, device=device, dtype=dtype)
        return _LOADED[key]


# ------------------------------------------------------------------------------------------------------
# Tiny random CLIP
# ------------------------------------------------------------------------------------------------------
def tiny_clip_path(cache_dir: Path | None = None) -> Path:
    """A tiny RANDOM CLIP (seed 0) in open_clip's folder format, built once under
    `<cache_dir or ~/.cache/unifybench>/tiny/clip-v1/`. It measures nothing; it exercises the code path."""
    return build_once(tiny_root(cache_dir) / TINY_NAME, _build_tiny,
                      lambda f: (f / OPEN_CLIP_CONFIG).is_file() and (f / TINY_WEIGHTS).is_file())


def _build_tiny(folder: Path) -> None:
    import open_clip
    from safetensors.torch import save_file
    (folder / OPEN_CLIP_CONFIG).write_text(json.dumps(TINY_CONFIG, indent=2) + "\n")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(**TINY_CONFIG["model_cfg"])   # the class open_clip builds for this config
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / TINY_WEIGHTS), metadata={"format": "pt"})
    for f in folder.iterdir():
        f.chmod(0o644)
    folder.chmod(0o755)


# ------------------------------------------------------------------------------------------------------
# Reference-embedding cache
# ------------------------------------------------------------------------------------------------------
_DIGESTS: dict[tuple[str, int, int], str] = {}   # (path, size, mtime_ns) -> sha256, for this process


def _file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) for this process: every concept ranks the same
    retrieval pool, and re-hashing 10k-100k files per concept cost more than ranking them."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash_file(path)
    return _DIGESTS[key]


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_rgb(path: Path):
    """Open an image fully (so truncated files fail here) as RGB (16-bit greyscale scaled, see images.to_rgb)."""
    from PIL import Image

    from unifybench.images import to_rgb
    with Image.open(path) as im:
        return to_rgb(im, path)


def embedding_cache_file(model: ClipModel, cache_dir: Path) -> Path:
    """One file per model fingerprint: `features` [N, D] float32 and `digests` [N, 32] uint8 (the images'
    sha256), row for row. Two tensors, not one per image: per-tensor headers made each rewrite cost grow
    with the pool's size in Python objects (a 100k pool: most of its retrieval time)."""
    return Path(cache_dir) / "embeddings" / f"clip-features-{model.fingerprint(cache_dir)[:24]}.safetensors"


def _read_cache(file: Path) -> dict[str, torch.Tensor]:
    """digest -> feature row (views of the file's one features tensor)."""
    if not file.is_file():
        return {}
    from safetensors.torch import load_file
    try:
        t = load_file(str(file))
        feats, digests = t["features"], t["digests"]
        if feats.dim() != 2 or digests.shape != (feats.shape[0], 32) or digests.dtype != torch.uint8:
            raise ValueError(f"features {tuple(feats.shape)} and digests {tuple(digests.shape)} do not match")
    except Exception as e:  # a damaged cache is rebuilt, never trusted
        log.warning("ignoring unreadable embedding cache %s (%s)", file, e)
        return {}
    raw = digests.numpy().tobytes()
    return {raw[32 * i:32 * (i + 1)].hex(): feats[i] for i in range(feats.shape[0])}


WRITE_EVERY = 8192   # new embeddings between cache-file writes (each write rewrites the file: not per batch)


def embed_images_cached(model: ClipModel, paths: Sequence[Path], cache_dir: Path | None,
                        batch_size: int = 32) -> torch.Tensor:
    """[N, D] float32 features of image files, cached on disk by (model fingerprint, image sha256).

    The cache file is per model fingerprint (id + weight hashes + configs + preprocessing + dtype + device),
    so any change there starts a fresh file. A reference image that cannot be read is a data error."""
    if batch_size < 1:
        raise UserError("batch_size must be >= 1")
    paths = [Path(p) for p in paths]
    digests = []
    for p in paths:
        try:
            digests.append(_file_sha256(p))
        except OSError as e:
            raise DataError(p, f"cannot read reference image ({e.strerror or e})") from None
    file = embedding_cache_file(model, cache_dir) if cache_dir is not None else None
    cached = _read_cache(file) if file is not None else {}
    missing: dict[str, Path] = {}
    for p, d in zip(paths, digests):
        if d not in cached and d not in missing:
            missing[d] = p
    # Streamed: a 100k-image pool is never held in memory as pictures (a few batches at a time, prepared in
    # threads while the model encodes: `readahead`), and the cache file is written every WRITE_EVERY new
    # features, so a crash loses at most that many.
    from unifybench.models.encoders.readahead import pixel_batches

    def prepare(p: Path) -> torch.Tensor:
        try:
            return model.preprocess(load_rgb(p))
        except Exception as e:
            raise DataError(p, f"cannot load reference image ({type(e).__name__}: {e})") from None

    # The new features go into one block allocated up front: a small copy per row, made while the threads
    # allocate and free pixel batches, fragmented the heap (+0.6 MB of RSS per image: 24 GB at a 100k pool).
    todo = list(missing.items())
    feats = torch.empty(len(todo), model.embed_dim)
    written = 0
    for start, pixels in zip(range(0, len(todo), batch_size), pixel_batches([p for _, p in todo], prepare, batch_size)):
        end = start + len(pixels)
        feats[start:end] = model.encode_pixels(pixels)
        if file is not None and (end - written >= WRITE_EVERY or end == len(todo)):
            _write_cache(file, {d: feats[j] for j, (d, _) in enumerate(todo[written:end], written)}, model)   # stacked there
            written = end
    cached.update({d: feats[j] for j, (d, _) in enumerate(todo)})
    if not paths:
        return torch.empty(0, model.embed_dim)
    return torch.stack([cached[d] for d in digests])


def _write_cache(file: Path, new: dict[str, torch.Tensor], model: ClipModel) -> None:
    from safetensors.torch import save_file
    file.parent.mkdir(parents=True, exist_ok=True)
    merged = _read_cache(file)       # re-read: another process may have added entries meanwhile
    merged.update(new)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    digests = torch.frombuffer(bytearray(bytes.fromhex("".join(merged))), dtype=torch.uint8).view(-1, 32)
    save_file({"features": torch.stack(list(merged.values())).float().contiguous(), "digests": digests}, str(tmp),
              metadata={"model": model.id, "preprocess": model.preprocess_id, "dtype": str(model.dtype),
                        "device": model.device.type, "files": json.dumps([str(p) for p in model.files])})
    os.replace(tmp, file)
