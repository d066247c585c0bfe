"""One way from what a user gives (CLI flags, a `--config` YAML file, keyword arguments of `unifybench.run`
/ `unifybench.evaluate`) to a :class:`unifybench.runner.RunSpec`.

The three front ends share the option names (a flag's dest: ``--eval-preset`` is ``eval_preset``), the
defaults, the checks and everything derived from them (the tiny flag, the output folder), so one run
described three ways is one run. :func:`merged_options` is what results.json records as ``run_config``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from unifybench.errors import UserError

# option -> default, for `run`; `eval` takes the common ones and `predictions`
COMMON: dict[str, Any] = {
    "benchmark": "unifybench-mini", "data_root": None, "evaluators": None, "eval_preset": {}, "concepts": None,
    "output_dir": None, "seed": 0, "device": "cpu", "dtype": "float32", "model": {},
    "cache_dir": str(Path.home() / ".cache" / "unifybench"), "no_progress": False, "judge_base_url": None,
    "judge_model": None, "judge": "on", "limit": 0, "missing": "wrong",
}
RUN: dict[str, Any] = {"method": None, "preset": None, "set": {}, "resume": True, "log": [], **COMMON}
EVAL: dict[str, Any] = {"predictions": [], **COMMON}
OPTIONS = {"run": RUN, "eval": EVAL}
DTYPES = ("float32", "bfloat16", "float16")
LOGGERS = ("tensorboard", "wandb")
PATH_OPTIONS = ("output_dir", "cache_dir")


def _key_values(value: Any, name: str) -> dict[str, Any]:
    """`--set`, `--model`, `--eval-preset`: a mapping, or KEY=VALUE strings (from flags or a YAML list)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, str):
        value = [value]
    out = {}
    for pair in value:
        key, sep, val = str(pair).partition("=")
        if not sep or not key.strip():
            raise UserError(f"--{name.replace('_', '-')} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = val.strip()
    return out


def _names(value: Any, name: str) -> list[str] | None:
    """`--evaluators`, `--concepts`, `--log`: comma-separated text or a list; None when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{name} must be a list of names or comma-separated text, not {value!r}")
    out = [str(v).strip() for v in value if str(v).strip()]
    return out or None


def normalise(command: str, options: dict[str, Any]) -> dict[str, Any]:
    """The full option set of `command`: defaults filled in, names checked, values in one canonical form
    (lists, dicts, plain strings) that YAML, JSON and the CLI all give the same way."""
    known = OPTIONS[command]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r} for {command} (known: {', '.join(sorted(known))})")
    o = {**known, **{k: v for k, v in options.items()}}
    for key in ("eval_preset", "model", "set"):
        if key in o:
            o[key] = _key_values(o[key], key)
    for key in ("evaluators", "concepts"):
        o[key] = _names(o[key], key)
    if "log" in o:
        o["log"] = _names(o["log"], "log") or []
        bad = [x for x in o["log"] if x not in LOGGERS]
        if bad:
            raise UserError(f"--log {bad[0]!r} is not one of {', '.join(LOGGERS)}")
    if "predictions" in o:
        preds = o["predictions"]
        o["predictions"] = [str(p) for p in ([preds] if isinstance(preds, (str, Path)) else preds or [])]
    for key in PATH_OPTIONS + ("data_root",):
        if o.get(key) is not None:
            o[key] = str(o[key])
    from unifybench.devices import check_device_name
    from unifybench.models.weights import check_roles
    o["device"] = check_device_name(str(o["device"]))
    check_roles(o["model"])
    if o["dtype"] not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, not {o['dtype']!r}")
    if o["missing"] not in ("wrong", "exclude"):
        raise UserError(f"missing must be 'wrong' or 'exclude', not {o['missing']!r}")
    if o["judge"] not in ("on", "none"):
        raise UserError(f"judge must be 'on' or 'none', not {o['judge']!r}")
    for key in ("seed", "limit"):
        if isinstance(o[key], bool) or not isinstance(o[key], int):
            try:
                o[key] = int(str(o[key]))
            except ValueError:
                raise UserError(f"{key} must be an integer, not {o[key]!r}") from None
    if o["limit"] < 0:
        raise UserError(f"limit must be 0 (everything) or a positive number of items, not {o['limit']}")
    if command == "run" and not o["method"]:
        raise UserError("run needs a method (--method NAME, or `method:` in the config file)")
    if command == "eval" and not o["predictions"]:
        raise UserError("eval needs predictions (--predictions FILE, or `predictions:` in the config file)")
    return o


def method_label(method: Any) -> str:
    """A method's name for folders and messages: the registered name, or the object's `name`."""
    return method if isinstance(method, str) else (getattr(method, "name", "") or type(method).__name__)


def default_output_dir(command: str, o: dict[str, Any]) -> Path:
    if command == "eval":
        return Path("runs") / f"eval-{o['benchmark']}"
    return Path("runs") / f"{method_label(o['method'])}-{o['benchmark']}-{o['preset'] or 'paper'}"


def recorded(o: dict[str, Any]) -> dict[str, Any]:
    """The options as results.json records them (`run_config`): JSON values only; a method object by name."""
    out = dict(o)
    if "method" in out and not isinstance(out["method"], str):
        m = out["method"]
        out["method"] = {"object": f"{type(m).__module__}.{getattr(m, '__qualname__', type(m).__qualname__)}",
                         "name": method_label(m)}
    return out


def build_spec(command: str, options: dict[str, Any]):
    """The RunSpec for `command` ("run" | "eval") from user options (any front end)."""
    from unifybench.runspec import RunSpec
    from unifybench.devices import check_device
    o = normalise(command, options)
    check_device(o["device"])     # before any work: the GPU a run names must be here
    out = Path(o["output_dir"]) if o["output_dir"] else default_output_dir(command, o)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file, not a folder")
    return RunSpec(method=o.get("method") or "predictions", benchmark=o["benchmark"], data_root=o["data_root"],
                   evaluators=o["evaluators"], evaluator_presets=dict(o["eval_preset"]), preset=o.get("preset"),
                   overrides=dict(o.get("set") or {}), output_dir=out, seed=o["seed"], device=o["device"],
                   dtype=o["dtype"], concepts=o["concepts"], models=dict(o["model"]), resume=o.get("resume", True),
                   cache_dir=Path(o["cache_dir"]), tiny=is_tiny(o.get("preset")),
                   progress=False if o["no_progress"] else None, judge_base_url=o["judge_base_url"],
                   judge_model=o["judge_model"], judge_enabled=o["judge"] != "none", limit=o["limit"],
                   loggers=list(o.get("log") or []), missing=o["missing"], run_config=recorded(o))


def is_tiny(preset: str | None) -> bool:
    """The one rule (kept in unifybench.runspec): the `tiny` preset means tiny models and mini data."""
    from unifybench.runspec import is_tiny as rule
    return rule(preset)


def load_config_file(path: str | Path, command: str) -> dict[str, Any]:
    """A `--config` YAML file: a mapping whose keys are `command`'s options (flag names, `-` or `_`)."""
    import yaml
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config file {p}: cannot read ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"config file {p}: not YAML{where}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"config file {p}: expected a mapping of option: value, got {type(doc).__name__}")
    out = {str(k).lstrip("-").replace("-", "_"): v for k, v in doc.items()}
    known = OPTIONS[command]
    unknown = sorted(set(out) - set(known))
    if unknown:
        raise UserError(f"config file {p}: unknown key {unknown[0]!r} for {command} "
                        f"(known: {', '.join(sorted(known))})")
    return out
