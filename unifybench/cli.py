"""`unifybench run|eval|items|validate|ls`: the command line. Imports nothing heavy at start-up."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unifybench.errors import UserError


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default after its help (when it has one); epilogs (the examples) kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.default is None or action.default is False or action.default == [] or action.default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


RUN_EXAMPLES = """examples:
  unifybench run --method yochameleon --preset tiny            # random tiny models, bundled mini data
  unifybench run --method yochameleon --preset tiny --evaluators mmlu,pope,mmbench
  unifybench run --method yochameleon --model chameleon=/ckpt/Anole-7b-v0.1-hf --model clip=/ckpt/ViT-L-14 \\
      --benchmark unifybench --data-root /data/unifybench --limit 5   # a quick partial run on real weights
  unifybench run --config examples/yochameleon_paper.yaml --seed 1
  unifybench run --method yochameleon --model chameleon=/ckpt/Anole-7b-v0.1-hf --check   # the plan; trains nothing
  unifybench ls presets yochameleon ; unifybench ls settings yochameleon
"""
EVAL_EXAMPLES = """examples:
  unifybench items --benchmark unifybench-mini > items.jsonl     # ids to answer
  unifybench eval --predictions answers.jsonl --predictions images.jsonl --evaluators recognition,bleu,clip_i
  unifybench eval --config examples/eval_predictions.yaml
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE.yaml",
                   help="YAML file whose keys are this command's flags (flags given here override it)")
    p.add_argument("--benchmark", default="unifybench-mini", help="benchmark name (see `unifybench ls benchmarks`)")
    p.add_argument("--data-root", help="folder holding the benchmark's files (not needed for unifybench-mini)")
    p.add_argument("--evaluators", help="comma-separated evaluator names (default: every local one that fits)")
    p.add_argument("--eval-preset", action="append", metavar="EVALUATOR=PRESET", default=[],
                   help="a named preset for one evaluator, e.g. recognition=unictokens")
    p.add_argument("--concepts", help="comma-separated concept names (default: all)")
    p.add_argument("--output-dir", type=Path, help="where results.json, samples/ and the table go")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (every unit's seed derives from it)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the models")
    p.add_argument("--model", action="append", metavar="ROLE=PATH", default=[],
                   help="local weights for a role, e.g. chameleon=/ckpt/Anole-7b-v0.1-hf or clip=/ckpt/ViT-L-14")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "unifybench",
                   help="tiny models, hashes and embedding/judge caches")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--judge-base-url", help="OpenAI-compatible server for LLM-judge metrics "
                   "(key from $UNIFYBENCH_JUDGE_API_KEY or $OPENAI_API_KEY)")
    p.add_argument("--judge-model", help="judge model name on that server")
    p.add_argument("--judge", choices=["on", "none"], default="on",
                   help="none: switch judge metrics off (reported as off, not as zero)")
    p.add_argument("--missing", choices=["wrong", "exclude"], default="wrong",
                   help="an item without a prediction: scored as a wrong answer (default) or left out of every "
                        "denominator (exclude); counted as n_missing either way")
    p.add_argument("--limit", type=int, default=0, metavar="N",
                   help="at most N items per task per concept (and generation prompts per concept): a quick "
                        "partial run, marked partial in results, tables and report; 0: everything")


SUBPARSERS: dict[str, argparse.ArgumentParser] = {}   # command -> its parser (--config sets its defaults)


def _preset_help(argv: list[str] | None) -> str:
    """`--preset`'s help: the real presets of the `--method` on the command line (or of every method when
    help is asked without one). Only computed when help is asked: it imports the method classes."""
    base = "method preset (default: paper; tiny: random tiny models + the mini benchmark)"
    argv = list(sys.argv[1:] if argv is None else argv)
    if not ({"-h", "--help"} & set(argv)):
        return base + "; see `unifybench ls presets METHOD`"
    from unifybench.registry import BASELINES, METHODS
    from unifybench.settings import method_presets
    if "--method" in argv[:-1]:
        names = [argv[argv.index("--method") + 1]]
    else:
        names = METHODS.names() + BASELINES.names()
    listed = "; ".join(f"{n}: {', '.join(method_presets(n)) or '?'}" for n in names)
    return f"{base}. Presets: {listed}"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from unifybench import __version__
    parser = argparse.ArgumentParser(prog="unifybench", formatter_class=HelpFormatter,
                                     description="UnifyBench: benchmark and evaluation suite for personalized multimodal models")
    parser.add_argument("--version", action="version", version=f"unifybench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    SUBPARSERS.clear()

    p = sub.add_parser("run", help="train a method for every concept, generate, score, write results",
                       formatter_class=HelpFormatter, epilog=RUN_EXAMPLES)
    SUBPARSERS["run"] = p
    p.add_argument("--method", help="method or baseline name (see `unifybench ls methods`); required, here or in --config")
    p.add_argument("--preset", help=_preset_help(argv))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[], help="override a method setting")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse finished concepts in --output-dir")
    p.add_argument("--check", "--dry-run", action="store_true", dest="check",
                   help="only locate every weight, data folder and service the run needs and print the plan "
                        "(stages, evaluators, weights, output folder, what resume reuses); nothing is trained "
                        "or written; exit 0 when all is present, 2 otherwise")
    p.add_argument("--log", action="append", default=[], choices=["tensorboard", "wandb"],
                   help="also log training losses to TensorBoard or Weights & Biases (offline); "
                        "concepts/<c>/train_log.jsonl is always written")
    _add_common(p)

    p = sub.add_parser("eval", help="score an existing predictions JSONL (any model's outputs)",
                       formatter_class=HelpFormatter, epilog=EVAL_EXAMPLES)
    SUBPARSERS["eval"] = p
    p.add_argument("--predictions", type=Path, action="append", default=[],
                   help="JSONL of {item_id, answer} lines and/or an image manifest of {item_id, path} "
                        "lines (ids from `unifybench items`); may be given several times; required, "
                        "here or in --config (flags add to the file's)")
    _add_common(p)

    p = sub.add_parser("items", help="print a benchmark's task items as JSONL", formatter_class=HelpFormatter)
    p.add_argument("--benchmark", default="unifybench-mini", help="benchmark name")
    p.add_argument("--data-root", help="the benchmark's data folder")
    p.add_argument("--concepts", help="comma-separated concept names (default: all)")
    p.add_argument("--task", help="only items of this task (rec, vqa, text_qa, mc, gen, knowledge_gen, caption)")

    p = sub.add_parser("validate", help="check a benchmark's files: schemas and every image",
                       formatter_class=HelpFormatter)
    p.add_argument("--benchmark", default="unifybench-mini", help="benchmark name")
    p.add_argument("--data-root", help="the benchmark's data folder")

    p = sub.add_parser("ls", help="list methods, baselines, benchmarks, evaluators; a method's presets or settings",
                       formatter_class=HelpFormatter,
                       epilog="examples:\n  unifybench ls methods\n  unifybench ls presets yochameleon\n"
                              "  unifybench ls settings yochameleon\n  unifybench ls settings recognition\n")
    p.add_argument("kind", choices=["methods", "baselines", "benchmarks", "evaluators", "presets", "settings"],
                   help="what to list")
    p.add_argument("name", nargs="?", metavar="METHOD|EVALUATOR",
                   help="for presets and settings: the method, baseline or evaluator")
    return parser


def options_from_args(command: str, args) -> dict:
    """The options of `command` (see unifybench.options) from parsed flags."""
    from unifybench.options import OPTIONS
    return {k: getattr(args, k) for k in OPTIONS[command] if hasattr(args, k)}


def cmd_run(args) -> int:
    from unifybench.options import build_spec
    from unifybench.runner import run
    spec = build_spec("run", options_from_args("run", args))
    if args.check:
        from unifybench.preflight import prepare
        plan = prepare(spec)
        sys.stdout.write(plan.text() + "\n")
        return 0 if plan.ready else 2
    doc = run(spec)
    if doc:  # other ranks of a torchrun launch return nothing; rank 0 reports
        _print_summary(doc, spec.output_dir)
    return 0


def cmd_eval(args) -> int:
    from unifybench.evaluate import evaluate_predictions
    from unifybench.options import build_spec
    options = options_from_args("eval", args)
    spec = build_spec("eval", options)
    doc = evaluate_predictions(spec, [Path(p) for p in spec.run_config["predictions"]])
    _print_summary(doc, spec.output_dir)
    return _coverage_status(doc)


def _coverage_status(doc: dict) -> int:
    """Warn on stderr for every evaluator with missing items; 1 when an evaluator scored nothing."""
    status = 0
    for bench, results in doc["results"].items():
        for name, r in results.items():
            if r.get("off"):
                continue
            n, failed, missing = r.get("n", 0), r.get("n_failed", 0), r.get("n_missing", 0)
            if missing:
                print(f"warning: {bench}/{name}: {missing} items have no prediction "
                      f"(n {n}, {failed} failed)", file=sys.stderr)
            # Under --missing wrong (the default) n counts the missing items as wrong answers.
            if n - (missing if r.get("missing") == "wrong" else 0) <= 0:
                print(f"error: {bench}/{name} scored 0 items ({failed} failed, {missing} missing)", file=sys.stderr)
                status = 1
    return status


def _print_summary(doc: dict, out: Path) -> None:
    """The table on stdout as Markdown, never wrapped (it can be piped into a file); messages on stderr."""
    from unifybench.report import run_table
    sys.stdout.write(run_table(doc) + "\n")
    sys.stdout.flush()
    print(f"wrote {out / 'results.json'}, {out / 'samples'}/, {out / 'leaderboard.md'}", file=sys.stderr)


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; when it names `--config FILE.yaml`, the file's keys become the command's defaults and
    the flags are parsed again over them (a flag given on the command line wins; `--set`, `--model`,
    `--eval-preset` and `--predictions` add to the file's entries, a later KEY winning)."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    from unifybench.options import OPTIONS, load_config_file
    command = args.command
    if path is None or command not in OPTIONS:   # reproduce reads its own --config (launcher keys)
        return args
    values = load_config_file(path, command)
    for key in ("set", "model", "eval_preset"):
        if isinstance(values.get(key), dict):
            values[key] = [f"{k}={v}" for k, v in values[key].items()]
    for key in ("evaluators", "concepts"):
        if isinstance(values.get(key), list):
            values[key] = ",".join(str(v) for v in values[key])
    for key in ("set", "model", "eval_preset", "predictions", "log"):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    SUBPARSERS[command].set_defaults(**values)
    return parser.parse_args(argv)


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
    from unifybench.data.schema import TASKS
    from unifybench.runspec import make_benchmark, select_concepts
    if args.task and args.task not in TASKS:
        raise UserError(f"--task: no task {args.task!r} (known: {', '.join(TASKS)})")
    bench = make_benchmark(args.benchmark, args.data_root)
    concepts = select_concepts(bench, _csv(args.concepts))
    n_by_task: dict[str, int] = {}
    for concept in concepts:
        for item in bench.items(concept):
            if args.task and item.task != args.task:
                continue
            n_by_task[item.task] = n_by_task.get(item.task, 0) + 1
            sys.stdout.write(json.dumps(item_record(item), ensure_ascii=False) + "\n")
    sys.stdout.flush()   # before the counts line: `items | head` ends here (see main)
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
    if args.kind in ("presets", "settings"):
        from unifybench import settings as st
        if not args.name:
            raise UserError(f"`unifybench ls {args.kind}` needs a method, baseline or evaluator name")
        if args.kind == "presets":
            for name, overrides in st.presets(args.name).items():
                what = ", ".join(f"{k}={st.show(v)}" for k, v in overrides.items()) or "the defaults"
                print(f"{name}\t{what}")
            return 0
        from unifybench.tables import text_table
        rows = [[s.name, s.type, st.show(s.default), s.allowed or "-", s.meaning or "-"] for s in st.settings(args.name)]
        sys.stdout.write(text_table(["setting", "type", "default", "allowed", "meaning"], rows))
        return 0
    if args.name:
        raise UserError(f"`unifybench ls {args.kind}` takes no name")
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
        p = sub.add_parser(name, help=help_text, formatter_class=HelpFormatter,
                           epilog=getattr(mod, "EXAMPLES", None))
        mod.configure(p)
        SUBPARSERS[name] = p
        COMMANDS[name] = mod.main


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (`unifybench ... | head`), so that a
    BrokenPipeError from elsewhere (a judge server's socket, a child's pipe) is never taken for it."""
    import select
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):   # no poll() (Windows), stdout without a descriptor
        return False


def main(argv: list[str] | None = None) -> int:
    """Every command, with one handling of user errors, Ctrl-C and a closed stdout reader."""
    try:
        parser = build_parser(argv)   # lists the registries: a plugin clashing with a built-in stops here
        _plugged_parsers(parser._subparsers._group_actions[0])
        args = apply_config_file(parser, argv)
        status = COMMANDS[args.command](args)
        sys.stdout.flush()   # a reader gone before the last write shows here, not at interpreter exit
        return status
    except UserError as e:
        print(f"unifybench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("unifybench: interrupted; finished concepts are kept, rerun to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not stdout_reader_gone():
            raise
        # `unifybench ... | head`: the reader has what it wanted. Later writes (and the flush at exit)
        # go to /dev/null instead of printing a traceback.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
