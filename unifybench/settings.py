"""What `unifybench ls settings|presets NAME` prints: every setting of a method, baseline or evaluator with
its type, default, allowed range and one-line meaning, and the named presets; and the range check every
method config passes (`check_ranges`), so `--set epochs=-1` or `lr=nan` is refused before any work.

A numeric setting's range is declared on its config field (`epochs: int = positive(16)`, `top_p: float =
within(1.0, 0, 1, low_open=True)`); a field that declares none takes `DEFAULT_RANGE`: finite and >= 0.

The meaning is the comment written next to the setting in the source (a config dataclass field
``lr: float = 1e-3   # learning rate``, or an evaluator ``defaults`` entry ``"parser": "strict",  # ...``):
the one place it is declared. Read with `tokenize`, so a ``#`` inside a string is never a comment; a line
holding several settings gives none of them a meaning.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import math
import tokenize
from dataclasses import dataclass
from typing import Any

from unifybench.errors import UserError


@dataclass
class Setting:
    name: str
    type: str
    default: Any
    meaning: str
    allowed: str = ""              # the range of a numeric setting ("(0,inf)", "[0,1]"); "" for the others


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take (always finite): low <= v (< when low_open), v <= high (<)."""

    low: float | None = 0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def interval(self) -> str:
        """Compact interval notation for `ls settings`: "(0,inf)", "[0,1]"."""
        low = "(-inf" if self.low is None else ("(" if self.low_open else "[") + f"{self.low:g}"
        high = "inf)" if self.high is None else f"{self.high:g}" + (")" if self.high_open else "]")
        return f"{low},{high}"

    def text(self) -> str:
        low = None if self.low is None else ("> " if self.low_open else ">= ") + f"{self.low:g}"
        high = None if self.high is None else ("< " if self.high_open else "<= ") + f"{self.high:g}"
        return " and ".join(p for p in (low, high) if p) or "finite"


DEFAULT_RANGE = Range(0)           # a numeric setting that declares no range: finite and >= 0


def within(default: Any, low: float | None = 0, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Any:
    """A config field whose value must lie in the given range (declared where the setting is)."""
    return dataclasses.field(default=default, metadata={"range": Range(low, high, low_open, high_open)})


def positive(default: Any) -> Any:
    """A config field that must be > 0 (an integer >= 1): counts of epochs, tokens, steps; learning rates."""
    return within(default, 0, low_open=True)


def fraction(default: Any) -> Any:
    """A config field in [0, 1]: probabilities, dropout rates, fractions of a schedule."""
    return within(default, 0, 1)


def _numeric(annotation: Any) -> str | None:
    """"int" / "float" for a numeric field's annotation (a string under `from __future__ import annotations`)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return kind if kind in ("int", "float") else None


def field_range(f: dataclasses.Field) -> Range | None:
    """The range of a numeric config field (its declared one, else DEFAULT_RANGE); None for the others."""
    return f.metadata.get("range", DEFAULT_RANGE) if _numeric(f.type) else None


def check_ranges(config: Any, owner: str) -> None:
    """A one-line UserError naming the first numeric setting of `config` outside its range."""
    for f in dataclasses.fields(config):
        allowed, value = field_range(f), getattr(config, f.name)
        if allowed is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not allowed.holds(value):
            kind = "an integer" if _numeric(f.type) == "int" else "a finite number"
            raise UserError(f"setting {f.name!r} of {owner!r} must be {kind} {allowed.text()}, got {value!r}")


def source_comments(cls: type) -> dict[str, str]:
    """name -> the comment on its line, for `name: T = ...` fields and `"name": value,` dict entries of
    `cls` and its bases (a subclass's comment wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        out.update(_comments(src))
    return out


def _comments(src: str) -> dict[str, str]:
    lines: dict[int, list[tokenize.TokenInfo]] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(inspect.cleandoc(src) if src[:1].isspace() else src).readline):
            lines.setdefault(tok.start[0], []).append(tok)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return {}
    out = {}
    for toks in lines.values():
        comment = next((t.string for t in toks if t.type == tokenize.COMMENT), None)
        if not comment:
            continue
        sig = [t for t in toks if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                                                  tokenize.INDENT, tokenize.DEDENT)]
        names = []
        if len(sig) >= 2 and sig[0].type == tokenize.NAME and sig[1].string == ":":
            names.append(sig[0].string)                                     # a dataclass field
        else:
            for a, b in zip(sig, sig[1:]):
                if a.type == tokenize.STRING and b.string == ":":
                    try:
                        names.append(str(ast.literal_eval(a.string)))      # a dict entry
                    except (ValueError, SyntaxError):
                        pass
        if len(names) == 1:
            out[names[0]] = comment.lstrip("#").strip()
    return out


def _type_name(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def method_settings(cls: type) -> list[Setting]:
    if cls.config_cls is None:
        return []
    comments = source_comments(cls.config_cls)
    out = []
    for f in dataclasses.fields(cls.config_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        allowed = field_range(f)
        out.append(Setting(f.name, _type_name(f.type), default, f.metadata.get("help") or comments.get(f.name, ""),
                           allowed.interval() if allowed else ""))
    return out


def evaluator_settings(cls: type) -> list[Setting]:
    comments = source_comments(cls)
    merged = dict(cls.defaults)
    merged.update(cls.presets.get("default", {}))
    return [Setting(k, type(v).__name__ if v is not None else "str | None", v, comments.get(k, ""))
            for k, v in merged.items()]


def lookup(name: str) -> tuple[str, type]:
    """("method" | "evaluator", class) for a registered name; one line naming the lists otherwise."""
    from unifybench.registry import BASELINES, EVALUATORS, METHODS
    for kind, reg in (("method", METHODS), ("method", BASELINES), ("evaluator", EVALUATORS)):
        if name in reg:
            return kind, reg.get(name)
    raise UserError(f"no method, baseline or evaluator named {name!r} "
                    f"(see `unifybench ls methods`, `ls baselines`, `ls evaluators`)")


def settings(name: str) -> list[Setting]:
    kind, cls = lookup(name)
    return method_settings(cls) if kind == "method" else evaluator_settings(cls)


def presets(name: str) -> dict[str, dict[str, Any]]:
    """Preset name -> its overrides of the defaults; a method's "paper" preset is the defaults themselves."""
    kind, cls = lookup(name)
    if kind == "method":
        return {"paper": {}, **{k: dict(v) for k, v in cls.presets.items() if k != "paper"}}
    return {k: dict(v) for k, v in (cls.presets or {"default": {}}).items()}


def method_presets(name: str) -> list[str]:
    """The preset names `--preset` accepts for a method or baseline (empty when the name is unknown)."""
    try:
        kind, cls = lookup(name)
    except UserError:
        return []
    return list(presets(name)) if kind == "method" else []


def show(value: Any) -> str:
    return "None" if value is None else repr(value) if isinstance(value, str) else str(value)
