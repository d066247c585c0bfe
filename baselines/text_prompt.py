"""Text-prompt (TP) baselines: the concept is described in words in front of every question or prompt.

UniCTokens (Appendix B; Table 1 rows Chameleon+TP, LLaVA/Qwen2.5-VL+TP, GPT-4o+TP): a captioner describes
each training photo of the concept, the captions are summarised into one description, and the description
is cut to a token budget (~100 tokens in the table) measured in the answering model's tokenizer. The
captioner is a registered model: `self` (the baseline's own backbone, the default), `chameleon`, `llava`,
`qwen` (Qwen2.5-VL-Instruct), or `api` (an OpenAI-compatible server, GPT-4o in the paper). Captions and
summary are cached on disk under `<cache>/captions/`, keyed by the captioner's weights (or API model), the
photos' bytes and the prompts. `fit` writes the description the baseline uses as `text_prompt.json`
(nothing is trained).

`source="info"` uses the benchmark's own concept description (`info.json`) instead of captions, and
`include_extra_info` appends the concept's extra facts (they are text the user gave; the knowledge-driven
generation prompts refer to them). The concept is called `<name>` (Yo'LLaVA style `<bo>`) everywhere.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from unifybench.baselines.common import (ApiFailed, ChameleonRunner, LlavaRunner, QwenVLRunner, ShowoRunner,
                                         files_digest)
from unifybench.data.schema import (GEN, KNOWLEDGE_GEN, MC, PLACEHOLDER, REC, TEXT_QA, VQA, Benchmark, Concept,
                                    Item, Prediction)
from unifybench.environment import derive_seed
from unifybench.errors import UserError
from unifybench.images import save_images
from unifybench.methods.base import Method, generation_items
from unifybench.progress import maybe_task
from unifybench.prompts import concept_name, question_text
from unifybench.settings import positive, within

CAPTION_PROMPT = "Describe the main subject of this photo in detail: its kind, colors, shape and distinctive features."
SUMMARY_PROMPT = ("Here are descriptions of several photos of the same subject, called {name}:\n{captions}\n"
                  "Summarize what {name} looks like in one short paragraph of at most {budget} words. "
                  "Describe only the subject, not the backgrounds.")
CACHE_VERSION = 1
UNDERSTANDING = frozenset({REC, VQA, TEXT_QA, MC})
SHOWO = "showlab/show-o-512x512"
QWEN_VL = "Qwen/Qwen2.5-VL-3B-Instruct"       # UniCTokens Tables 1-2 "Qwen2.5-VL + TP": the 3B Instruct model


@dataclass
class TextPromptConfig:
    backbone: str = "leloy/Anole-7b-v0.1-hf"   # the answering model: folder, cached hub id, or "tiny"
    source: str = "caption"                    # "caption" (Appendix B) | "info" (the benchmark's text) | "none"
    captioner: str = "self"                    # "self" | "chameleon" | "llava" | "api"
    captioner_backbone: str = ""               # the captioner's checkpoint ("": tiny in tiny runs, else default)
    base_url: str | None = None                # OpenAI-compatible server (api captioner or API baselines)
    api_model: str = "gpt-4o"                  # the model name asked of that server
    n_caption_images: int = 5                  # training photos captioned (sorted by name)
    caption_prompt: str = CAPTION_PROMPT       # what the captioner is asked about each training photo
    summary_prompt: str = SUMMARY_PROMPT       # how the captions become one description ({name}, {captions}, {budget})
    caption_max_new_tokens: int = positive(77)  # length limit of each caption
    summary_max_new_tokens: int = positive(150)  # length limit of the summary
    token_budget: int = positive(100)          # the description's length in the answering model's tokens
    include_extra_info: bool = True            # append the concept's extra facts (its text) to the description
    name_format: str = "<{name}>"              # how the concept is named in prompts ({name}: its folder name)
    max_new_tokens: int = positive(30)         # answers, greedy
    temperature: float = positive(1.0)         # image sampling (Chameleon: the Anole defaults, no CFG)
    top_k: int = 50                            # image sampling: top-k
    top_p: float = within(1.0, 0, 1, low_open=True)  # image sampling: nucleus
    gen_batch_size: int = positive(8)          # images generated per forward batch
    gen_steps: int = positive(50)              # Show-o MaskGIT steps and guidance (its 512 px defaults)
    guidance: float = 5.0                      # Show-o: classifier-free guidance scale
    image_model: str = "gpt-image-1"           # API baselines: the Images API model (GPT-4o's image generation)
    image_size: str = "1024x1024"              # API baselines: size of the images asked for (WxH)
    gen_prompts_limit: int = 0                 # > 0: only the first N prompts per generation task and concept
    images_per_prompt: int = 0                 # > 0: overrides the benchmark's images per prompt


TINY = dict(backbone="tiny", n_caption_images=2, caption_max_new_tokens=6, summary_max_new_tokens=10,
            token_budget=12, max_new_tokens=8, gen_prompts_limit=1, images_per_prompt=1)


class PromptBaseline(Method):
    """What the prompt baselines share: a runner (model), per-concept context, answering and drawing."""

    runner_cls: type | None = None
    config_cls = TextPromptConfig
    runner = None          # the answering model's runner, made by `setup`
    _captioner = None      # the captioning model's runner (TextPromptBaseline with source "caption")

    def setup(self) -> None:
        self.runner = self.make_runner()
        self._context: dict[str, dict] = {}

    def make_runner(self):
        return self.runner_cls(self.ctx, self.config.backbone)

    def needs(self, concepts) -> list:
        return self.runner_needs()

    def runner_needs(self) -> list:
        """What `make_runner` will load or call."""
        return self.runner_cls.needs(self.ctx, self.config.backbone, f"method {self.name}")

    @property
    def backbone(self):
        """The answering model's backbone, untouched (the forgetting stage's base model); API models have none."""
        return self.runner.backbone if self.runner is not None else None

    def model_files(self) -> dict[str, Path]:
        files = {f"{self.runner.kind}/{p.name}": p for p in self.runner.files()}
        cap = self._captioner
        if cap is not None and cap is not self.runner:
            files.update({f"captioner_{cap.kind}/{p.name}": p for p in cap.files()})
        return files

    def name_of(self, concept: Concept) -> str:
        return concept_name(concept, self.config.name_format)

    # --- what goes before the question / prompt (subclasses) ---
    def context_segments(self, concept: Concept) -> list:
        raise NotImplementedError

    def load_artifact(self, concept: Concept, path: Path | None) -> None:
        self._context[concept.name] = json.loads(Path(path).read_text()) if path else {}

    # --- prediction ---
    def predict(self, concept: Concept, items: list[Item], out_dir: Path) -> list[Prediction]:
        cfg = self.config
        text_items = [i for i in items if i.task in self.tasks & UNDERSTANDING]
        gen_items = generation_items(items, self.tasks, cfg.gen_prompts_limit)
        preds = []
        context = self.context_segments(concept)
        name = self.name_of(concept)
        import torch
        with torch.no_grad():
            with maybe_task(self.ctx.progress, f"answering {concept.name}", len(text_items)) as advance:
                for item in text_items:
                    segments = list(context) + [question_text(item, name)]
                    if item.image is not None and item.task != TEXT_QA:
                        segments.append(Path(item.image))
                    preds.append(self._answer(item, segments))
                    advance()
            with maybe_task(self.ctx.progress, f"generating {concept.name}", len(gen_items)) as advance:
                for n, item in enumerate(gen_items):
                    segments = list(context) + [item.prompt.replace(PLACEHOLDER, name)]
                    k = cfg.images_per_prompt or item.n_images
                    gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "gen", item.id))
                    try:
                        images = self.runner.draw(segments, k, gen, cfg)
                    except ApiFailed as e:   # counted as a model error by the evaluators, never a score
                        preds.append(Prediction(item.id, item.concept, item.task, item.prompt, error=str(e)))
                    else:
                        preds.append(Prediction(item.id, item.concept, item.task, item.prompt,
                                                images=save_images(images, out_dir, f"{item.task}_{n:03d}")))
                    advance()
        return preds

    def _answer(self, item: Item, segments: list) -> Prediction:
        try:
            text = self.runner.answer(segments, self.config.max_new_tokens)
        except ApiFailed as e:
            return Prediction(item.id, item.concept, item.task, item.prompt, error=str(e))
        return Prediction(item.id, item.concept, item.task, item.prompt, text=text)


class TextPromptBaseline(PromptBaseline):
    """TP: a description of the concept (captions summarised to a token budget) before every request."""

    def setup(self) -> None:
        super().setup()
        cfg = self.config
        if cfg.source not in ("caption", "info", "none"):
            raise UserError(f"{self.name}: source must be caption, info or none, not {cfg.source!r}")
        self._captioner = self.make_captioner() if cfg.source == "caption" else None

    def _captioner_choice(self) -> tuple[type | None, str | None]:
        """(runner class, its checkpoint setting) of the captioner; (None, None) for "self"; the API runner's
        setting is the server."""
        cfg = self.config
        choice = cfg.captioner
        default = "tiny" if self.ctx.tiny or cfg.backbone == "tiny" else ""
        if choice == "self":
            return None, None
        if choice == "chameleon":
            return ChameleonRunner, cfg.captioner_backbone or default or "leloy/Anole-7b-v0.1-hf"
        if choice == "llava":
            return LlavaRunner, cfg.captioner_backbone or default or "13b"
        if choice == "qwen":
            return QwenVLRunner, cfg.captioner_backbone or default or QWEN_VL
        if choice == "api":
            from unifybench.baselines.common import ApiRunner
            return ApiRunner, cfg.base_url
        raise UserError(f"{self.name}: unknown captioner {choice!r} (known: self, chameleon, llava, qwen, api)")

    def make_captioner(self):
        cls, setting = self._captioner_choice()
        if cls is None:
            return self.runner
        from unifybench.baselines.common import ApiRunner
        if cls is ApiRunner:
            return ApiRunner(self.ctx, setting, self.config.api_model)
        return cls(self.ctx, setting)

    def needs(self, concepts) -> list:
        out = super().needs(concepts)
        if self.config.source == "caption":
            cls, setting = self._captioner_choice()
            if cls is not None:
                out += cls.needs(self.ctx, setting, f"method {self.name} (captioner)")
        return out

    def _captioner_id(self) -> str:
        cap = self._captioner
        if cap.kind == "api":
            return f"api:{cap.model}"
        from unifybench.store import file_sha256
        return cap.kind + ":" + ",".join(file_sha256(p, self.ctx.cache_dir) for p in cap.files())

    def describe_concept(self, concept: Concept) -> dict:
        """{"captions", "summary"} for the concept, from the disk cache when the same inputs were seen."""
        cfg = self.config
        name = self.name_of(concept)
        photos = list(concept.train_images[:cfg.n_caption_images])
        if not photos:
            raise UserError(f"concept {concept.name!r} has no training images to caption")
        key_doc = {"version": CACHE_VERSION, "captioner": self._captioner_id(), "images": files_digest(photos),
                   "name": name, "caption_prompt": cfg.caption_prompt, "summary_prompt": cfg.summary_prompt,
                   "caption_max_new_tokens": cfg.caption_max_new_tokens, "budget": cfg.token_budget,
                   "summary_max_new_tokens": cfg.summary_max_new_tokens}
        key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()
        cache = Path(self.ctx.cache_dir) / "captions" / f"{key}.json"
        if cache.exists():
            try:
                return json.loads(cache.read_text())
            except (OSError, ValueError):
                pass   # a torn file: caption again
        import torch
        with torch.no_grad():
            captions = [self._captioner.answer([p, cfg.caption_prompt], cfg.caption_max_new_tokens) for p in photos]
            listing = "\n".join(f"- {c}" for c in captions)
            summary = self._captioner.answer([cfg.summary_prompt.format(name=name, captions=listing,
                                                                        budget=cfg.token_budget)],
                                             cfg.summary_max_new_tokens)
        doc = {"captions": captions, "summary": summary, "key": key_doc}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(cache)
        return doc

    def fit(self, concept: Concept, benchmark: Benchmark, out_dir: Path) -> Path:
        cfg = self.config
        name = self.name_of(concept)
        doc: dict = {"source": cfg.source}
        if cfg.source == "caption":
            doc.update(self.describe_concept(concept))
            body = self.runner.truncate(doc["summary"], cfg.token_budget)
            description = f"{name}: {body}" if body else ""
        elif cfg.source == "info":
            description = self.runner.truncate(concept.info.replace(PLACEHOLDER, name), cfg.token_budget)
        else:
            description = ""
        if cfg.include_extra_info and cfg.source != "none" and concept.extra_info:
            description = " ".join([description, *(f.replace(PLACEHOLDER, name) for f in concept.extra_info)]).strip()
        doc["description"] = description
        doc["description_tokens"] = self.runner.count_tokens(description) if description else 0
        path = out_dir / "text_prompt.json"
        path.write_text(json.dumps(doc, indent=1))
        return path

    def context_segments(self, concept: Concept) -> list:
        description = self._context.get(concept.name, {}).get("description", "")
        return [description + "\n"] if description else []


class ChameleonTextPrompt(TextPromptBaseline):
    name = "chameleon-tp"
    tasks = frozenset({REC, VQA, TEXT_QA, MC, GEN, KNOWLEDGE_GEN})
    runner_cls = ChameleonRunner
    # UniCTokens section 4.1: the unified models' text prompts come from GPT-4o captions, summarised.
    presets = {"paper": dict(captioner="api"), "self-captions": dict(captioner="self"), "tiny": TINY,
               "info": dict(source="info"),
               "table2": dict(captioner="api", token_budget=64)}   # Table 2 (left): ~64 tokens


class ChameleonOriginal(TextPromptBaseline):
    name = "chameleon-original"
    tasks = frozenset({REC, VQA, TEXT_QA, MC, GEN, KNOWLEDGE_GEN})
    runner_cls = ChameleonRunner
    presets = {"paper": dict(source="none"), "tiny": dict(TINY, source="none")}


class ShowoTextPrompt(TextPromptBaseline):
    name = "showo-tp"
    tasks = frozenset({REC, VQA, TEXT_QA, MC, GEN, KNOWLEDGE_GEN})
    runner_cls = ShowoRunner
    # UniCTokens section 4.1: GPT-4o captions, summarised (`self-captions`: Show-o captions itself, no server).
    presets = {"paper": dict(backbone=SHOWO, captioner="api"), "self-captions": dict(backbone=SHOWO, captioner="self"),
               "table2": dict(backbone=SHOWO, captioner="api", token_budget=64),   # Table 2 (left): ~64 tokens
               "tiny": dict(TINY, gen_steps=4, guidance=2.0)}


class LlavaTextPrompt(TextPromptBaseline):
    name = "llava-tp"
    tasks = frozenset({REC, VQA, TEXT_QA, MC})
    runner_cls = LlavaRunner
    presets = {"paper": dict(backbone="llava-hf/llava-1.5-13b-hf"),
               "table2": dict(backbone="llava-hf/llava-1.5-13b-hf", token_budget=50),   # Table 2 (left): ~50
               "tiny": dict(TINY, backbone="tiny"), "info": dict(backbone="llava-hf/llava-1.5-13b-hf", source="info")}


class QwenVLTextPrompt(TextPromptBaseline):
    name = "qwen25vl-tp"
    tasks = frozenset({REC, VQA, TEXT_QA, MC})
    runner_cls = QwenVLRunner
    # Table 1: ~100 description tokens; Table 2 (Yo'LLaVA / MC-LLaVA data): 32. Captions by the model itself,
    # as Appendix B's LLaVA+Prompt (`--set captioner=api` for GPT-4o captions).
    presets = {"paper": dict(backbone=QWEN_VL, token_budget=100), "table2": dict(backbone=QWEN_VL, token_budget=32),
               "tiny": dict(TINY, backbone="tiny")}
