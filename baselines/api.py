"""GPT-4o + text prompt / image prompt (UniCTokens Table 1 "Upper Bound" rows) over an OpenAI-compatible API.

Requests go through `unifybench.judge.JudgeClient` (a fresh system + user conversation each, temperature 0,
the run's seed, retries with backoff, a disk cache of replies under `<cache>/api/`); the server is
`--set base_url=URL` or $UNIFYBENCH_API_BASE_URL, the model `--set api_model=NAME` (default gpt-4o), the key
$UNIFYBENCH_API_KEY or $OPENAI_API_KEY (never logged or written). A request that gets no usable reply is a
model error for that item (counted, never a score).

Generation goes through the Images API of the same server (`images.generate`; `images.edit` with the
reference photos for IP), model `--set image_model=NAME` (default gpt-image-1, the API's GPT-4o image
generation) at `--set image_size=WxH`. The Images API takes no seed: replies are cached on disk
(`<cache>/api/judge/images/`), so a rerun reproduces the images without a call; a failed request is a model
error for that item.
TP describes the concept with captions made by the same API model from the training photos (or the
benchmark's text with `--set source=info`); IP sends the reference photos themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

from unifybench.baselines.common import ApiRunner
from unifybench.baselines.image_prompt import ImagePromptBaseline, ImagePromptConfig
from unifybench.baselines.text_prompt import TextPromptBaseline
from unifybench.data.schema import GEN, KNOWLEDGE_GEN, MC, REC, TEXT_QA, VQA
from unifybench.settings import positive


class _Api:
    calls_api = True
    tasks = frozenset({REC, VQA, TEXT_QA, MC, GEN, KNOWLEDGE_GEN})

    def make_runner(self):
        return ApiRunner(self.ctx, self.config.base_url, self.config.api_model,
                         max_tokens=max(self.config.max_new_tokens, self.config.summary_max_new_tokens))

    def runner_needs(self) -> list:
        return ApiRunner.needs(self.ctx, self.config.base_url, f"method {self.name}")


class Gpt4oTextPrompt(_Api, TextPromptBaseline):
    name = "gpt4o-tp"
    presets = {"paper": dict(captioner="self", max_new_tokens=300),
               "tiny": dict(n_caption_images=2, max_new_tokens=30, gen_prompts_limit=1, images_per_prompt=1)}


@dataclass
class ApiImagePromptConfig(ImagePromptConfig):
    max_new_tokens: int = positive(300)


class Gpt4oImagePrompt(_Api, ImagePromptBaseline):
    name = "gpt4o-ip"
    config_cls = ApiImagePromptConfig
    presets = {"tiny": dict(n_reference_images=2, max_new_tokens=30, gen_prompts_limit=1, images_per_prompt=1)}
