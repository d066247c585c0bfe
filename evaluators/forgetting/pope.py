"""POPE (object hallucination, yes/no questions on COCO val2014) on the model, with the original parser.

**Data** (parameter ``data`` or ``UNIFYBENCH_POPE_ROOT``), the POPE/LLaVA files:

* ``llava_pope_test.jsonl`` (``questions``): one question per line, ``question_id``, ``image`` (file name),
  ``text`` (the question, with LLaVA's "Answer the question using a single word or phrase." line) and
  ``category`` (adversarial | popular | random);
* ``coco_pope_<category>.json`` (JSON lines ``question_id``, ``image``, ``text``, ``label`` yes/no), found in
  ``labels`` (default: the root, else the first match under it). As in LLaVA's ``eval_pope.py`` a category's
  answers are matched to its label lines by order; here every pair is also checked (same image, the label's
  question opening the asked question), so a shuffled file is a data error, not a silent wrong score.
  A question line that carries its own ``label`` needs no label file;
* ``val2014/`` (``images``): the COCO images.

**Prompt.** The image, a newline, the question text, end of turn (Yo'Chameleon's ``model_vqa_loader.py``);
greedy, ``max_new_tokens`` 3 as in its POPE script.

**Parser** (``parser="original"``, POPE's ``evaluate.py`` / LLaVA's ``eval_pope.py``): keep the text before
the first ".", remove commas, split on single spaces; if one of the words is exactly ``No``, ``no`` or
``not`` the answer is no, otherwise yes. Its quirks are kept on purpose: "NO", "Not sure" or "no\\n" read as
yes, and an empty answer reads as yes. ``parser="lenient"``: the same on the lower-cased text split on any
whitespace, and an empty answer is a failure.

**Metrics** from the predictions (positive = yes): accuracy, precision TP/(TP+FP), recall TP/(TP+FN), F1
and yes_ratio (the share of *predicted* yes, not of labels), per category and pooled over every answer;
``mean_over_splits`` averages the per-category numbers. An undefined ratio (e.g. precision with no
predicted yes) is None. The headline ``value`` is the pooled F1 (``headline``). A question whose image
cannot be read or whose generation raised is failed and counted in ``n_failed``, never turned into a number.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unifybench.errors import DataError, UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.forgetting.base import ModelEvaluator, answer_text, data_root

CATEGORIES = ("adversarial", "popular", "random")
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


# ------------------------------------------------------------------------------------------- parsing

def parse_yes_no(text: str, parser: str = "original") -> str | None:
    """'yes' or 'no' (None: unusable, only with the lenient parser on an empty answer)."""
    if parser == "original":
        first = text.split(".")[0] if "." in text else text
        words = first.replace(",", "").split(" ")
        return "no" if any(w in ("No", "no", "not") for w in words) else "yes"
    if parser == "lenient":
        if not text.strip():
            return None
        first = text.split(".")[0]
        words = first.replace(",", " ").lower().split()
        return "no" if any(w in ("no", "not") for w in words) else "yes"
    raise UserError(f"pope: parser must be 'original' or 'lenient', got {parser!r}")


# ------------------------------------------------------------------------------------------- metrics

def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def pope_metrics(labels: list[str], preds: list[str]) -> dict[str, Any]:
    """accuracy, precision, recall, F1 (positive = yes) and yes_ratio of the predictions, plus the counts."""
    if len(labels) != len(preds):
        raise ValueError("one prediction per label")
    tp = sum(1 for y, p in zip(labels, preds) if y == "yes" and p == "yes")
    fp = sum(1 for y, p in zip(labels, preds) if y != "yes" and p == "yes")
    tn = sum(1 for y, p in zip(labels, preds) if y != "yes" and p != "yes")
    fn = sum(1 for y, p in zip(labels, preds) if y == "yes" and p != "yes")
    n = len(labels)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall > 0 else None)
    return {"accuracy": _ratio(tp + tn, n), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": _ratio(tp + fp, n), "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn}


# ---------------------------------------------------------------------------------------------- data

def _read_lines(path: Path) -> list[dict]:
    rows = []
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array is accepted too
        try:
            return list(json.loads(text))
        except json.JSONDecodeError as e:
            raise DataError(path, f"not JSON ({e.msg})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(path, f"line {n} is not JSON ({e.msg})") from None
    return rows


def _stem(text: str) -> str:
    return " ".join(text.split("\n")[0].split()).lower()


def load_pope(root: Path, questions: str, images: str, labels: str | None,
              categories: tuple[str, ...]) -> list[dict]:
    """Questions with `label` and `category`, in file order, matched to their label lines (see the doc)."""
    qfile = root / questions
    if not qfile.is_file():
        raise UserError(f"pope: no question file {qfile} (set questions=NAME)")
    qs = _read_lines(qfile)
    image_dir = root / images
    if not image_dir.is_dir():
        raise UserError(f"pope: no image folder {image_dir} (set images=FOLDER)")
    out = []
    for cat in categories:
        cat_qs = [q for q in qs if q.get("category") == cat]
        if not cat_qs:
            continue
        if all("label" in q for q in cat_qs):
            label_rows = cat_qs
        else:
            name = f"coco_pope_{cat}.json"
            lfile = root / labels / name if labels else root / name
            if not lfile.is_file() and not labels:
                found = sorted(root.rglob(name))
                lfile = found[0] if found else lfile
            if not lfile.is_file():
                raise UserError(f"pope: no label file {name} under {root} (set labels=FOLDER)")
            label_rows = _read_lines(lfile)
            if len(label_rows) != len(cat_qs):
                raise DataError(lfile, f"{len(label_rows)} labels for {len(cat_qs)} {cat} questions")
        for n, (q, lab) in enumerate(zip(cat_qs, label_rows)):
            if lab is not q and (lab.get("image") != q.get("image") or not _stem(q["text"]).startswith(_stem(lab["text"]))):
                raise DataError(qfile, f"{cat} question {n} ({q.get('question_id')}) does not match label line "
                                       f"{n} ({lab.get('question_id')}): the files are not in the same order")
            label = str(lab.get("label", "")).strip().lower()
            if label not in ("yes", "no"):
                raise DataError(qfile, f"{cat} item {n}: label {lab.get('label')!r} is not yes/no", "label")
            out.append({"id": f"{cat}/{q.get('question_id', n)}", "category": cat, "text": q["text"],
                        "image": str(image_dir / q["image"]), "label": label})
    if not out:
        raise UserError(f"pope: {qfile} has no question of the categories {', '.join(categories)}")
    return out


# ----------------------------------------------------------------------------------------- evaluator

def summarise(samples: list[dict], categories: tuple[str, ...], headline: str = "f1") -> dict[str, Any]:
    """Per-category and pooled metrics from samples with `category`, `label`, `pred` (None = failed)."""
    ok = [s for s in samples if s.get("pred") is not None]
    per = {}
    for cat in categories:
        rows = [s for s in ok if s["category"] == cat]
        if rows:
            per[cat] = pope_metrics([s["label"] for s in rows], [s["pred"] for s in rows])
    pooled = pope_metrics([s["label"] for s in ok], [s["pred"] for s in ok]) if ok else None
    mean = {}
    for m in METRICS:
        vals = [v[m] for v in per.values() if v[m] is not None]
        mean[m] = sum(vals) / len(vals) if vals else None
    return {"value": pooled[headline] if pooled else None, "n": len(ok), "n_failed": len(samples) - len(ok),
            "headline": headline, "pooled": pooled, "per_split": per, "mean_over_splits": mean}


class POPE(ModelEvaluator):
    name = "pope"
    version = "1"
    env_var = "UNIFYBENCH_POPE_ROOT"
    defaults = {**ModelEvaluator.defaults,
                "questions": "llava_pope_test.jsonl",   # the question file in the data folder
                "images": "val2014",                    # the COCO image folder in it
                "labels": None,                         # folder of coco_pope_<category>.json; None: the data folder
                "categories": ",".join(CATEGORIES),     # POPE splits scored, comma-separated
                "parser": "original",                   # yes/no reading: "original" (POPE) | "lenient"
                "max_new_tokens": 3,                    # replies, greedy
                "headline": "f1",                       # the pooled figure reported as the value
                }
    tiny_data = {"data": "bundled:", "questions": "mini_forgetting/pope/llava_pope_test.jsonl", "images": "mini/concept/test", "labels": "mini_forgetting/pope"}
    presets = {"default": {}}

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        parse_yes_no("", self.params["parser"])  # validates the name
        if self.params["headline"] not in METRICS:
            raise UserError(f"pope: headline must be one of {', '.join(METRICS)}")

    def categories(self) -> tuple[str, ...]:
        cats = self.params["categories"]
        cats = tuple(c.strip() for c in (cats.split(",") if isinstance(cats, str) else cats) if c.strip())
        bad = [c for c in cats if c not in CATEGORIES]
        if bad:
            raise UserError(f"pope: unknown category {bad[0]!r} (known: {', '.join(CATEGORIES)})")
        return cats

    def root(self) -> Path:
        return data_root(self.name, self.params["data"], self.env_var,
                         "the folder with llava_pope_test.jsonl, coco_pope_<split>.json and val2014/")

    def items(self) -> list[dict]:
        items = load_pope(self.root(), self.params["questions"], self.params["images"], self.params["labels"],
                          self.categories())
        limit = int(self.params["limit"] or 0)
        if limit:
            items = [i for c in self.categories() for i in [x for x in items if x["category"] == c][:limit]]
        return items

    def data_files(self) -> list[Path]:
        root = self.root()
        labels = root / self.params["labels"] if self.params["labels"] else root
        files = [root / self.params["questions"]] + sorted(labels.rglob("coco_pope_*.json"))
        return [f for f in files if f.is_file()]

    def report_metrics(self, result: dict) -> dict[str, float | None]:
        """The headline metric per split (as Yo'Chameleon's table: pop, rand, adv) and pooled."""
        h = self.params["headline"]
        out = {f"{h} {c}": (result["per_split"].get(c) or {}).get(h) for c in self.categories()}
        out[f"{h} pooled"] = result["value"]
        return out

    def evaluate_model(self, backbone, prefix_ids: list[int] | None, ctx: EvalContext) -> dict[str, Any]:
        from PIL import Image
        samples = []
        for item in self.items():
            row = {"id": item["id"], "category": item["category"], "label": item["label"],
                   "image": Path(item["image"]).name}
            try:
                with Image.open(item["image"]) as im:
                    image = im.convert("RGB")
            except OSError as e:
                samples.append({**row, "pred": None, "failed": f"cannot read image: {e}"})
                continue
            answer = answer_text(backbone, prefix_ids, [image, "\n" + item["text"]], self.params["max_new_tokens"])
            pred = parse_yes_no(answer, self.params["parser"])
            samples.append({**row, "answer": answer, "pred": pred,
                            **({"failed": "empty answer"} if pred is None else {})})
        result = summarise(samples, self.categories(), self.params["headline"])
        for s in samples:
            s["score"] = None if s["pred"] is None else float(s["pred"] == s["label"])
        result["samples"] = samples
        return result
