"""LLM-judge score of free-form answers (the UnifyBench "GPT" columns for VQA and text QA).

The judge sees a question, the reference answer and the model's answer, and replies 0, 0.5 or 1
(prompt ``qa-v1``, written for this project). Preset ``unictokens``: prompt
``qa-unictokens-paraphrase-v1``, **our paraphrase** of UniCTokens' judging protocol (same inputs and scale, its
reading of the reply: any number in [0, 1] is a score, after a "Score::" marker if there is one); its
numbers are a paraphrase's, not the paper's judge verbatim. The concept is written ``<name>`` in all three texts, as
UnifyBench's own files write it. An empty answer scores 0 without a call. A model error, a request that
failed after its retries, or a reply that is not one of the three scores is a failed sample (counted in
``n_failed``), never a number. The image of a VQA item is not sent (as in the UniCTokens judge): the
reference answer carries what the image shows.

Judge settings come from the run (``--judge-base-url``, ``--judge-model``, the key from the environment,
the run's seed). With ``--judge none`` the evaluator scores nothing and reports ``"off": true``.
"""
from __future__ import annotations

from typing import Any

from unifybench.data.schema import TEXT_QA, VQA, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.prompts import concept_text
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore

# Versioned prompts. Changing a text means a new version string: the version is part of the cache key
# and of the results, so numbers from different prompts are never mixed up.
QA_PROMPTS = {
    "qa-v1": {
        "system": (
            "You are grading answers to questions about one particular subject (a person, a pet or an "
            "object), which is referred to by a name in angle brackets. For each question you receive a "
            "reference answer, which is correct, and a candidate answer. Decide whether the candidate "
            "gives the same information as the reference for what the question asks. Ignore wording, "
            "grammar, spelling, length and politeness, and ignore extra details that do not contradict "
            "the reference.\n"
            "Reply with a single number and nothing else:\n"
            "1 - the candidate agrees with the reference on everything the question asks;\n"
            "0.5 - the candidate is partly right: it gets some of the asked information right, or it is "
            "right but vague or hedged between alternatives;\n"
            "0 - the candidate is wrong, contradicts the reference, does not answer, or is off topic.\n"
            "For instance, if the question is which toy <max> likes best and the reference says a "
            "squeaky yellow duck, then \"his yellow rubber duck that squeaks\" gets 1, \"a duck\" gets "
            "0.5 and \"a tennis ball\" gets 0."
        ),
        "user": "Question: {question}\nReference answer: {reference}\nCandidate answer: {candidate}\n"
                "Score (1, 0.5 or 0):",
    },
    # Preset `unictokens`: OUR PARAPHRASE of the judging protocol of UniCTokens eval/eval_p_mmu.py (its inputs:
    # question, reference answer, predicted answer, no image; its scale: 0 irrelevant, 0.5 partly, 1 fully
    # right, content over grammar; its reply: only the score). Not its text: its numbers were made with its
    # own wording on deepseek-chat, so a judge run with this prompt is a paraphrase, never the same number.
    "qa-unictokens-paraphrase-v1": {
        "system": (
            "You act as a grader of answers. You get a question, the answer known to be right, and an answer "
            "a model predicted. Give the prediction a score from 0 to 1: 0 when it has nothing to do with the "
            "right answer, 0.5 when it is partly right, 1 when it is fully right. Look only at what it says, "
            "not at its grammar or phrasing. For instance, if the question asks which colour of dress someone "
            "likes and the right answer is that they like blue dresses, then \"blue\" and \"their favourite "
            "colour is blue\" both get 1."
        ),
        "user": "Question: {question}\nRight answer: {reference}\nPredicted answer: {candidate}\n"
                "Reply with the score alone.",
    },
}
SCORE_MARKER = "Score::"   # UniCTokens reads the text after the last "Score::", else the whole reply


def parse_unit_float(reply: str) -> float | None:
    """UniCTokens' reading of a judge reply: the text after the last "Score::" (the whole reply without it),
    stripped, as a float; any value in [0, 1] is a score (0.7 included); anything else is None (a failed
    sample; the reference asserted and crashed)."""
    if not isinstance(reply, str):
        return None
    try:
        value = float(reply.split(SCORE_MARKER)[-1].strip())
    except ValueError:
        return None
    return value if 0.0 <= value <= 1.0 else None


def reply_parser(name: str):
    """The parse function of a judge evaluator's `parse` param: "three_scores" (0, 0.5, 1) or "unit_float"."""
    from unifybench.judge import parse_score
    return {"three_scores": parse_score, "unit_float": parse_unit_float}[name]


class JudgeEvaluator(Evaluator):
    """Shared plumbing of the judge evaluators: one client per run, 'off', stats in results."""

    needs_service = True
    prompt_versions: tuple[str, ...] = ()
    defaults = {
        "prompt_version": "",              # the judge prompt, by its versioned name
        "concept_as": "<{name}>",          # how the <sks> placeholder is written in what the judge reads
        "max_tokens": 16,                  # the judge reply's length limit
        "timeout": 60.0,                   # seconds per request
        "max_retries": 6,                  # retries of a failed request (429, 5xx, timeouts)
        "backoff": 1.0,                    # first retry delay in seconds, doubled per retry
        "max_consecutive_failures": 8,     # requests in a row without a reply that stop the run
        "workers": 4,                      # requests in flight at once
        "parse": "three_scores",           # reading a reply: "three_scores" (0, 0.5, 1) | "unit_float" (0..1)
    }

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        if self.params["parse"] not in ("three_scores", "unit_float"):
            raise UserError(f"evaluator {self.name!r}: parse must be 'three_scores' or 'unit_float', "
                            f"got {self.params['parse']!r}")
        if self.params["prompt_version"] not in self.prompt_versions:
            raise UserError(f"evaluator {self.name!r} has no prompt version {self.params['prompt_version']!r} "
                            f"(known: {', '.join(self.prompt_versions)})")
        self._client = None
        self._off = False

    def check(self, ctx: EvalContext) -> bool:
        """False when judge metrics are switched off (`--judge none`); raises when asked for without a
        server. The runner may call it before any work starts so a missing flag fails fast."""
        if not ctx.judge_enabled:
            return False
        if not ctx.judge_base_url:
            raise UserError(f"evaluator {self.name!r} needs a judge server: pass --judge-base-url URL and "
                            "--judge-model NAME (the key comes from UNIFYBENCH_JUDGE_API_KEY or "
                            "OPENAI_API_KEY), or --judge none to switch judge metrics off")
        if not ctx.judge_model:
            raise UserError(f"evaluator {self.name!r} needs --judge-model NAME (the model on "
                            f"the judge server)")
        return True

    def needs(self, ctx: EvalContext, concepts) -> list:
        from unifybench import needs
        from unifybench.judge import API_KEY_ENV, public_url

        def locate() -> str:
            if not self.check(ctx):
                return "switched off (--judge none)"
            import os
            key = next((name for name in API_KEY_ENV if os.environ.get(name)), None)
            where = f"judge {ctx.judge_model} at {public_url(ctx.judge_base_url)}"
            return (f"{where}, key from ${key}" if key else f"{where}, no key set "
                    f"(${' or $'.join(API_KEY_ENV)}; fine for a local server)")
        return [needs.service(f"evaluator {self.name}", locate)]

    def client(self, ctx: EvalContext):
        if self._client is None:
            from unifybench.judge import JudgeClient
            p = self.params
            cache_dir = ctx.cache_dir if ctx.cache_dir is not None else ctx.run_dir / ".cache"
            self._client = JudgeClient(ctx.judge_base_url, ctx.judge_model, seed=ctx.seed, cache_dir=cache_dir,
                                       timeout=p["timeout"], max_retries=p["max_retries"], backoff=p["backoff"],
                                       max_tokens=p["max_tokens"],
                                       max_consecutive_failures=p["max_consecutive_failures"])
        return self._client

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        if not self.check(ctx):
            self._off = True
            return []
        return self.judge(concept, items, predictions, ctx, self.client(ctx))

    def judge(self, concept, items, predictions, ctx, client) -> list[SampleScore]:
        raise NotImplementedError

    def score_missing(self, concept: Concept, items: list[Item], ctx: EvalContext) -> list[SampleScore]:
        if not self.check(ctx):   # judge metrics switched off: nothing is scored, missing or not
            self._off = True
            return []
        return super().score_missing(concept, items, ctx)

    def environment(self) -> dict[str, Any]:
        if self._off:
            return {"off": True, "reason": "--judge none"}
        if self._client is None:
            return {}
        return {"prompt_version": self.params["prompt_version"], "judge": self._client.stats()}

    def extra_aggregates(self, scores_by_concept: dict[str, list[SampleScore]]) -> dict[str, Any]:
        """Beside the value: which judge and prompt made it, and what it cost (or that it was off)."""
        if self._off:
            return {"off": True}
        if self._client is None:
            return {}
        st = self._client.stats()
        return {"judge": {"model": st["model"], "prompt_version": self.params["prompt_version"],
                          **{k: st[k] for k in ("calls", "requests", "cache_hits", "failures", "unparsable",
                                                "prompt_tokens", "completion_tokens")}}}


class JudgeQA(JudgeEvaluator):
    name = "judge_qa"
    version = "1"
    tasks = frozenset({VQA, TEXT_QA})
    prompt_versions = tuple(QA_PROMPTS)
    presets = {"default": {},
               "unictokens": {"prompt_version": "qa-unictokens-paraphrase-v1", "parse": "unit_float"}}
    defaults = {**JudgeEvaluator.defaults,
                "prompt_version": "qa-v1",         # the judge prompt, by its versioned name
                }

    def messages(self, concept: Concept, item: Item, answer: str) -> list[dict]:
        prompt = QA_PROMPTS[self.params["prompt_version"]]
        fmt = self.params["concept_as"]
        user = prompt["user"].format(question=concept_text(item.prompt, concept, fmt).strip(),
                                     reference=concept_text(item.answer or "", concept, fmt).strip(),
                                     candidate=concept_text(answer, concept, fmt).strip())
        return [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": user}]

    def judge(self, concept, items, predictions, ctx, client) -> list[SampleScore]:
        from unifybench.judge import JudgeRequest
        parse_score = reply_parser(self.params["parse"])
        out: list[SampleScore | None] = []
        requests, slots = [], []
        for item in items:
            pred = predictions.get(item.id)
            failed = _unscorable(item, pred)
            if failed:
                out.append(SampleScore(item.id, concept.name, None, failed=failed))
            elif not pred.text.strip():
                out.append(SampleScore(item.id, concept.name, 0.0, detail={"judge": "empty answer, not sent"}))
            else:
                slots.append(len(out))
                out.append(None)
                requests.append(JudgeRequest(self.messages(concept, item, pred.text),
                                             self.params["prompt_version"], parse_score, label=item.id))
        for slot, req, res in zip(slots, requests, client.ask_many(requests, self.params["workers"])):
            item_id = req.label
            if res.ok:
                out[slot] = SampleScore(item_id, concept.name, float(res.value),
                                        detail={"judge_reply": res.reply, "cached": res.cached})
            else:
                out[slot] = SampleScore(item_id, concept.name, None, failed=res.error,
                                        detail={"judge_reply": res.reply} if res.reply is not None else {})
        return out  # type: ignore[return-value]


def _unscorable(item: Item, pred: Prediction | None) -> str | None:
    if pred is None:
        return "no prediction"
    if pred.error is not None:
        return f"model error: {pred.error}"
    if pred.text is None:
        return "no text answer"
    if not item.answer:
        return "item has no reference answer"
    return None
