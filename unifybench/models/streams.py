"""Per-image random streams: what makes image generation batch-size independent.

A family's `generate_images(prompt, n, generator, ..., batch_size)` seeds one stream per image from `n` draws
of the caller's generator, and every random draw of image i (a sampled code, a re-masking noise) comes from
stream i alone. Image i then depends on (generator state, i, its prompt), never on which images share its
forward batch, so `batch_size`, and batching across prompts, is a throughput setting only (where the
forward computes a row the same in any batch: fp32 on a CPU is tested; GPU kernels may round differently).
"""
from __future__ import annotations

import torch


def image_generators(generator: torch.Generator, n: int) -> list[torch.Generator]:
    """`n` per-image streams (on `generator`'s device) seeded by `n` draws of `generator`."""
    seeds = torch.randint(0, 2 ** 62, (n,), generator=generator, device=generator.device).tolist()
    return [torch.Generator(device=generator.device).manual_seed(int(s)) for s in seeds]


def uniforms(generators: list[torch.Generator], n: int, device) -> torch.Tensor:
    """[len(generators), n] uniforms in [0, 1), row r from `generators[r]`, moved to `device`."""
    return torch.stack([torch.rand(n, generator=g, device=g.device) for g in generators]).to(device)
