"""Training concept tokens on token sequences with the loss on answer spans only."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unifybench import trainlog
from unifybench.progress import maybe_task


@dataclass
class Sample:
    """One training sequence; `supervised[i]` says whether token i is a target (an answer token)."""

    ids: list[int]
    supervised: list[bool]
    kind: str = ""

    def __post_init__(self):
        if len(self.ids) != len(self.supervised):
            raise ValueError("ids and supervised differ in length")


@dataclass
class OptimConfig:
    lr: float
    weight_decay: float
    adam_eps: float
    batch_size: int
    epochs: int
    max_steps: int = 0   # > 0: iteration-based, stop after this many optimizer steps (`epochs` is then ignored:
                         # each epoch is a fresh order, as many as the steps need, the last one cut short)


def collate(samples: list[Sample], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and targets (-100 where not supervised)."""
    width = max(len(s.ids) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    targets = torch.full((len(samples), width), -100, dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.ids)
        ids[row, :n] = torch.tensor(s.ids)
        mask[row, :n] = 1
        sup = torch.tensor(s.supervised)
        targets[row, :n] = torch.where(sup, ids[row, :n], torch.tensor(-100))
    return ids.to(device), mask.to(device), targets.to(device)


def sequence_loss(backbone, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over supervised positions.

    The head is applied only where a target exists: a 65k-wide logit row for every position of a
    1000-token image sequence would dominate memory for nothing.
    """
    hidden, _ = backbone.forward_hidden(ids, attention_mask=mask)
    next_targets = targets[:, 1:]
    where = next_targets != -100
    logits = backbone.logits(hidden[:, :-1][where])
    return F.cross_entropy(logits.float(), next_targets[where])


def train_tokens(backbone, params: list[torch.nn.Parameter], samples: list[Sample], cfg: OptimConfig,
                 generator: torch.Generator, progress=None, description: str = "training") -> list[float]:
    """AdamW over `params` only; returns the mean loss of each epoch (with `max_steps`, of each epoch begun)."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps,
                                  betas=(0.9, 0.999))
    device = params[0].device
    steps_per_epoch = (len(samples) + cfg.batch_size - 1) // cfg.batch_size
    epochs, n_steps = cfg.epochs, steps_per_epoch * cfg.epochs
    if cfg.max_steps > 0:
        epochs, n_steps = -(-cfg.max_steps // max(steps_per_epoch, 1)), cfg.max_steps
    steps = 0
    epoch_losses = []
    with maybe_task(progress, description, n_steps) as advance:
        for _ in range(epochs):
            order = torch.randperm(len(samples), generator=generator).tolist()
            total, count = 0.0, 0
            for start in range(0, len(order), cfg.batch_size):
                if cfg.max_steps > 0 and steps >= cfg.max_steps:
                    break
                steps += 1
                batch = [samples[i] for i in order[start:start + cfg.batch_size]]
                ids, mask, targets = collate(batch, backbone.pad_id, device)
                loss = sequence_loss(backbone, ids, mask, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                count += 1
                trainlog.step(float(loss.detach()), description)
                advance()
            epoch_losses.append(total / max(count, 1))
            trainlog.epoch(epoch_losses[-1], description)
    return epoch_losses
