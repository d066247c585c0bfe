"""Yo'Chameleon's "MMLU" forgetting number, replicated under its own name: ``yochameleon_mmlu_generative``.

This is **not** MMLU and its numbers must never be put beside lm-eval MMLU (``mmlu``). What Yo'Chameleon's
``evaluation/forgetting/eval_mmlu.py`` does (project notes, yochameleon_yollava.md 2.6), reproduced here:

* one subject, ``abstract_algebra``, ``test`` split (100 questions), from the cais/mmlu files (parameter
  ``data`` or ``UNIFYBENCH_MMLU_ROOT``, the same layout as ``mmlu``);
* prompt: the question as stored (not stripped), a space, then the option texts written "c1, c2, c3 or c4?"
  (no letters), then the end of turn the processor appends;
* decoding: text only (image tokens forbidden), **sampling** at temperature 0.2 (top-k 50, the transformers
  default), at most 30 new tokens; each question draws from its own
  ``torch.Generator`` seeded from (run seed, question index), so a result does not depend on the order;
* the answer: the original decodes prompt and reply, splits at the end-of-turn token and keeps pieces 1 and 2
  (``split(eot)[1:3]``, joined, stripped): the generated text up to the **second** generated end of turn, the
  end-of-turn tokens themselves dropped. Generation stops there (or at ``</s>``, or after 30 tokens); what
  would follow is never read. ``segments=1`` keeps only the text up to the first end of turn;
* scoring: correct iff the correct option's text is a substring of the decoded answer (very lenient: many
  abstract-algebra options are short numbers such as "0" or "4").

With ``with_prompt`` (the runner's "prompt" condition) the personalized prompt goes in front of the question,
which the original never does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unifybench.errors import DataError, UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.forgetting.base import ModelEvaluator, build_prompt, data_root, decode_answer
from unifybench.models.contract import require
from unifybench.evaluators.forgetting.mmlu import find_subjects


def options_text(choices: list[str]) -> str:
    """"c1, c2, c3 or c4?" (and "c1 or c2?" for two options)."""
    choices = [str(c) for c in choices]
    if len(choices) == 1:
        return choices[0] + "?"
    return ", ".join(choices[:-1]) + " or " + choices[-1] + "?"


def read_records(files: list[Path]) -> list[dict]:
    rows: list[dict] = []
    for f in files:
        if f.suffix == ".parquet":
            import pandas as pd
            df = pd.read_parquet(f)
            rows += [{"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])}
                     for r in df.to_dict("records")]
            continue
        text = f.read_text(encoding="utf-8")
        try:
            recs = json.loads(text) if text.lstrip().startswith("[") else \
                [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise DataError(f, f"not JSON lines ({e.msg})") from None
        rows += recs
    for n, r in enumerate(rows):
        if not {"question", "choices", "answer"} <= set(r) or not 0 <= int(r["answer"]) < len(r["choices"]):
            raise DataError(files[0], f"record {n} lacks question/choices/answer or its answer is out of range")
    return rows


class YoChameleonMMLU(ModelEvaluator):
    name = "yochameleon_mmlu_generative"
    version = "1"
    env_var = "UNIFYBENCH_MMLU_ROOT"
    defaults = {**ModelEvaluator.defaults,
                "subject": "abstract_algebra",       # the one MMLU subject asked (Yo'Chameleon's)
                "split": "test",                     # the split scored
                "temperature": 0.2,                  # answers are sampled (as the original): temperature
                "top_k": 50,                         # sampling: top-k
                "top_p": 1.0,                        # sampling: nucleus
                "max_new_tokens": 30,                # reply length limit
                "segments": 2,                       # answer = text up to the 2nd generated end of turn (1: 1st)
                }
    tiny_data = {"data": "bundled:mini_forgetting/mmlu"}
    presets = {"default": {}}

    def files(self) -> list[Path]:
        root = data_root(self.name, self.params["data"], self.env_var, "a folder in the cais/mmlu layout")
        found = find_subjects(root).get(self.params["subject"], {})
        files = found.get(self.params["split"])
        if not files:
            raise UserError(f"{self.name}: no {self.params['subject']}/{self.params['split']} files under {root}")
        return files

    def data_files(self) -> list[Path]:
        return self.files()

    def report_metrics(self, result: dict) -> dict[str, float | None]:
        return {"accuracy (substring)": result["value"]}

    def evaluate_model(self, backbone, prefix_ids: list[int] | None, ctx: EvalContext) -> dict[str, Any]:
        import torch
        from unifybench.environment import derive_seed
        from unifybench.models.chameleon.backbone import sample_next

        require(backbone, "has_hidden", what=self.name)
        records = read_records(self.files())
        if int(self.params["limit"] or 0):
            records = records[:int(self.params["limit"])]
        banned = []
        if backbone.image_token_ids is not None:
            banned = backbone.image_token_ids.tolist() + [backbone.boi_id, backbone.eoi_id]
        banned_t = torch.tensor(banned, dtype=torch.long)
        stop = {backbone.eos_id}
        segments = int(self.params["segments"])
        if segments < 1:
            raise UserError(f"{self.name}: segments must be >= 1 (the reference keeps 2)")
        samples = []
        for n, rec in enumerate(records):
            text = str(rec["question"]) + " " + options_text(rec["choices"])
            ids = build_prompt(backbone, prefix_ids, [text])
            gen = torch.Generator().manual_seed(derive_seed(ctx.seed, self.name, str(n)))
            new: list[int] = []
            with torch.no_grad():
                step, past = torch.tensor([ids], device=backbone.device), None
                for _ in range(int(self.params["max_new_tokens"])):
                    hidden, past = backbone.forward_hidden(step, past_key_values=past, use_cache=True)
                    scores = backbone.logits(hidden[:, -1]).float()
                    if len(banned_t):
                        scores[:, banned_t.to(scores.device)] = float("-inf")
                    token = int(sample_next(scores, gen, self.params["temperature"], self.params["top_k"],
                                            self.params["top_p"])[0])
                    if token in stop:
                        break
                    new.append(token)
                    if token == backbone.eot_id and new.count(token) == segments:
                        break   # the end of the kept segments
                    step = torch.tensor([[token]], device=step.device)
            answer = decode_answer(backbone, new, set(prefix_ids or ()))
            gold = str(rec["choices"][int(rec["answer"])])
            correct = gold in answer
            samples.append({"id": str(n), "question": rec["question"], "gold": gold, "answer": answer,
                            "score": float(correct)})
        value = sum(s["score"] for s in samples) / len(samples) if samples else None
        return {"value": value, "n": len(samples), "n_failed": 0, "subject": self.params["subject"],
                "temperature": self.params["temperature"], "samples": samples}
