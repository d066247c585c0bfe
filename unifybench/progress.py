"""Rich progress bars for training, generation and scoring (quiet when stderr is not a terminal: the runner
then prints one plain line per finished stage and concept instead).

On a terminal the run's top bar (`keep=True`) stays; every finished sub-bar (one concept's training,
answering, generating) is removed, so the display never grows with the number of concepts."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console(stderr=True)


class Progress:
    """One live display per run; `task(...)` gives a context manager yielding an `advance` callable."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                  disable=not self.enabled, transient=False)

    def __enter__(self) -> "Progress":
        self._rich.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._rich.__exit__(*exc)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, keep: bool = False) -> Iterator:
        tid = self._rich.add_task(description, total=total)
        try:
            yield lambda n=1: self._rich.advance(tid, n)
        finally:
            if keep:
                self._rich.update(tid, visible=self.enabled)
            else:
                self._rich.remove_task(tid)

    def log(self, message: str) -> None:
        self._rich.console.print(message)


@contextlib.contextmanager
def maybe_task(progress: "Progress | None", description: str, total: int | None, keep: bool = False) -> Iterator:
    """`progress.task(...)` when there is a progress display, else a no-op advance."""
    if progress is None:
        yield lambda n=1: None
    else:
        with progress.task(description, total, keep) as advance:
            yield advance
