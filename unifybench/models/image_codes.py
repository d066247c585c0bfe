"""Frozen image codes of training photos, computed once and kept on disk by content hash.

A soft-prompt method on a token-based backbone (Chameleon's VQGAN, Show-o's MAGVIT-v2) turns every training
photo (and its mirror image) into image codes with the frozen tokenizer; with 1000 soft positives per concept
that is thousands of encoder passes per concept, the same ones on every rerun and for every concept that
retrieves the same pool image. `ImageCodeCache` remembers them:

- key: the image file's sha256 (its bytes, not its path) and the flip, inside a folder named by the encoder's
  fingerprint (`encoder_fingerprint`: backbone class, weight-file hashes, the checkpoint's JSON configs,
  dtype, device type), so new weights, preprocessing, dtype or device never read old codes;
- value: one safetensors file per (image, flip) holding the int64 codes the backbone returned, written
  atomically; a damaged file is recomputed, never trusted;
- codes are computed exactly as without the cache (one image per encoder call, the caller's `encode`), so a
  cached run gives the same codes, samples and losses as an uncached one.
`encode_calls` counts the encoder calls this cache made (a rerun makes zero).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch

from unifybench.store import canonical_hash, file_sha256

log = logging.getLogger(__name__)

Encode = Callable[[Path, bool], torch.Tensor]   # (image path, flip) -> codes [N]


def encoder_fingerprint(backbone, cache_dir: Path | None = None) -> str:
    """sha256 over what determines a backbone's image codes: its class, weights, configs, dtype and device."""
    files = [Path(p) for p in backbone.weight_files()]
    folders = sorted({p.parent for p in files})
    configs = sorted(c for f in folders for c in f.glob("*.json") if not c.name.endswith(".index.json"))
    return canonical_hash({
        "backbone": type(backbone).__name__,
        "weights": [file_sha256(p, cache_dir) for p in files],
        "configs": {c.name: file_sha256(c) for c in configs},
        "dtype": str(backbone.dtype),
        "device": torch.device(backbone.device).type,
    })


class ImageCodeCache:
    """Image codes by (file content, flip) for one encoder; on disk under `cache_dir` (None: this process only)."""

    def __init__(self, encode: Encode, fingerprint: str, cache_dir: Path | None):
        self._encode = encode
        self.folder = Path(cache_dir) / "image_codes" / fingerprint[:24] if cache_dir is not None else None
        self._memory: dict[tuple[str, bool], torch.Tensor] = {}
        self._digests: dict[tuple[str, int, int], str] = {}
        self.encode_calls = 0

    @classmethod
    def for_backbone(cls, backbone, encode: Encode, cache_dir: Path | None) -> "ImageCodeCache":
        """The cache of `backbone`'s image tokenizer, under `cache_dir` (hashes its weights once)."""
        return cls(encode, encoder_fingerprint(backbone, cache_dir), cache_dir)

    def _digest(self, path: Path) -> str:
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_sha256(path)
        return self._digests[key]

    def _file(self, digest: str, flip: bool) -> Path:
        return self.folder / digest[:2] / f"{digest}{'-flip' if flip else ''}.safetensors"

    def codes(self, path: Path, flip: bool = False) -> torch.Tensor:
        """The codes of the image at `path` (mirrored with `flip`), from memory, disk, or the encoder."""
        path = Path(path)
        try:
            digest = self._digest(path)
        except OSError:
            return self._encode(path, flip)   # the encoder's loader reports the unreadable file its own way
        key = (digest, flip)
        if key in self._memory:
            return self._memory[key]
        codes = self._read(digest, flip) if self.folder is not None else None
        if codes is None:
            codes = torch.as_tensor(self._encode(path, flip)).detach().to("cpu", torch.long).contiguous()
            self.encode_calls += 1
            if self.folder is not None:
                self._write(digest, flip, codes, path)
        self._memory[key] = codes
        return codes

    def _read(self, digest: str, flip: bool) -> torch.Tensor | None:
        file = self._file(digest, flip)
        if not file.is_file():
            return None
        from safetensors.torch import load_file
        try:
            codes = load_file(str(file))["codes"]
        except Exception as e:  # noqa: BLE001 - a damaged cache entry is recomputed, never trusted
            log.warning("ignoring unreadable image-code cache entry %s (%s)", file, e)
            return None
        if codes.dtype != torch.long or codes.dim() != 1:
            log.warning("ignoring image-code cache entry %s of dtype %s, shape %s", file, codes.dtype,
                        tuple(codes.shape))
            return None
        return codes

    def _write(self, digest: str, flip: bool, codes: torch.Tensor, source: Path) -> None:
        from safetensors.torch import save_file
        file = self._file(digest, flip)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        save_file({"codes": codes}, str(tmp), metadata={"source": json.dumps(str(source)), "flip": str(flip)})
        os.replace(tmp, file)   # atomic: concurrent ranks write the same bytes, the last rename wins
