"""BLEU of free-form answers against the one reference answer (VQA and text QA).

Two definitions, never to be compared with each other:

* ``default``: word-level sentence BLEU-4 by sacrebleu (``tokenize="13a"``, exponential smoothing,
  effective order, case-sensitive), reported on a 0-1 scale (``scale=1``; ``scale=100`` gives sacrebleu's
  own 0-100 numbers). This is the BLEU the rest of the field means.
* ``unictokens``: the UnifyBench "VQA BLEU" / "QA BLEU" columns exactly as the UniCTokens evaluation code
  computes them: nltk ``sentence_bleu`` over lists of *characters* (spaces and punctuation are tokens), weights
  (0.7, 0.3) (unigrams and bigrams only), ``SmoothingFunction().method1``, no lower-casing, an empty
  answer scores 0. Character BLEU runs much higher than word BLEU on English text.

In both, the concept placeholder in the reference (and in the answer, if a method echoed it) is written
as ``<name>``, the way UnifyBench's files write the concept (``concept_as``). Per concept the mean over
items, then the mean over concepts. A model error is a failed sample; an empty answer is a 0.
"""
from __future__ import annotations

from typing import Any

from unifybench.data.schema import TEXT_QA, VQA, Concept, Item, Prediction
from unifybench.errors import UserError
from unifybench.prompts import concept_text
from unifybench.evaluators.base import EvalContext, Evaluator, SampleScore

NLTK_SMOOTHING = ("method0", "method1", "method2", "method3", "method4", "method5", "method6", "method7")


class Bleu(Evaluator):
    name = "bleu"
    version = "1"
    tasks = frozenset({VQA, TEXT_QA})
    defaults: dict[str, Any] = {
        "library": "sacrebleu",     # "sacrebleu" | "nltk"
        "tokenize": "13a",          # sacrebleu tokenizer name; with nltk: "char" or any sacrebleu tokenizer
        "max_ngram_order": 4,       # sacrebleu; with nltk the length of `weights`
        "weights": None,            # nltk n-gram weights (None: uniform over max_ngram_order)
        "smoothing": "exp",         # sacrebleu smooth_method, or an nltk SmoothingFunction method name
        "lowercase": False,         # lower-case answer and reference before comparing
        "scale": 1.0,               # 1: 0-1 scale; 100: sacrebleu's 0-100
        "concept_as": "<{name}>",   # how the <sks> placeholder is written before comparing
    }
    presets = {
        "default": {},
        "unictokens": {"library": "nltk", "tokenize": "char", "weights": [0.7, 0.3], "max_ngram_order": 2,
                       "smoothing": "method1", "lowercase": False, "scale": 1.0},
        # MC-LLaVA eval.py computes the same character BLEU; -single: its si_sq items only (UniCTokens Table 2)
        "mc-llava": {"library": "nltk", "tokenize": "char", "weights": [0.7, 0.3], "max_ngram_order": 2,
                     "smoothing": "method1", "lowercase": False, "scale": 1.0},
        "mc-llava-single": {"library": "nltk", "tokenize": "char", "weights": [0.7, 0.3], "max_ngram_order": 2,
                            "smoothing": "method1", "lowercase": False, "scale": 1.0, "types": ["si_sq"]},
    }

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        p = self.params
        if p["library"] not in ("sacrebleu", "nltk"):
            raise UserError(f"bleu: library must be 'sacrebleu' or 'nltk', got {p['library']!r}")
        from sacrebleu.metrics import BLEU
        if p["tokenize"] != "char" or p["library"] == "sacrebleu":
            if p["tokenize"] not in BLEU.TOKENIZERS:
                raise UserError(f"bleu: unknown tokenizer {p['tokenize']!r} "
                                f"(known: {', '.join(BLEU.TOKENIZERS)}{', char' if p['library'] == 'nltk' else ''})")
        if p["library"] == "sacrebleu":
            if p["weights"] is not None:
                raise UserError("bleu: sacrebleu weighs n-gram orders uniformly; 'weights' needs library=nltk")
            if p["smoothing"] not in BLEU.SMOOTH_DEFAULTS:
                raise UserError(f"bleu: sacrebleu smoothing must be one of {sorted(BLEU.SMOOTH_DEFAULTS)}")
            self._bleu = BLEU(tokenize=p["tokenize"], smooth_method=p["smoothing"], lowercase=p["lowercase"],
                              max_ngram_order=int(p["max_ngram_order"]), effective_order=True)
        else:
            if p["smoothing"] not in NLTK_SMOOTHING:
                raise UserError(f"bleu: nltk smoothing must be one of {', '.join(NLTK_SMOOTHING)}")
            weights = p["weights"] or [1.0 / int(p["max_ngram_order"])] * int(p["max_ngram_order"])
            if len(weights) != int(p["max_ngram_order"]):
                raise UserError(f"bleu: {len(weights)} weights for max_ngram_order={p['max_ngram_order']}; "
                                "give one weight per n-gram order")
            self._weights = tuple(float(w) for w in weights)
            # "char": Python's list(str), as the UniCTokens code; otherwise words from a sacrebleu tokenizer.
            self._tokenizer = None if p["tokenize"] == "char" else BLEU(tokenize=p["tokenize"]).tokenizer
        if float(p["scale"]) <= 0:
            raise UserError("bleu: scale must be positive (1 or 100)")

    def sentence(self, hypothesis: str, reference: str) -> float:
        """BLEU of one answer against one reference, on the configured scale."""
        p = self.params
        if p["library"] == "sacrebleu":
            return self._bleu.sentence_score(hypothesis, [reference]).score / 100.0 * float(p["scale"])
        if hypothesis == "":
            return 0.0   # as the reference code: an empty answer scores 0
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        if p["lowercase"]:
            hypothesis, reference = hypothesis.lower(), reference.lower()
        if self._tokenizer is None:
            hyp, ref = list(hypothesis), list(reference)
        else:
            hyp, ref = self._tokenizer(hypothesis).split(), self._tokenizer(reference).split()
        smoothing = getattr(SmoothingFunction(), p["smoothing"])
        return float(sentence_bleu([ref], hyp, weights=self._weights, smoothing_function=smoothing)) \
            * float(p["scale"])

    def score(self, concept: Concept, items: list[Item], predictions: dict[str, Prediction],
              ctx: EvalContext) -> list[SampleScore]:
        out = []
        fmt = self.params["concept_as"]
        for item in items:
            pred = predictions.get(item.id)
            reason = ("no prediction" if pred is None else f"model error: {pred.error}" if pred.error is not None
                      else "no text answer" if pred.text is None
                      else "item has no reference answer" if not item.answer else None)
            if reason:
                out.append(SampleScore(item.id, concept.name, None, failed=reason))
                continue
            ref = concept_text(item.answer, concept, fmt)
            hyp = concept_text(pred.text, concept, fmt)
            out.append(SampleScore(item.id, concept.name, self.sentence(hyp, ref), detail={"reference": ref}))
        return out
