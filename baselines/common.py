"""Pieces the training-free baselines share: content digests for caches, and one runner per backbone that
answers a list of text/image segments (the prompt text itself is `unifybench.prompts`)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from unifybench.images import open_rgb
from unifybench.models import torch_dtype


def files_digest(paths: list[Path]) -> str:
    """sha256 over the bytes of `paths`, in order (cache keys that follow the content, not the names)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Model runners: one object per backbone that answers a list of text/image segments (training-free use)
# --------------------------------------------------------------------------------------------------------------


def truncate_tokens(encode, decode, text: str, n: int) -> str:
    """`text` cut to at most `n` tokens; the cut is re-encoded (decoding need not round-trip) until it fits."""
    ids = encode(text)
    if len(ids) <= n:
        return text
    for k in range(n, 0, -1):
        cut = decode(ids[:k], skip_special_tokens=True).strip()
        if len(encode(cut)) <= n:
            return cut
    return ""


class LocalRunner:
    """What the runners of local models share: `self.backbone` (its weight files, its tokenizer for the
    description's token budget)."""

    kind = ""   # the --model role of its backbone

    @classmethod
    def needs(cls, ctx, setting: str, who: str) -> list:
        """The weights `__init__` will load for `setting` (`unifybench.needs`), located, not loaded."""
        from unifybench import needs
        return [needs.weights(cls.kind, setting, ctx, who)]

    def files(self) -> list[Path]:
        return self.backbone.weight_files()

    def count_tokens(self, text: str) -> int:
        return len(self.backbone.encode_text(text))

    def truncate(self, text: str, n: int) -> str:
        return truncate_tokens(self.backbone.encode_text, self.backbone.tokenizer.decode, text, n)


class ChameleonRunner(LocalRunner):
    """Chameleon/Anole used as is: answers interleaved text and images, draws images (Anole decoding)."""

    kind = "chameleon"

    def __init__(self, ctx, setting: str):
        from unifybench.models.chameleon.backbone import ChameleonBackbone
        from unifybench.models.weights import resolve
        path = resolve("chameleon", setting, ctx)
        self.ctx = ctx
        self.backbone = ChameleonBackbone.load(path, device=ctx.device, dtype=torch_dtype(ctx.dtype))
        self._blocks: dict[str, list[int]] = {}

    def _parts(self, segments) -> list:
        """Text stays text; an image path becomes its (cached) encoded block for the chat adapter."""
        from unifybench.models.chameleon.chat import image_block
        parts = []
        for seg in segments:
            if isinstance(seg, Path):
                if str(seg) not in self._blocks:
                    self._blocks[str(seg)] = image_block(self.backbone, open_rgb(seg))
                parts.append(self._blocks[str(seg)])
            else:
                parts.append(seg)
        return parts

    def answer(self, segments, max_new_tokens: int) -> str:
        """Greedy text answer to `segments` (strings and image paths), one user turn."""
        import torch
        b = self.backbone
        ids = torch.tensor([b.chat_ids(None, self._parts(segments))], device=b.model.device)
        return b.decode_answer(b.generate_text(ids, max_new_tokens=max_new_tokens))

    def draw(self, segments, n: int, generator, cfg):
        """`n` images for the user turn `segments` (PIL), sampled with `cfg`'s temperature, top_k, top_p."""
        b = self.backbone
        prompt = b.chat_ids(None, self._parts(segments))
        codes = b.generate_images(prompt, n, generator, temperature=cfg.temperature, top_k=cfg.top_k,
                                  top_p=cfg.top_p, batch_size=cfg.gen_batch_size)
        return b.decode_images(codes)


class ShowoRunner(LocalRunner):
    """Show-o used as is: MMU answers (one image, first) and MaskGIT text-to-image; it reads no interleaved
    images, so there is no Show-o image-prompt baseline (UniCTokens section 4.1)."""

    kind = "showo"

    @classmethod
    def needs(cls, ctx, setting: str, who: str) -> list:
        from unifybench import needs
        from unifybench.models.showo.backbone import DEFAULT_LLM, DEFAULT_VQ
        from unifybench.models.weights import showo_settings
        return [needs.weights(role, s, ctx, who) for role, s in showo_settings(setting, DEFAULT_LLM, DEFAULT_VQ)]

    def __init__(self, ctx, setting: str):
        from unifybench.models.showo.backbone import DEFAULT_LLM, DEFAULT_VQ, ShowoBackbone
        from unifybench.models.weights import showo_folders
        self.ctx = ctx
        self.backbone = ShowoBackbone.load(*showo_folders(setting, ctx, DEFAULT_LLM, DEFAULT_VQ), device=ctx.device,
                                           dtype=torch_dtype(ctx.dtype))

    def answer(self, segments, max_new_tokens: int) -> str:
        """Greedy MMU answer; a text-only question gets the black stand-in image, as UniCTokens is evaluated."""
        b = self.backbone
        images = [open_rgb(s) for s in segments if isinstance(s, Path)] or [b.blank_image()]
        text = "".join(s for s in segments if not isinstance(s, Path))
        out = b.generate_text(b.chat_ids(None, [*images, text]), max_new_tokens=max_new_tokens)
        return b.decode_text(out).strip()

    def draw(self, segments, n: int, generator, cfg):
        """`n` MaskGIT images for the text of `segments` (`cfg.gen_steps` steps, guidance `cfg.guidance`)."""
        b = self.backbone
        text = " ".join(s.strip() for s in segments if not isinstance(s, Path) and s.strip())
        codes = b.generate_images(b.t2i_prompt(b.encode_text(text)), n, generator, steps=cfg.gen_steps,
                                  guidance=cfg.guidance, batch_size=cfg.gen_batch_size)
        return b.decode_images(codes)


class LlavaRunner(LocalRunner):
    """LLaVA-1.5 used as is (the llava_v1 conversation); images come first in the user turn."""

    kind = "llava"

    def __init__(self, ctx, setting: str):
        from unifybench.models.llava.backbone import LlavaBackbone
        from unifybench.models.weights import resolve
        path = resolve("llava", setting, ctx)
        self.ctx = ctx
        self.backbone = LlavaBackbone.load(path, device=ctx.device, dtype=torch_dtype(ctx.dtype))

    def answer(self, segments, max_new_tokens: int) -> str:
        import torch
        b = self.backbone
        images = [s for s in segments if isinstance(s, Path)]
        text = "".join(s for s in segments if not isinstance(s, Path)).strip()
        ids = torch.tensor([b.prompt_ids(text, n_images=len(images))], device=b.device)
        px = b.pixel_values([open_rgb(p) for p in images]) if images else None
        return b.decode(b.generate_text(ids, max_new_tokens=max_new_tokens, pixel_values=px))


class QwenVLRunner(LocalRunner):
    """Qwen2.5-VL-Instruct used as is (its chat template: system turn, one user turn with the images first,
    then the text); greedy answers. Understanding only: it draws no images."""

    kind = "qwen"

    def __init__(self, ctx, setting: str):
        from unifybench.models.qwen_vl.backbone import QwenVLBackbone
        from unifybench.models.weights import resolve
        path = resolve("qwen", setting, ctx)
        self.ctx = ctx
        self.backbone = QwenVLBackbone.load(path, device=ctx.device, dtype=torch_dtype(ctx.dtype))

    def answer(self, segments, max_new_tokens: int) -> str:
        """Greedy text answer to `segments` (strings and image paths): the images, then the joined text."""
        images = [open_rgb(s) for s in segments if isinstance(s, Path)]
        text = "".join(s for s in segments if not isinstance(s, Path)).strip()
        return self.backbone.answer(text, images, max_new_tokens)


API_KEY_ENV = ("UNIFYBENCH_API_KEY", "OPENAI_API_KEY")
API_BASE_URL_ENV = "UNIFYBENCH_API_BASE_URL"


class ApiFailed(Exception):
    """One request got no usable reply (after retries); the item is recorded as a model error."""


class ApiRunner:
    """A chat model behind an OpenAI-compatible server (GPT-4o by default), through `unifybench.judge`'s
    client: a fresh system + user conversation per request, temperature 0, the run's seed, retries, a disk
    cache of replies; the key comes from $UNIFYBENCH_API_KEY or $OPENAI_API_KEY only."""

    kind = "api"
    backbone = None   # no local model: the forgetting stage has nothing to evaluate
    SYSTEM = "You are a helpful assistant. Answer the user's question about the subject they describe or show."

    def __init__(self, ctx, base_url: str | None, model: str, max_tokens: int = 300):
        from unifybench.judge import JudgeClient
        base_url = self.server(base_url)
        self.model = model
        self.client = JudgeClient(base_url, model, seed=ctx.seed, cache_dir=Path(ctx.cache_dir) / "api",
                                  api_key_env=API_KEY_ENV, max_tokens=max_tokens)

    @staticmethod
    def server(base_url: str | None) -> str:
        """`--set base_url=`, else $UNIFYBENCH_API_BASE_URL; a one-line error naming both otherwise."""
        import os

        from unifybench.errors import UserError
        base_url = base_url or os.environ.get(API_BASE_URL_ENV)
        if not base_url:
            raise UserError(f"this baseline needs an OpenAI-compatible server: --set base_url=URL "
                            f"(or ${API_BASE_URL_ENV}); the key is read from ${API_KEY_ENV[0]} or ${API_KEY_ENV[1]}")
        return base_url

    @classmethod
    def needs(cls, ctx, base_url: str | None, who: str) -> list:
        """The server `__init__` will call, as a declared need (`unifybench.needs`); nothing is called."""
        import os

        from unifybench import needs
        from unifybench.judge import public_url

        def locate() -> str:
            url = public_url(cls.server(base_url))
            key = next((name for name in API_KEY_ENV if os.environ.get(name)), None)
            return f"{url}, key from ${key}" if key else f"{url}, no key set (${API_KEY_ENV[0]} or ${API_KEY_ENV[1]})"
        return [needs.service(who, locate)]

    def files(self) -> list[Path]:
        return []

    def answer(self, segments, max_new_tokens: int = 0) -> str:
        from unifybench.judge import image_data_url
        content = []
        for seg in segments:
            if isinstance(seg, Path):
                mime = "image/png" if seg.suffix.lower() == ".png" else "image/jpeg"
                content.append({"type": "image_url", "image_url": {"url": image_data_url(seg.read_bytes(), mime)}})
            elif seg.strip():
                content.append({"type": "text", "text": seg})
        messages = [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": content}]
        result = self.client.ask(messages, "baseline-answer/1", lambda reply: reply.strip() or None)
        if not result.ok:
            raise ApiFailed(f"API model {self.model}: {result.error}")
        return result.value

    def draw(self, segments, n: int, generator, cfg):
        """`n` images from the Images API: `images.generate` for the text of `segments`, `images.edit` when
        they hold reference photos (GPT-4o + IP). The generator is unused: the API takes no seed, the disk
        cache makes a rerun reproduce the images."""
        from PIL import Image
        text = " ".join(s.strip() for s in segments if not isinstance(s, Path) and s.strip())
        refs = [Path(s).read_bytes() for s in segments if isinstance(s, Path)]
        result = self.client.draw(text, refs, n, cfg.image_size, "baseline-draw/1", model=cfg.image_model)
        if not result.ok:
            raise ApiFailed(f"image API model {cfg.image_model}: {result.error}")
        images = []
        for path in result.value:
            with Image.open(path) as im:
                images.append(im.convert("RGB"))
        return images

    def count_tokens(self, text: str) -> int:
        return len(text.split())   # words: the server's tokenizer is not available locally

    def truncate(self, text: str, n: int) -> str:
        words = text.split()
        return text if len(words) <= n else " ".join(words[:n])
