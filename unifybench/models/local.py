"""Finding model weights on this machine (a folder, or a snapshot already in the Hugging Face cache; nothing
is ever downloaded) and loading a transformers model from them with every weight checked."""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from unifybench.errors import UserError
from unifybench.models.contract import Backbone
from unifybench.models.safe_weights import check_safetensors, safetensors_in

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "namespace/name"


def _hub_cache_dir() -> Path:
    # Read the environment at call time (huggingface_hub freezes it at import), same precedence as the hub.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def resolve_model_path(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local directory for a path or a hub id (from the local HF cache only; nothing is downloaded)."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"{path}: expected a model directory, found a file")
    if _HUB_ID.match(text):
        from huggingface_hub import snapshot_download
        try:
            return Path(snapshot_download(text, revision=revision, cache_dir=_hub_cache_dir(), local_files_only=True))
        except (OSError, ValueError):  # hub errors for "not cached", "bad id", "offline" all derive from these
            pass
    raise UserError(f"model '{text}' not found locally (no such directory and no snapshot in the Hugging Face "
                    f"cache at {_hub_cache_dir()}); nothing is downloaded, fetch it first")


@contextlib.contextmanager
def quiet_logging(logging_module):
    """Hide a Hugging Face library's load reports and progress bars (`transformers.utils.logging` and
    `diffusers.utils.logging` have the same API); the loading info is checked explicitly instead."""
    level, bars = logging_module.get_verbosity(), logging_module.is_progress_bar_enabled()
    logging_module.set_verbosity_error()
    logging_module.disable_progress_bar()
    try:
        yield
    finally:
        logging_module.set_verbosity(level)
        if bars:
            logging_module.enable_progress_bar()


@contextlib.contextmanager
def quiet_transformers():
    from transformers.utils import logging as hf_logging
    with quiet_logging(hf_logging):
        yield



def load_pretrained(path: str | Path, model_cls, processor_cls, model_type: str, label: str, device, dtype,
                    example: str = ""):
    """(folder, model, processor, loading info) of a transformers checkpoint of `model_type`, straight to
    `device`, frozen and in eval mode; a wrong model type, an unreadable folder or a missing weight is a
    one-line UserError naming the folder (`label` names the model in it, `example` a hub id to suggest)."""
    import torch
    local = resolve_model_path(path)
    config_file = local / "config.json"
    try:
        found = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file}: cannot read model config ({e})") from None
    if found != model_type:
        hint = f" ({label} in the hub layout, e.g. {example})" if example else ""
        raise UserError(f"{config_file}: model_type is {found!r}, expected {model_type!r}{hint}")
    checkpoint_files(local, label)   # pickles refused and headers checked before transformers opens a file
    try:
        with quiet_transformers():
            model, info = model_cls.from_pretrained(local, dtype=dtype, device_map=str(torch.device(device)),
                                                    output_loading_info=True, use_safetensors=True)
            processor = processor_cls.from_pretrained(local)
    except OSError as e:
        raise UserError(f"{local}: cannot load the {label} checkpoint ({str(e).splitlines()[0]})") from None
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserError(f"{local}: checkpoint lacks {len(missing)} model weights (e.g. '{missing[0]}')")
    model.eval().requires_grad_(False)
    return local, model, processor, info


def checkpoint_files(path: str | Path, label: str = "model") -> list[Path]:
    """The safetensors files of a checkpoint, headers checked: the index's shards if there is an index, else
    all *.safetensors; a folder of pickle weights only is refused (`label` names the model in messages)."""
    path = Path(path)
    if path.is_file():
        return [check_safetensors(path, label)]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{index}: malformed safetensors index ({type(e).__name__}: {e})") from None
        return [check_safetensors(path / name, label) for name in names]
    files = safetensors_in(path, label, "model.safetensors")
    if not files:
        raise UserError(f"{path}: no safetensors weight files found")
    return files


class TransformersBackbone(Backbone):
    """What every backbone loaded through `load_pretrained` holds: the frozen model, its processor and
    tokenizer, the folder it came from (whose safetensors files are hashed into results), device and dtype."""

    def __init__(self, model, processor, path: Path, device, dtype):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.path = Path(path)
        self.device = device
        self.dtype = dtype

    def weight_files(self) -> list[Path]:
        return checkpoint_files(self.path)
