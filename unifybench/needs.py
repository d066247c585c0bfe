"""What a run will need, declared before any work starts: the weights of a role, a data folder, a service.

Methods (`Method.needs`) and evaluators (`Evaluator.needs`) declare each thing a stage of theirs will
load or call; the run's preflight (`unifybench.preflight`) locates every one *without building, loading or
downloading anything* and reports all that are missing in one line, each with the flag or environment
variable that supplies it. A need's `locate` is the same code path the stage itself takes later (for
weights: `unifybench.models.weights.resolve`), so the check and the run cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from unifybench.errors import UserError

KINDS = ("weights", "data", "service")


@dataclass(frozen=True)
class Need:
    """One thing a stage needs: `what` names it and who needs it ("evaluator clip_i: clip weights");
    `locate()` returns where it was found (a path, the tiny random model, a server URL) or raises the
    one-line UserError that says what to pass."""

    kind: str
    what: str
    locate: Callable[[], str]
    role: str = ""     # weights: the --model role

    def find(self) -> tuple[str | None, str | None]:
        """(where it is, None) or (None, the problem)."""
        try:
            return self.locate(), None
        except UserError as e:
            return None, str(e)


def weights(role: str, setting, ctx, who: str, missing: str | None = None, tiny: bool | None = None) -> Need:
    """The checkpoint of `role` for `setting`, as `unifybench.models.weights.resolve` finds it."""
    def locate() -> str:
        from unifybench.models.weights import locate as where
        return where(role, setting, ctx, missing=missing, tiny=tiny)
    return Need("weights", f"{who}: {role} weights", locate, role)


def data(who: str, locate: Callable[[], str]) -> Need:
    return Need("data", f"{who}: data", locate)


def service(who: str, locate: Callable[[], str]) -> Need:
    return Need("service", f"{who}: service", locate)


def absent(kind: str, what: str, message: str) -> Need:
    """A need known to be unmet before anything is looked up (e.g. a preset that names no checkpoint)."""
    def locate() -> str:
        raise UserError(message)
    return Need(kind, what, locate)


def find_all(needs: list[Need]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(found: (what, where), missing: (what, the problem)); a problem two needs share (one CLIP for two
    stages) is spelled out once."""
    found, missing, seen = [], [], set()
    for need in needs:
        where, problem = need.find()
        if problem is None:
            found.append((need.what, where))
        else:
            missing.append((need.what, problem if problem not in seen else "as above"))
            seen.add(problem)
    return found, missing


def problem_line(missing: list[tuple[str, str]]) -> str:
    """Every missing piece in one line, each with what supplies it."""
    n = len(missing)
    return (f"{n} thing{'s' if n > 1 else ''} this run needs {'are' if n > 1 else 'is'} missing (nothing was "
            f"trained or written): " + "; ".join(f"[{what}] {why}" for what, why in missing))
