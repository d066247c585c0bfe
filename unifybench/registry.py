"""Name -> class registries for benchmarks, methods, baselines and evaluators.

Entries are lazy ``"module:Class"`` strings so that ``unifybench --help`` and ``unifybench ls`` never
import torch or a backbone; the class is imported on first ``get``. Third-party packages add entries
through the entry-point groups ``unifybench.<kind>`` (value ``"package.module:Class"``).
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from unifybench.errors import UserError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "module:Class"
    description: str


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # "methods", "baselines", ...
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False

    def register(self, name: str, target: str, description: str) -> None:
        old = self._entries.get(name)
        if old is not None and old.target != target:
            raise ValueError(f"{self.kind[:-1]} {name!r} is registered twice: {old.target} and {target}")
        self._entries[name] = Entry(name, target, description)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        # `--method NAME` looks in methods, then baselines: a plugin may not shadow a name in either.
        peers = [REGISTRIES[k] for k in RUNNABLE_KINDS if k != self.kind] if self.kind in RUNNABLE_KINDS else []
        for ep in entry_points(group=f"unifybench.{self.kind}"):
            taken = self._entries.get(ep.name) or next((r._entries[ep.name] for r in peers
                                                        if ep.name in r._entries), None)
            if taken is not None and taken.target != ep.value:
                self._plugins_loaded = False   # every later use says it again
                raise UserError(f"plugin {ep.name!r} ({ep.value}, entry point group unifybench.{self.kind}) clashes "
                                f"with {taken.name!r} ({taken.target}), already registered; rename the plugin's "
                                f"entry point")
            self.register(ep.name, ep.value, "")   # described by its docstring (`description`)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        self._load_plugins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(self.names()) or "none"
            raise UserError(f"unknown {self.kind[:-1]} {name!r}{hint} (known: {known})")
        return self._entries[name]

    def get(self, name: str) -> type:
        module_name, _, attr = self.entry(name).target.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def description(self, name: str) -> str:
        """A built-in's registered line; a plugin's class docstring's first line (the class is imported
        only here, when listed). A plugin that cannot be imported says so instead of stopping the list."""
        entry = self.entry(name)
        if entry.description:
            return entry.description
        try:
            doc = self.get(name).__doc__ or ""
        except Exception as e:  # a broken third-party package must not break `unifybench ls`
            return f"(cannot import {entry.target}: {type(e).__name__}: {e})"
        lines = [line.strip() for line in doc.strip().splitlines()]
        return lines[0] if lines else ""


BENCHMARKS = Registry("benchmarks")
METHODS = Registry("methods")
BASELINES = Registry("baselines")
EVALUATORS = Registry("evaluators")

REGISTRIES = {r.kind: r for r in (BENCHMARKS, METHODS, BASELINES, EVALUATORS)}
RUNNABLE_KINDS = ("methods", "baselines")   # the registries `run --method NAME` reads


def get_runnable(name: str) -> type:
    """A method or a baseline by name: `run --method NAME` accepts either."""
    if name in METHODS:
        return METHODS.get(name)
    if name in BASELINES:
        return BASELINES.get(name)
    METHODS.entry(name)  # raises the did-you-mean error over methods
    raise AssertionError("unreachable")


# --- built-in entries (descriptions are kept here so listing imports nothing heavy) ---
BENCHMARKS.register("unifybench-mini", "unifybench.data.unifybench:UnifyBenchMini",
                    "Bundled 4-concept mini benchmark in the UnifyBench layout (DreamBench photos, CC-BY 4.0)")
BENCHMARKS.register("unifybench", "unifybench.data.unifybench:UnifyBench",
                    "UnifyBench (UniCTokens paper): 20 concepts, understanding + generation + knowledge T2I")
BENCHMARKS.register("yollava", "unifybench.data.yollava:YoLLaVA",
                    "Yo'LLaVA (NeurIPS 2024): 40 concepts, recognition, visual + text A/B QA (circular), generation")
BENCHMARKS.register("mc-llava", "unifybench.data.mc_llava:MCLLaVA",
                    "MC-LLaVA: 2-4 concept scenarios; single/multi-concept recognition, VQA, choice, grounding, captions")
BENCHMARKS.register("dreambench", "unifybench.data.dreambench:DreamBench",
                    "DreamBench (DreamBooth, CVPR 2023): 30 subjects x 25 prompts x 4 images")

METHODS.register("yochameleon", "unifybench.methods.yochameleon:YoChameleon",
                 "Yo'Chameleon (CVPR 2025): dual soft prompts with self-prompting and soft positives on Chameleon/Anole")
METHODS.register("unictokens", "unifybench.methods.unictokens:UniCTokens", "UniCTokens (NeurIPS 2025): unified concept tokens on Show-o, three-stage training")
METHODS.register("yollava", "unifybench.methods.yollava:YoLLaVA",
                 "Yo'LLaVA (NeurIPS 2024): <sks> + 16 latent tokens on LLaVA-1.5, hard negatives, text-only QA")
METHODS.register("mc-llava", "unifybench.methods.mc_llava:MCLLaVA",
                 "MC-LLaVA: <name> + 16 latent tokens per concept, trained jointly per scenario on LLaVA-1.6 (anyres)")
METHODS.register("chameleon-full-ft", "unifybench.methods.full_finetune:ChameleonFullFinetune",
                 "Full-model fine-tuning of Chameleon/Anole (Yo'Chameleon supp. Table 1): 'A photo of <sks>', lr 1e-7")

BASELINES.register("random", "unifybench.baselines.random:RandomBaseline",
                   "Random row: a seeded coin flip answers each recognition question")
BASELINES.register("real-images", "unifybench.baselines.real_images:RealImages",
                   "Real Images row: the concept's own photos scored as generated images (real vs real)")
BASELINES.register("chameleon-original", "unifybench.baselines.text_prompt:ChameleonOriginal",
                   "Original Chameleon/Anole (Yo'Chameleon supp. Table 1): no personalization")
BASELINES.register("chameleon-tp", "unifybench.baselines.text_prompt:ChameleonTextPrompt",
                   "Chameleon/Anole + text prompt: captions of the training photos summarised to ~100 tokens")
BASELINES.register("chameleon-ip", "unifybench.baselines.image_prompt:ChameleonImagePrompt",
                   "Chameleon/Anole + image prompt: the concept's reference photos in the prompt")
BASELINES.register("llava-tp", "unifybench.baselines.text_prompt:LlavaTextPrompt",
                   "LLaVA-1.5 + text prompt (UniCTokens Appendix B): its own captions, summarised")
BASELINES.register("showo-tp", "unifybench.baselines.text_prompt:ShowoTextPrompt",
                   "Show-o + text prompt (UniCTokens Table 1): captions of the photos, summarised; understanding + generation")
BASELINES.register("qwen25vl-tp", "unifybench.baselines.text_prompt:QwenVLTextPrompt",
                   "Qwen2.5-VL + text prompt (UniCTokens Table 1, 3B): captions of the photos, summarised; understanding")
BASELINES.register("dreambooth-sd", "unifybench.baselines.diffusion:DreamBoothSD",
                   "DreamBooth on Stable Diffusion (diffusers, local checkpoint): fine-tuned per concept; generation only")
BASELINES.register("textual-inversion", "unifybench.baselines.diffusion:TextualInversionSD",
                   "Textual Inversion on Stable Diffusion (diffusers, local checkpoint): one learned word; generation only")
BASELINES.register("rap-llava", "unifybench.baselines.rap:RapLlava",
                   "RAP-MLLM (UniCTokens Table 1): each concept a database entry, retrieved into RAP-LLaVA's prompt")
BASELINES.register("gpt4o-tp", "unifybench.baselines.api:Gpt4oTextPrompt",
                   "GPT-4o + text prompt via an OpenAI-compatible server: chat answers, Images API generation")
BASELINES.register("gpt4o-ip", "unifybench.baselines.api:Gpt4oImagePrompt",
                   "GPT-4o + image prompt via an OpenAI-compatible server: chat answers, Images API edits from the photos")

EVALUATORS.register("recognition", "unifybench.evaluators.recognition:Recognition",
                    "Recognition weighted recall: mean of positive and negative recall per concept")
EVALUATORS.register("clip_i", "unifybench.evaluators.clip_image:ClipImage",
                    "CLIP-I: cosine of generated images to the concept's reference images (open_clip)")
EVALUATORS.register("clip_t", "unifybench.evaluators.clip_text:ClipText",
                    "CLIP-T: cosine of each generated image to its prompt (placeholder -> class noun)")
EVALUATORS.register("dino", "unifybench.evaluators.dino:Dino",
                    "DINO: cosine of generated images to the concept's reference images (ViT-S/16 CLS)")
EVALUATORS.register("face", "unifybench.evaluators.face:FaceSimilarity",
                    "ArcFace face similarity (insightface, local pack), person concepts; no-face counted")
EVALUATORS.register("bleu", "unifybench.evaluators.bleu:Bleu",
                    "BLEU of answers vs the reference: word BLEU-4 (sacrebleu); preset unictokens = char BLEU (nltk)")
EVALUATORS.register("mc", "unifybench.evaluators.multiple_choice:MultipleChoice",
                    "Multiple choice: letter or option text, circular over option orders, constant-'A' beside it")
EVALUATORS.register("caption", "unifybench.evaluators.caption:CaptionRecall",
                    "Caption recall (MC-LLaVA): the fraction of the image's concepts the caption names")
EVALUATORS.register("judge_qa", "unifybench.evaluators.judge_qa:JudgeQA",
                    "LLM judge (OpenAI-compatible server): 0 / 0.5 / 1 for a free-form answer vs the reference")
EVALUATORS.register("t2i_score", "unifybench.evaluators.knowledge:KnowledgeT2I",
                    "Knowledge-driven T2I score: a VLM judge rates 0 / 0.5 / 1 whether an image shows the facts")
EVALUATORS.register("mmlu", "unifybench.evaluators.forgetting.mmlu:MMLU",
                    "Forgetting: MMLU through lm-eval (A-D loglikelihood) on the base and personalized model, +/- prompt")
EVALUATORS.register("yochameleon_mmlu_generative", "unifybench.evaluators.forgetting.mmlu_yochameleon:YoChameleonMMLU",
                    "Forgetting: Yo'Chameleon's MMLU replica (abstract algebra, sampled text, substring match)")
EVALUATORS.register("pope", "unifybench.evaluators.forgetting.pope:POPE",
                    "Forgetting: POPE yes/no (original parser): acc, precision, recall, F1, yes-ratio per split")
EVALUATORS.register("mmbench", "unifybench.evaluators.forgetting.mmbench:MMBench",
                    "Forgetting: MMBench dev (en), circular, rule extraction then judge; failures counted")
