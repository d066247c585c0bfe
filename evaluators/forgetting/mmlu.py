"""MMLU through lm-eval, on the model object itself (the base backbone, or the backbone with concept tokens).

**Data.** Local files in the ``cais/mmlu`` layout: ``<root>/<subject>/<split>-*.parquet`` (the hub
snapshot), or ``<root>/<subject>/<split>.jsonl`` / ``.json`` (records with ``question``, ``subject``,
``choices`` (4 texts) and ``answer`` (0-3)). ``all/`` and ``auxiliary_train/`` are skipped. The folder comes
from the parameter ``data`` or ``UNIFYBENCH_MMLU_ROOT``. One lm-eval task per subject is written as YAML
(``dataset_path: json|parquet`` + ``dataset_kwargs.data_files``, datasets cache under the run's cache dir),
loaded with ``TaskManager(include_path=..., include_defaults=False)`` and run by ``simple_evaluate(...,
bootstrap_iters=0)`` with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set by the code.

**Prompt.** lm-eval's default MMLU task: the description "The following are multiple choice questions
(with answers) about <subject>.", the question, "A. ..".."D. ..", "Answer:", and the loglikelihood of
" A".." D"; ``acc`` is the argmax. ``num_fewshot`` (default 0, lm-eval's default) takes the first dev items.
The overall value is the accuracy over all questions (lm-eval's ``mmlu`` group, weighted by size);
``macro_accuracy`` is the mean over subjects.

**Model.** :class:`BackboneLM`, an ``lm_eval`` ``TemplateLM`` whose loglikelihoods come from the backbone's
``forward_hidden`` and ``logits`` (so concept tokens spliced into the embedding/head are in effect, and a
non-transformers backbone such as Show-o can plug in the same way). Chameleon is not an
``AutoModelForCausalLM`` and ``HFLM`` cannot put token ids in front of a prompt, so this path is used for any
backbone that exposes ``forward_hidden``. Sequences are ``<s> [prefix] context continuation``; with a prefix
(the personalized prompt, condition "prompt") the context starts with a space. The log-softmax runs over the
text vocabulary: image-code logits are masked, as Chameleon's own ``forward`` does (``mask_image_tokens``).
A backbone that is a plain transformers causal LM (``backbone.model`` + ``backbone.tokenizer``, no
``forward_hidden``) goes through ``HFLM(pretrained=model, tokenizer=tokenizer, backend="causal")``; there the
prompt condition prepends the decoded prefix text through lm-eval's ``system_instruction`` (lm-eval puts a
blank line after it), so its concept tokens must be tokens of that tokenizer.
"""
from __future__ import annotations

import contextlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from unifybench.errors import DataError, UserError
from unifybench.evaluators.base import EvalContext
from unifybench.evaluators.forgetting.base import ModelEvaluator, data_root, set_offline
from unifybench.models.contract import require

SPLITS = ("test", "validation", "dev")
SKIP = {"all", "auxiliary_train"}
LETTERS = ("A", "B", "C", "D")
TASK_PREFIX = "unifybench_mmlu_"
DOC_TO_TEXT = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
               "D. {{choices[3]}}\nAnswer:")


# ------------------------------------------------------------------------------------------- data

def find_subjects(root: Path) -> dict[str, dict[str, list[Path]]]:
    """subject -> split -> files, for the cais/mmlu layout under `root`."""
    out: dict[str, dict[str, list[Path]]] = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and p.name not in SKIP):
        splits: dict[str, list[Path]] = {}
        for f in sorted(folder.iterdir()):
            m = re.match(r"^(test|validation|dev)([-.].*)?\.(parquet|jsonl|json)$", f.name)
            if m and f.is_file():
                splits.setdefault(m.group(1), []).append(f)
        if splits:
            out[folder.name] = splits
    return out


def _builder(files: list[Path]) -> str:
    kinds = {"parquet" if f.suffix == ".parquet" else "json" for f in files}
    if len(kinds) != 1:
        raise DataError(files[0].parent, "mixes parquet and json files")
    return kinds.pop()


def task_config(subject: str, splits: dict[str, list[Path]], split: str, cache_dir: Path) -> dict:
    files = {s: [str(f) for f in fs] for s, fs in splits.items() if s in (split, "dev")}
    cfg = {
        "task": TASK_PREFIX + subject,
        "task_alias": subject,
        "dataset_path": _builder([Path(f) for fs in files.values() for f in fs]),
        "dataset_kwargs": {"data_files": files, "cache_dir": str(cache_dir)},
        "test_split": split,
        "output_type": "multiple_choice",
        "description": f"The following are multiple choice questions (with answers) about "
                       f"{subject.replace('_', ' ')}.\n\n",
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": list(LETTERS),
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    if "dev" in files and split != "dev":
        cfg.update(fewshot_split="dev", fewshot_config={"sampler": "first_n"})
    return cfg


# ------------------------------------------------------------------------------------------ the LM

def backbone_lm(backbone, prefix_ids: list[int] | None, batch_size: int = 8, mask_image_tokens: bool = True,
                prefix_separator: str = " "):
    """An lm-eval LM over `backbone` (see the module doc); built lazily so lm-eval is imported on use."""
    import torch
    from lm_eval.api.model import TemplateLM

    require(backbone, "has_hidden", what="MMLU through lm-eval")

    class BackboneLM(TemplateLM):
        backend = "causal"

        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.prefix_ids = list(prefix_ids or [])
            self.batch_size = int(batch_size)
            self.pad_id = backbone.pad_id
            if self.pad_id is None:
                self.pad_id = backbone.bos_id
            banned = []
            if mask_image_tokens:
                ids = backbone.image_token_ids
                if ids is not None:
                    banned = [int(i) for i in ids.tolist()] + [int(i) for i in (backbone.boi_id, backbone.eoi_id)
                                                               if i is not None]
            self.banned = torch.tensor(sorted(set(banned)), dtype=torch.long)

        @property
        def eot_token_id(self) -> int:
            return int(backbone.eos_id if backbone.eos_id is not None else backbone.bos_id)

        @property
        def prefix_token_id(self) -> int:
            return int(backbone.bos_id)

        @property
        def tokenizer_name(self) -> str:
            return type(backbone).__name__

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return list(backbone.encode_text(string))

        def _encode_pair(self, context: str, continuation: str):
            if self.prefix_ids and prefix_separator and not context.startswith(prefix_separator):
                context = prefix_separator + context
            return super()._encode_pair(context, continuation)

        def full_ids(self, context_enc: list[int], continuation_enc: list[int]) -> list[int]:
            head = [] if context_enc[:1] == [backbone.bos_id] else [backbone.bos_id]
            return head + self.prefix_ids + list(context_enc) + list(continuation_enc)

        @torch.no_grad()
        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            results: list[tuple[float, bool] | None] = [None] * len(requests)
            order = sorted(range(len(requests)), key=lambda i: -len(self.full_ids(requests[i][1], requests[i][2])))
            device = backbone.device
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                seqs = [self.full_ids(requests[i][1], requests[i][2])[:-1] for i in chunk]
                conts = [list(requests[i][2]) for i in chunk]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for r, s in enumerate(seqs):
                    ids[r, :len(s)] = torch.tensor(s)
                    mask[r, :len(s)] = 1
                hidden, _ = backbone.forward_hidden(ids.to(device), attention_mask=mask.to(device))
                for r, (s, cont) in enumerate(zip(seqs, conts)):
                    n = len(cont)
                    logits = backbone.logits(hidden[r, len(s) - n:len(s)]).float()
                    if len(self.banned):
                        logits[:, self.banned.to(logits.device)] = float("-inf")
                    logp = torch.log_softmax(logits, dim=-1)
                    target = torch.tensor(cont, device=logp.device)
                    total = float(logp.gather(-1, target[:, None]).sum())
                    greedy = bool((logp.argmax(-1) == target).all())
                    results[chunk[r]] = (total, greedy)
                    if self.cache_hook is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[chunk[r]][0], (total, greedy))
            return results  # type: ignore[return-value]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("loglikelihood_rolling is not needed for MMLU")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("generate_until is not needed for MMLU")

    return BackboneLM()


def make_lm(backbone, prefix_ids: list[int] | None, params: dict) -> tuple[Any, str | None]:
    """(lm, system_instruction): BackboneLM for backbones with forward_hidden, HFLM for causal LMs."""
    if backbone.has_hidden:
        return backbone_lm(backbone, prefix_ids, params["batch_size"], params["mask_image_tokens"]), None
    if backbone.model is None or backbone.tokenizer is None:
        raise UserError(f"MMLU through lm-eval (HFLM) needs a backbone with a model and a tokenizer; "
                        f"{type(backbone).__name__} has none (no adapter for this model yet)")
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=backbone.model, tokenizer=backbone.tokenizer, backend="causal",
              batch_size=params["batch_size"])
    instruction = backbone.tokenizer.decode(prefix_ids) if prefix_ids else None
    return lm, instruction


@contextlib.contextmanager
def _quiet_lm_eval():
    """lm-eval's and datasets' logs and datasets' bars off for the call (the run has its own progress display).

    Also skips lm-eval's environment report (torch's collect_env and `git describe`: ~12 s of subprocesses per
    call, and a "fatal: not a git repository" line outside a repository); results.json records the
    environment once for the whole run.
    """
    import logging

    import datasets
    from lm_eval import evaluator as lm_evaluator
    saved = {n: getattr(lm_evaluator, n) for n in ("add_env_info", "get_git_commit_hash") if hasattr(lm_evaluator, n)}
    if "add_env_info" in saved:
        lm_evaluator.add_env_info = lambda storage: None
    if "get_git_commit_hash" in saved:
        lm_evaluator.get_git_commit_hash = lambda: None
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval", "datasets")]
    levels = [lg.level for lg in loggers]
    bars = datasets.is_progress_bar_enabled()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        if bars:
            datasets.enable_progress_bars()
        for n, f in saved.items():
            setattr(lm_evaluator, n, f)



# ----------------------------------------------------------------------------------------- evaluator

class MMLU(ModelEvaluator):
    name = "mmlu"
    version = "1"
    env_var = "UNIFYBENCH_MMLU_ROOT"
    defaults = {**ModelEvaluator.defaults,
                "subjects": None,                    # comma-separated MMLU subjects; None: all in the data
                "split": "test",                     # the split scored
                "num_fewshot": 0,                    # dev examples in front of each question (lm-eval's default 0)
                "batch_size": 8,                     # lm-eval requests per forward pass
                "mask_image_tokens": True,           # image-code logits masked, as Chameleon's own forward does
                }
    tiny_data = {"data": "bundled:mini_forgetting/mmlu"}
    presets = {"default": {}}

    def __init__(self, preset: str | None = None, **params: Any):
        super().__init__(preset, **params)
        if self.params["split"] not in SPLITS:
            raise UserError(f"mmlu: split must be one of {', '.join(SPLITS)}, got {self.params['split']!r}")

    def root(self) -> Path:
        return data_root(self.name, self.params["data"], self.env_var,
                         "a folder in the cais/mmlu layout: <subject>/test-*.parquet or <subject>/test.jsonl")

    def subjects(self) -> dict[str, dict[str, list[Path]]]:
        root = self.root()
        found = find_subjects(root)
        wanted = self.params["subjects"]
        if isinstance(wanted, str):
            wanted = [s.strip() for s in wanted.split(",") if s.strip()]
        if wanted:
            missing = [s for s in wanted if s not in found]
            if missing:
                raise UserError(f"mmlu: no subject {missing[0]!r} under {root} (found: {', '.join(found) or 'none'})")
            found = {s: found[s] for s in wanted}
        found = {s: v for s, v in found.items() if self.params["split"] in v}
        if not found:
            raise UserError(f"mmlu: no {self.params['split']} files in the cais/mmlu layout under {root}")
        return found

    def data_files(self) -> list[Path]:
        return [f for splits in self.subjects().values() for fs in splits.values() for f in fs]

    def report_metrics(self, result: dict) -> dict[str, float | None]:
        return {"accuracy": result["value"]}

    def evaluate_model(self, backbone, prefix_ids: list[int] | None, ctx: EvalContext) -> dict[str, Any]:
        set_offline()
        import lm_eval
        from lm_eval.tasks import TaskManager

        subjects = self.subjects()
        cache = Path(ctx.cache_dir or ctx.run_dir / ".cache") / "datasets"
        cache.mkdir(parents=True, exist_ok=True)
        lm, instruction = make_lm(backbone, prefix_ids, self.params)
        limit = int(self.params["limit"]) or None
        with tempfile.TemporaryDirectory(prefix="mmlu-tasks-", dir=cache) as folder:
            for subject, splits in subjects.items():
                cfg = task_config(subject, splits, self.params["split"], cache)
                # JSON is YAML: no quoting pitfalls in the prompt templates.
                (Path(folder) / f"{TASK_PREFIX}{subject}.yaml").write_text(json.dumps(cfg, indent=1))
            with _quiet_lm_eval():
                manager = TaskManager(include_path=folder, include_defaults=False)
                out = lm_eval.simple_evaluate(
                    model=lm, tasks=[TASK_PREFIX + s for s in subjects], num_fewshot=self.params["num_fewshot"],
                    task_manager=manager, bootstrap_iters=0, log_samples=True, limit=limit,
                    system_instruction=instruction, random_seed=None, numpy_random_seed=None,
                    torch_random_seed=None, fewshot_random_seed=ctx.seed)
        return self._summarise(out, subjects)

    def _summarise(self, out: dict, subjects: dict) -> dict[str, Any]:
        per_subject, samples = {}, []
        n_total = correct = 0.0
        for subject in subjects:
            task = TASK_PREFIX + subject
            res = out["results"][task]
            n = int(out["n-samples"][task]["effective"])
            acc = float(res["acc,none"])
            per_subject[subject] = {"accuracy": acc, "n": n}
            n_total += n
            correct += acc * n
            for s in out["samples"][task]:
                lls = [float(r[0]) for r in s["filtered_resps"]]
                samples.append({"id": f"{subject}/{s['doc_id']}", "subject": subject, "doc_id": s["doc_id"],
                                "target": int(s["target"]), "loglikelihoods": lls,
                                "pred": int(max(range(len(lls)), key=lambda i: lls[i])), "score": float(s["acc"])})
        accs = [v["accuracy"] for v in per_subject.values()]
        return {"value": correct / n_total if n_total else None, "n": int(n_total), "n_failed": 0,
                "accuracy": correct / n_total if n_total else None,
                "macro_accuracy": sum(accs) / len(accs) if accs else None,
                "per_subject": per_subject, "num_fewshot": self.params["num_fewshot"],
                "lm_eval_version": out.get("versions") and _lm_eval_version(), "samples": samples}


def _lm_eval_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None
