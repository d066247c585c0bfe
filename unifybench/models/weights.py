"""Which weights: `role + setting + context -> local folder`, the one resolver every method, baseline and
evaluator goes through, and the only code that reads the run's `--model ROLE=PATH` (`ctx.models`).

One precedence for every family and preset:
  1. `--model ROLE=PATH` (a folder, or a hub id already in the local Hugging Face cache);
  2. the method/evaluator setting: a folder, a cached hub id, or a short alias of the family ("13b");
  3. the tiny builder when the setting is tiny ("tiny", "tiny-<variant>"); an unset setting means tiny
     in tiny runs and the one-line error `missing` otherwise.
Nothing is downloaded; a role pointed at a missing folder is a one-line UserError. Tiny builders are
imported here only, lazily, so no backbone knows its tiny factory. Adding a family: a `Role` line below.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unifybench.errors import UserError
from unifybench.models.local import resolve_model_path


@dataclass(frozen=True)
class Role:
    """One weight role of `--model ROLE=PATH`: its tiny builder (`module:function` taking the run's cache
    folder, and the setting), subfolder of the tiny build, short aliases, whether a plain file is a
    checkpoint too (CLIP weights files, `ARCH:/path`)."""

    tiny: str
    subfolder: str = ""
    aliases: str = ""          # `module:NAME` of the family's {alias: hub id} dict
    files_ok: bool = False


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)

ROLES: dict[str, Role] = {
    "chameleon": Role("unifybench.models.chameleon.tiny:tiny_chameleon_path"),
    "showo": Role("unifybench.models.showo.tiny:tiny_showo_path", "show-o-512x512"),
    "phi": Role("unifybench.models.showo.tiny:tiny_showo_path", "phi-1_5"),
    "magvit": Role("unifybench.models.showo.tiny:tiny_showo_path", "magvitv2"),
    "llava": Role("unifybench.models.llava.tiny:tiny_llava_path", aliases="unifybench.models.llava.backbone:KNOWN_IDS"),
    "llava-next": Role("unifybench.models.llava_next.tiny:tiny_llava_next_path",
                       aliases="unifybench.models.llava_next.backbone:KNOWN_IDS"),
    "qwen": Role("unifybench.models.qwen_vl.tiny:tiny_qwen_vl_path", aliases="unifybench.models.qwen_vl.backbone:KNOWN_IDS"),
    "sd": Role("unifybench.models.stable_diffusion.tiny:tiny_sd_path"),
    "clip": Role("unifybench.models.encoders.clip:tiny_clip_path", files_ok=True),
    "dino": Role("unifybench.models.encoders.dino:tiny_dino_path"),
    "face": Role("unifybench.models.encoders.face:tiny_face_pack"),
}


def check_roles(models: dict[str, Any]) -> None:
    """`--model ROLE=PATH` names only known roles: a typo would otherwise be ignored and the default used."""
    unknown = sorted(set(models) - set(ROLES))
    if unknown:
        raise UserError(f"--model {unknown[0]}={models[unknown[0]]}: unknown weight role {unknown[0]!r} "
                        f"(known: {', '.join(ROLES)})")


def is_tiny(setting: Any) -> bool:
    """The one test for "this setting asks for the tiny random model": "tiny" or "tiny-<variant>"."""
    return isinstance(setting, str) and (setting == "tiny" or setting.startswith("tiny-"))


def override(ctx, role: str) -> str | None:
    """The run's `--model ROLE=PATH`, or None (for loaders whose folder layout is their own, e.g. face packs)."""
    return ctx.models.get(role) or None


def tiny_folder(role: str, cache_dir: Path, setting: str = "tiny") -> Path:
    """The tiny random checkpoint of `role`, built once under `<cache_dir>/tiny/`."""
    spec = ROLES[role]
    build = _load(spec.tiny)
    if role == "llava":
        root = build(cache_dir, "phi" if setting == "tiny-phi" else "llama")
    else:
        root = build(cache_dir)
    return root / spec.subfolder if spec.subfolder else root


def _local(role: str, text: str) -> Path | str:
    spec = ROLES[role]
    if spec.files_ok:
        from unifybench.models.encoders.clip import split_arch
        arch, path = split_arch(text)
        path = Path(path).expanduser()
        if path.exists():
            return text if arch else path
        if arch:
            raise UserError(f"--model {role}: {path} does not exist; nothing is downloaded")
    aliases = _load(spec.aliases) if spec.aliases else {}
    return resolve_model_path(aliases.get(text, text))


def resolve(role: str, setting: str | None, ctx, missing: str | None = None,
            tiny: bool | None = None, build: bool = True) -> Path | str:
    """The local checkpoint of `role` for a method/evaluator `setting` (see the module docstring);
    `tiny` (default: the run's `ctx.tiny`) says what an unset setting means. `build=False` (the run's
    preflight) builds no tiny model: a tiny setting gives the text TINY_PLACE instead of its folder."""
    if role not in ROLES:
        raise KeyError(role)
    explicit = override(ctx, role)
    if explicit:
        return _local(role, explicit)
    if not setting:
        if ctx.tiny if tiny is None else tiny:
            setting = "tiny"
        else:
            raise UserError(missing or f"no {role} checkpoint: pass --model {role}=PATH; nothing is downloaded")
    if is_tiny(setting):
        if not build:
            from unifybench.models.tiny_cache import tiny_root
            return TINY_PLACE.format(setting=setting, root=tiny_root(ctx.cache_dir))
        return tiny_folder(role, ctx.cache_dir, setting)
    return _local(role, str(setting))


TINY_PLACE = "{setting}: random tiny model, built on first use under {root}"


def locate(role: str, setting: str | None, ctx, missing: str | None = None, tiny: bool | None = None) -> str:
    """Where `resolve` finds `role`, loading and building nothing (the run's preflight); the same errors."""
    return str(resolve(role, setting, ctx, missing=missing, tiny=tiny, build=False))


def showo_settings(setting: str, llm: str, vq: str) -> list[tuple[str, str]]:
    """(role, setting) of Show-o's three folders: a tiny Show-o setting makes all three tiny."""
    tiny = is_tiny(setting)
    return [("showo", setting), ("phi", "tiny" if tiny else llm), ("magvit", "tiny" if tiny else vq)]


def showo_folders(setting: str, ctx, llm: str, vq: str) -> tuple[Path, Path, Path]:
    """Show-o's three folders (Show-o, Phi-1.5, MAGVIT-v2): roles showo, phi, magvit; a tiny setting makes
    all three tiny unless a `--model` names one."""
    showo, phi, magvit = (resolve(role, s, ctx) for role, s in showo_settings(setting, llm, vq))
    return showo, phi, magvit
