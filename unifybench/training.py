"""Training concept tokens on token sequences with the loss on answer spans only.

Batches are drawn from a seeded permutation per epoch (the paper's random batches). With `length_buckets`
> 0, each window of that many batches of the permutation is sorted by length before it is cut into
batches, and the window's batches are shuffled again: each epoch still visits every sample exactly once, in
batches of the same size, from the same seed, but a batch pads to a near neighbour's length, not to the
longest of a random draw. That changes which samples share a batch (so the losses are not those of random
batches); what it never changes is the loss of a given batch, which does not depend on its padding
(right-padded, causal, padded targets ignored). 0 (the default) draws exactly what it always drew.
"""
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
    length_buckets: int = 0   # > 0: batches of similar length within windows of this many batches (module doc)


def epoch_batches(lengths: list[int], batch_size: int, generator: torch.Generator,
                  length_buckets: int = 0) -> list[list[int]]:
    """One epoch's batches of sample indices (see the module docstring)."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if length_buckets <= 0:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * length_buckets
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda i: lengths[i])   # stable: ties keep the seeded order
        cut = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches += [cut[j] for j in torch.randperm(len(cut), generator=generator).tolist()]
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the collated token positions that are padding."""
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths) / total if total else 0.0


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
        lengths = [len(s.ids) for s in samples]
        for _ in range(epochs):
            total, count = 0.0, 0
            for members in epoch_batches(lengths, cfg.batch_size, generator, cfg.length_buckets):
                if cfg.max_steps > 0 and steps >= cfg.max_steps:
                    break
                steps += 1
                batch = [samples[i] for i in members]
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
