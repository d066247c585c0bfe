"""MMBench (dev, English) on the model: circular evaluation, rule extraction first, the judge only for the rest.

**Data** (parameter ``data`` or ``UNIFYBENCH_MMBENCH_ROOT``: the TSV file, or a folder holding
``tsv``, default ``mmbench_dev_20230712.tsv``): columns ``index``, ``question``, ``hint``, ``A``..``D``
(empty for absent options), ``answer`` (a letter), ``category``, ``image`` (base64; a short value that is
another row's index refers to that row's image, as in VLMEvalKit's TSVs).

**Circular.** A file whose indices include copies ``index + k * 1e6`` already holds the rotated orders
(the official dev TSV): rows are grouped by ``index % 1e6``. Otherwise every question is asked in each
rotation of its options (option texts shift one place per rotation, the letters stay A, B, ...). A question
counts as correct only if **every** order is answered correctly; with ``circular=False`` only the order as
given is asked.

**Prompt** (``prompt_layout="default"``): the image, a newline; the hint and a newline if there is one; the
question; one line per option "A. text"; then "Answer with the option's letter from the given choices
directly."; end of turn; greedy, at most 10 new tokens (room for "The answer is B", which the extraction
reads).

**Preset** ``yochameleon``: Yo'Chameleon's ``evaluation/forgetting/model_vqa_mmbench.py`` as its
``scripts/eval/eval_mmbench.sh`` runs it (``--single-pred-prompt``, temperature 0, its default
``max_new_tokens`` 1): the image, a newline **and a space** (``"<image>\n " + question``), the same text, then
**two** end-of-turn tokens (one written into the text, one appended by the processor); greedy, **one** new
token. The reply is that one token (the script keeps the text after the prompt's end-of-turn tokens), read by
the same extraction. The Yo'Chameleon supplementary Table 1 "MMBench" column reads this preset.

**Extraction.** :func:`unifybench.evaluators.multiple_choice.parse_choice` (the reply's option letter, else
one option's text; a reply naming several options is ambiguous, counted in ``n_ambiguous``). When that
fails and a judge is configured and on (``judge=True``, ``--judge-base-url``, not ``--judge none``), the judge is asked which option the reply means (prompt ``mmbench-v1``, a letter or Z
for none). Whatever is still unresolved (no judge, judge says Z, judge request failed) is **wrong and
counted** (``n_unparsed``, ``n_judge_failed``); it is never replaced by a random option. A generation that
raised fails its question (``n_failed``), which is left out of the accuracy.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from unifybench.errors import DataError, UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.forgetting.base import ModelEvaluator, answer_text, data_root
from unifybench.evaluators.multiple_choice import parse_choice

LETTERS = ("A", "B", "C", "D", "E", "F", "G", "H", "I")
COPY_STRIDE = 1_000_000
INSTRUCTION = "Answer with the option's letter from the given choices directly."
JUDGE_PROMPTS = {
    "mmbench-v1": {
        "system": ("You match a model's reply to a multiple-choice question against the options. Reply with the "
                   "letter of the one option the reply chooses, or Z if it chooses none of them, several of them, "
                   "or cannot be understood. Reply with one letter and nothing else."),
        "user": "Question: {question}\nOptions:\n{options}\nReply: {reply}\nLetter:",
    },
}


# ---------------------------------------------------------------------------------------------- data

def _cell(row, key) -> str:
    v = row.get(key)
    return "" if v is None else str(v).strip()


def load_tsv(path: Path) -> list[dict]:
    """Rows as dicts with `index` (int), `options` ((letter, text) ...), `answer`, `image` (base64)."""
    import pandas as pd
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read the TSV ({e})") from None
    need = {"index", "question", "answer", "image", "A", "B"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise DataError(path, f"missing column {missing[0]!r}")
    rows = df.to_dict("records")
    images = {_cell(r, "index"): _cell(r, "image") for r in rows}
    out = []
    for n, r in enumerate(rows):
        try:
            index = int(float(_cell(r, "index")))
        except ValueError:
            raise DataError(path, f"row {n}: index {r.get('index')!r} is not a number", "index") from None
        options = tuple((lt, _cell(r, lt)) for lt in LETTERS if lt in r and _cell(r, lt))
        answer = _cell(r, "answer").upper()
        if answer not in dict(options):
            raise DataError(path, f"row {n} (index {index}): answer {answer!r} is not one of the options", "answer")
        image = _cell(r, "image")
        if len(image) <= 64 and image in images:  # a reference to another row's image
            image = images[image]
        out.append({"index": index, "question": _cell(r, "question"), "hint": _cell(r, "hint"),
                    "options": options, "answer": answer, "category": _cell(r, "category"), "image": image})
    return out


def circular_groups(rows: list[dict], circular: bool = True) -> dict[int, list[dict]]:
    """Question id -> its orders (dicts with `rotation`, `options`, `answer`, ...), see the module doc."""
    groups: dict[int, list[dict]] = {}
    if any(r["index"] >= COPY_STRIDE for r in rows):
        for r in rows:
            groups.setdefault(r["index"] % COPY_STRIDE, []).append({**r, "rotation": r["index"] // COPY_STRIDE})
        for g in groups.values():
            g.sort(key=lambda r: r["rotation"])
        if not circular:
            groups = {k: [r for r in g if r["rotation"] == 0] or g[:1] for k, g in groups.items()}
        return groups
    for r in rows:
        letters = [lt for lt, _ in r["options"]]
        texts = [t for _, t in r["options"]]
        right = letters.index(r["answer"])
        n = len(letters) if circular else 1
        groups[r["index"]] = [{**r, "rotation": k, "options": tuple(zip(letters, texts[k:] + texts[:k])),
                               "answer": letters[(right - k) % len(letters)]} for k in range(n)]
    return groups


# layout -> (text right after the image, number of end-of-turn tokens closing the question)
LAYOUTS = {"default": ("\n", 1), "yochameleon": ("\n ", 2)}


def prompt_text(order: dict, layout: str = "default") -> str:
    """The question text that follows the image (see the module doc for the two layouts)."""
    text = LAYOUTS[layout][0]
    if order["hint"]:
        text += order["hint"] + "\n"
    text += order["question"]
    for letter, option in order["options"]:
        text += f"\n{letter}. {option}"
    return text + "\n" + INSTRUCTION


def parse_judge_letter(reply: str, letters: tuple[str, ...]) -> str | None:
    """The judge's letter ('Z' = none); None when the reply is not one letter of the options or Z."""
    t = reply.strip().strip(".()[]*'\" ").upper()
    return t if t in set(letters) | {"Z"} else None


def summarise(orders: list[dict]) -> dict[str, Any]:
    """Circular accuracy from answered orders (`qid`, `correct` or `failed`, `how`, `category`)."""
    groups: dict[Any, list[dict]] = {}
    for o in orders:
        groups.setdefault(o["qid"], []).append(o)
    complete = {q: g for q, g in groups.items() if not any(o.get("failed") for o in g)}
    right = {q: all(o["correct"] for o in g) for q, g in complete.items()}
    scored = [o for o in orders if not o.get("failed")]
    by_cat: dict[str, list[bool]] = {}
    for q, g in complete.items():
        by_cat.setdefault(g[0].get("category") or "", []).append(right[q])
    return {
        "value": sum(right.values()) / len(right) if right else None,
        "n": len(right), "n_failed": len(groups) - len(complete),
        "n_orders": len(orders),
        "per_order_accuracy": sum(o["correct"] for o in scored) / len(scored) if scored else None,
        "n_rule": sum(1 for o in scored if o.get("how") in ("letter", "text")),
        "n_judged": sum(1 for o in scored if o.get("how") == "judge"),
        "n_unparsed": sum(1 for o in scored if o.get("how") is None),
        "n_ambiguous": sum(1 for o in scored if o.get("ambiguous")),
        "n_judge_failed": sum(1 for o in scored if o.get("judge_error")),
        "per_category": {c: sum(v) / len(v) for c, v in sorted(by_cat.items())},
    }


# ----------------------------------------------------------------------------------------- evaluator

class MMBench(ModelEvaluator):
    name = "mmbench"
    version = "1"
    env_var = "UNIFYBENCH_MMBENCH_ROOT"
    defaults = {**ModelEvaluator.defaults,
                "tsv": "mmbench_dev_20230712.tsv",   # the question file in the data folder
                "circular": True,                    # a question is right only if every option order is right
                "max_new_tokens": 10,                # replies, greedy
                "judge": True,                       # ask the --judge-base-url judge about replies rules cannot read
                "judge_prompt": "mmbench-v1",        # that judge prompt, by its versioned name
                "prompt_layout": "default",          # "default" | "yochameleon" (its spacing around the image)
                }
    tiny_data = {"data": "bundled:mini_forgetting/mmbench", "tsv": "mmbench_mini.tsv"}
    presets = {"default": {},
               "yochameleon": {"max_new_tokens": 1, "prompt_layout": "yochameleon"}}

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        if self.params["prompt_layout"] not in LAYOUTS:
            raise UserError(f"mmbench: prompt_layout must be one of {', '.join(LAYOUTS)}, "
                            f"got {self.params['prompt_layout']!r}")
        if self.params["judge_prompt"] not in JUDGE_PROMPTS:
            raise UserError(f"mmbench: unknown judge prompt {self.params['judge_prompt']!r}")
        self._client = None
        self._judge_state = "not needed"

    def tsv_path(self) -> Path:
        root = data_root(self.name, self.params["data"], self.env_var, "the MMBench dev TSV or its folder")
        path = root / self.params["tsv"] if root.is_dir() else root
        if not path.is_file():
            raise UserError(f"mmbench: no TSV {path} (set tsv=NAME)")
        return path

    def data_files(self) -> list[Path]:
        return [self.tsv_path()]

    def groups(self) -> dict[int, list[dict]]:
        groups = circular_groups(load_tsv(self.tsv_path()), bool(self.params["circular"]))
        limit = int(self.params["limit"] or 0)
        if limit:
            groups = dict(list(groups.items())[:limit])
        return groups

    def judge_client(self, ctx: EvalContext):
        """The judge, or None when it is off or not configured (the unresolved replies then stay counted)."""
        if not self.params["judge"] or not ctx.judge_enabled or not ctx.judge_base_url:
            self._judge_state = "off" if not ctx.judge_enabled or not self.params["judge"] else "not configured"
            return None
        if self._client is None:
            from unifybench.judge import JudgeClient
            cache = ctx.cache_dir if ctx.cache_dir is not None else ctx.run_dir / ".cache"
            self._client = JudgeClient(ctx.judge_base_url, ctx.judge_model, seed=ctx.seed, cache_dir=cache, max_tokens=4)
        self._judge_state = "on"
        return self._client

    def resolve(self, order: dict, reply: str, ctx: EvalContext) -> dict:
        """{"parsed", "how", "judge_error"?}: rule extraction, then the judge for what is left."""
        parsed, how = parse_choice(reply, order["options"])
        if parsed is not None:
            return {"parsed": parsed, "how": how}
        unread = {"ambiguous": True} if how == "ambiguous" else {}   # names several options
        client = self.judge_client(ctx) if reply.strip() else None
        if client is None:
            return {"parsed": None, "how": None, **unread}
        letters = tuple(lt for lt, _ in order["options"])
        prompt = JUDGE_PROMPTS[self.params["judge_prompt"]]
        user = prompt["user"].format(question=order["question"], reply=reply,
                                     options="\n".join(f"{lt}. {t}" for lt, t in order["options"]))
        res = client.ask([{"role": "system", "content": prompt["system"]}, {"role": "user", "content": user}],
                         self.params["judge_prompt"], lambda r: parse_judge_letter(r, letters),
                         label=f"{order['index']}@{order['rotation']}")
        if not res.ok:
            return {"parsed": None, "how": None, "judge_error": res.error, **unread}
        if res.value == "Z":
            return {"parsed": None, "how": None, "judge": "Z", **unread}
        return {"parsed": res.value, "how": "judge"}

    def report_metrics(self, result: dict) -> dict[str, float | None]:
        return {"circular accuracy" if self.params["circular"] else "accuracy": result["value"]}

    def evaluate_model(self, backbone, prefix_ids: list[int] | None, ctx: EvalContext) -> dict[str, Any]:
        from PIL import Image
        orders = []
        for qid, group in self.groups().items():
            image = None
            try:
                image = Image.open(io.BytesIO(base64.b64decode(group[0]["image"]))).convert("RGB")
            except (ValueError, OSError) as e:
                error = f"cannot decode the image: {e}"
            for order in group:
                row = {"id": f"{qid}@{order['rotation']}", "qid": qid, "rotation": order["rotation"],
                       "category": order["category"], "gold": order["answer"]}
                if image is None:
                    orders.append({**row, "failed": error, "correct": False, "score": None})
                    continue
                image_k = image
                if order["image"] != group[0]["image"]:  # a copy with its own image
                    try:
                        image_k = Image.open(io.BytesIO(base64.b64decode(order["image"]))).convert("RGB")
                    except (ValueError, OSError) as e:
                        orders.append({**row, "failed": f"cannot decode the image: {e}", "correct": False,
                                       "score": None})
                        continue
                layout = self.params["prompt_layout"]
                # extra end-of-turn tokens go in as an encoded part: the reference writes one into its text
                extra = [[backbone.eot_id] * (LAYOUTS[layout][1] - 1)] if LAYOUTS[layout][1] > 1 else []
                reply = answer_text(backbone, prefix_ids, [image_k, prompt_text(order, layout), *extra],
                                    int(self.params["max_new_tokens"]))
                got = self.resolve(order, reply, ctx)
                correct = got["parsed"] == order["answer"]
                orders.append({**row, "answer": reply, **got, "correct": correct, "score": float(correct)})
        result = summarise(orders)
        result["circular"] = bool(self.params["circular"])
        result["judge"] = self._judge_state if self._judge_state != "on" else \
            {k: v for k, v in self._client.stats().items() if k in ("model", "calls", "cache_hits", "failures")}
        result["samples"] = orders
        return result

    def environment(self) -> dict[str, Any]:
        if self._client is None:
            return {}
        return {"judge": self._client.stats(), "prompt_version": self.params["judge_prompt"]}
