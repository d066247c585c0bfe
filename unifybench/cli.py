"""`unifybench run|eval|items|validate|ls`: the command line. Imports nothing heavy at start-up."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unifybench.errors import UserError


def _key_values(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", default="unifybench-mini", help="benchmark name (see `unifybench ls benchmarks`)")
    p.add_argument("--data-root", help="folder holding the benchmark's files (not needed for unifybench-mini)")
    p.add_argument("--evaluators", help="comma-separated evaluator names (default: every local one that fits)")
    p.add_argument("--eval-preset", action="append", metavar="EVALUATOR=PRESET", default=[],
                   help="a named preset for one evaluator, e.g. recognition=unictokens")
    p.add_argument("--concepts", help="comma-separated concept names (default: all)")
    p.add_argument("--output-dir", type=Path, help="where results.json, samples/ and the table go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--model", action="append", metavar="ROLE=PATH", default=[],
                   help="local weights for a role, e.g. chameleon=/ckpt/Anole-7b-v0.1-hf or clip=/ckpt/ViT-L-14")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "unifybench")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--judge-base-url", help="OpenAI-compatible server for LLM-judge metrics "
                   "(key from $UNIFYBENCH_JUDGE_API_KEY or $OPENAI_API_KEY)")
    p.add_argument("--judge-model", help="judge model name on that server")
    p.add_argument("--judge", choices=["on", "none"], default="on",
                   help="none: switch judge metrics off (reported as off, not as zero)")
    p.add_argument("--missing", choices=["wrong", "exclude"], default="wrong",
                   help="an item without a prediction: scored as a wrong answer (default) or left out of every "
                        "denominator (exclude); counted as n_missing either way")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unifybench", description="UnifyBench: benchmark and evaluation suite for personalized multimodal models")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train a method for every concept, generate, score, write results")
    p.add_argument("--method", required=True, help="method or baseline name (see `unifybench ls methods`)")
    p.add_argument("--preset", help="method preset: paper (default) or tiny (random tiny models + mini benchmark)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[], help="override a method setting")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse finished concepts in --output-dir (default on)")
    _add_common(p)

    p = sub.add_parser("eval", help="score an existing predictions JSONL (any model's outputs)")
    p.add_argument("--predictions", type=Path, required=True, action="append",
                   help="JSONL of {item_id, answer} lines and/or an image manifest of {item_id, path} "
                        "lines (ids from `unifybench items`); may be given several times")
    _add_common(p)

    p = sub.add_parser("items", help="print a benchmark's task items as JSONL")
    p.add_argument("--benchmark", default="unifybench-mini")
    p.add_argument("--data-root")
    p.add_argument("--concepts")
    p.add_argument("--task", help="only items of this task (rec, vqa, text_qa, mc, gen, knowledge_gen, caption)")

    p = sub.add_parser("validate", help="check a benchmark's files: schemas and every image")
    p.add_argument("--benchmark", default="unifybench-mini")
    p.add_argument("--data-root")

    p = sub.add_parser("ls", help="list registered methods, baselines, benchmarks or evaluators")
    p.add_argument("kind", choices=["methods", "baselines", "benchmarks", "evaluators"])
    return parser


def _spec_from_args(args, method: str):
    from unifybench.runspec import RunSpec
    preset = getattr(args, "preset", None)
    tiny = preset == "tiny"
    out = args.output_dir or Path("runs") / f"{method}-{args.benchmark}-{preset or 'paper'}"
    return RunSpec(method=method, benchmark=args.benchmark, data_root=args.data_root,
                   evaluators=_csv(args.evaluators), evaluator_presets=_key_values(args.eval_preset, "--eval-preset"),
                   preset=preset, overrides=_key_values(getattr(args, "set", []), "--set"), output_dir=out,
                   seed=args.seed, device=args.device, dtype=args.dtype, concepts=_csv(args.concepts),
                   models=_key_values(args.model, "--model"), resume=getattr(args, "resume", True),
                   cache_dir=args.cache_dir, tiny=tiny, progress=False if args.no_progress else None,
                   judge_base_url=args.judge_base_url, judge_model=args.judge_model,
                   judge_enabled=args.judge != "none", missing=args.missing)


def cmd_run(args) -> int:
    from unifybench.runner import run
    spec = _spec_from_args(args, args.method)
    doc = run(spec)
    if doc:  # other ranks of a torchrun launch return nothing; rank 0 reports
        _print_summary(doc, spec.output_dir)
    return 0


def cmd_eval(args) -> int:
    from unifybench.evaluate import evaluate_predictions
    spec = _spec_from_args(args, "predictions")
    if args.output_dir is None:
        from dataclasses import replace
        spec = replace(spec, output_dir=Path("runs") / f"eval-{args.benchmark}")
    doc = evaluate_predictions(spec, args.predictions)
    _print_summary(doc, spec.output_dir)
    return 0


def _print_summary(doc: dict, out: Path) -> None:
    from unifybench.progress import console
    from unifybench.report import run_table
    console.print(run_table(doc), markup=False, highlight=False)
    console.print(f"wrote {out / 'results.json'}, {out / 'samples'}/, {out / 'leaderboard.md'}", markup=False)


def item_record(item) -> dict:
    """One `unifybench items` line: id, concept, task, question, options, reference, images (+ extras).

    `reference` is the answer (vqa, text_qa), the correct letter (mc), the label (rec: true/false) or the
    facts (knowledge_gen); `images` the query image paths; `n_images` (generation), `facts` and `meta`
    follow where the item has them. Every line has the seven first keys (null or [] when not applicable).
    """
    reference = (item.answer if item.answer is not None else item.label if item.label is not None
                 else list(item.facts) if item.facts else None)
    d = {"id": item.id, "concept": item.concept, "task": item.task, "question": item.prompt,
         "options": dict(item.options) if item.options else None, "reference": reference,
         "images": [str(item.image)] if item.image is not None else []}
    from unifybench.data.schema import IMAGE_TASKS
    if item.task in IMAGE_TASKS:
        d["n_images"] = item.n_images
    if item.facts:
        d["facts"] = list(item.facts)
    if item.meta:
        d["meta"] = dict(item.meta)
    return d


def _counts_line(bench, concepts, n_by_task: dict[str, int]) -> str:
    train = len({p for c in concepts for p in c.train_images})
    test = len({p for c in concepts for p in c.test_images})
    tasks = ", ".join(f"{t} {n}" for t, n in n_by_task.items()) or "none"
    return (f"{bench.name}: {len(concepts)} concepts, {train} train / {test} test images; "
            f"{sum(n_by_task.values())} items ({tasks})")


def cmd_items(args) -> int:
    from unifybench.runspec import make_benchmark, select_concepts
    bench = make_benchmark(args.benchmark, args.data_root)
    concepts = select_concepts(bench, _csv(args.concepts))
    n_by_task: dict[str, int] = {}
    try:
        for concept in concepts:
            for item in bench.items(concept):
                if args.task and item.task != args.task:
                    continue
                n_by_task[item.task] = n_by_task.get(item.task, 0) + 1
                sys.stdout.write(json.dumps(item_record(item), ensure_ascii=False) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:            # `unifybench items | head`: the reader has what it wanted
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(_counts_line(bench, concepts, n_by_task), file=sys.stderr)
    return 0


def cmd_validate(args) -> int:
    from unifybench.runspec import make_benchmark
    bench = make_benchmark(args.benchmark, args.data_root)
    # validate() first: it lists every problem, where loading the items would stop at the first one.
    problems = bench.validate()
    for line in bench.warnings():
        print(f"warning: {line}", file=sys.stderr)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{bench.name}: {len(problems)} problems")
        return 2
    concepts = bench.concepts()
    n_by_task: dict[str, int] = {}
    for c in concepts:
        for item in bench.items(c):
            n_by_task[item.task] = n_by_task.get(item.task, 0) + 1
    print(_counts_line(bench, concepts, n_by_task) + ", 0 problems")
    return 0


def cmd_ls(args) -> int:
    from unifybench.registry import REGISTRIES
    registry = REGISTRIES[args.kind]
    for entry in registry.entries():
        print(f"{entry.name}\t{registry.description(entry.name)}")
    return 0


COMMANDS = {"run": cmd_run, "eval": cmd_eval, "items": cmd_items, "validate": cmd_validate, "ls": cmd_ls}

# Further commands live in their own modules, each with `configure(parser)` and `main(args) -> int`;
# those modules must import nothing heavy at the top (the parser is built for every invocation).
PLUGGED = {
    "table": ("unifybench.commands.table", "render paper-style tables from results files"),
    "regress": ("unifybench.commands.regress", "compare results with a golden file; exit 1 on drift"),
    "compare": ("unifybench.commands.compare", "paired differences between two runs over shared concepts"),
    "report": ("unifybench.commands.report", "a static HTML report with tables and image grids"),
    "reproduce": ("unifybench.commands.reproduce", "plan, run (here or on Slurm) and render a whole paper table"),
}


def _plugged_parsers(sub) -> None:
    import importlib
    for name, (module, help_text) in PLUGGED.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # not built yet
        mod.configure(sub.add_parser(name, help=help_text))
        COMMANDS[name] = mod.main


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _plugged_parsers(parser._subparsers._group_actions[0])
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"unifybench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("unifybench: interrupted; finished concepts are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
