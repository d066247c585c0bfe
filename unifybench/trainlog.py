"""The training log of one concept's fit: every optimizer step's loss and every epoch's mean, always
written to ``concepts/<c>/train_log.jsonl``, and mirrored to TensorBoard (``--log tensorboard``, event files
under ``<run>/tensorboard/<concept>``) and Weights & Biases (``--log wandb``, offline unless the user set
``WANDB_MODE``) through their own libraries, installed as the optional extras ``unifybench[tensorboard]`` and
``unifybench[wandb]``.

The runner opens the log around ``method.fit`` (:func:`open_log`); training loops report with
:func:`step` and :func:`epoch` and never know where the lines go. Outside a fit both are no-ops.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
import time
from pathlib import Path
from typing import Iterator

from unifybench.errors import UserError

_current: contextvars.ContextVar["TrainLog | None"] = contextvars.ContextVar("unifybench_train_log", default=None)


class TrainLog:
    def __init__(self, path: Path, concept: str, loggers: list[str], run_dir: Path, run_name: str):
        self.path, self.concept = path, concept
        self.steps = 0
        self.epochs = 0
        self._t0 = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", encoding="utf-8")    # a refit rewrites the log of its concept
        self._tb = self._wandb = None
        if "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--log tensorboard needs the tensorboard package: "
                                "pip install 'unifybench[tensorboard]'") from None
            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard" / concept))
        if "wandb" in loggers:
            try:
                import wandb
            except ImportError:
                raise UserError("--log wandb needs the wandb package: pip install 'unifybench[wandb]'") from None
            os.environ.setdefault("WANDB_MODE", "offline")     # never the network unless the user asks
            self._wandb = wandb.init(project="unifybench", name=f"{run_name}/{concept}", dir=str(run_dir),
                                     reinit=True, config={"concept": concept})

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def step(self, loss: float, stage: str = "") -> None:
        self.steps += 1
        rec = {"kind": "step", "step": self.steps, "epoch": self.epochs + 1, "loss": float(loss),
               "elapsed_s": round(time.perf_counter() - self._t0, 3), **({"stage": stage} if stage else {})}
        self._write(rec)
        if self._tb is not None:
            self._tb.add_scalar(f"loss/step{'/' + stage if stage else ''}", float(loss), self.steps)
        if self._wandb is not None:
            self._wandb.log({"loss/step": float(loss)}, step=self.steps)

    def epoch(self, mean_loss: float, stage: str = "") -> None:
        self.epochs += 1
        self._write({"kind": "epoch", "epoch": self.epochs, "step": self.steps, "loss": float(mean_loss),
                     **({"stage": stage} if stage else {})})
        if self._tb is not None:
            self._tb.add_scalar(f"loss/epoch{'/' + stage if stage else ''}", float(mean_loss), self.epochs)
        if self._wandb is not None:
            self._wandb.log({"loss/epoch": float(mean_loss)}, step=self.steps)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


@contextlib.contextmanager
def open_log(path: Path, concept: str, loggers: list[str], run_dir: Path, run_name: str) -> Iterator[TrainLog]:
    log = TrainLog(path, concept, loggers, run_dir, run_name)
    token = _current.set(log)
    try:
        yield log
    finally:
        _current.reset(token)
        log.close()


def step(loss: float, stage: str = "") -> None:
    """One optimizer step's loss, to the open log (nothing outside a fit)."""
    log = _current.get()
    if log is not None:
        log.step(loss, stage)


def epoch(mean_loss: float, stage: str = "") -> None:
    log = _current.get()
    if log is not None:
        log.epoch(mean_loss, stage)
