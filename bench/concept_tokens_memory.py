"""Concept tokens vs the full-matrix approach: gradient + optimizer-state bytes and step time.

The reference Yo'Chameleon/Yo'LLaVA code gives the whole input-embedding and lm_head matrices to
AdamW and copies the untouched rows back after each step. Ours trains only the new rows.

Prints, side by side in one run:
  * bytes of gradients + AdamW state at Chameleon-7B geometry (vocab 65536, hidden 4096) and at the
    tiny geometry: measured after one real step at the tiny geometry, computed from the parameter
    shapes at 7B geometry (allocating 7B-sized matrices is not needed to count them);
  * the step time of both approaches on the tiny model, interleaved, median of repeated steps.

Run: python bench/concept_tokens_memory.py [--steps 20]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from unifybench.models.chameleon.backbone import ChameleonBackbone
from unifybench.models.concept_tokens import ConceptTokens, attach, detach
from unifybench.models.chameleon.tiny import tiny_chameleon_path
from unifybench.training import Sample, collate, sequence_loss

N_TOKENS = 33  # <sks> + 16 <g> + 16 <u>


def state_bytes(params, optimizer) -> int:
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    states = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                 if torch.is_tensor(t) and t.dim() > 0)
    return grads + states


def formula_bytes(numel: int, bytes_per: int) -> int:
    """One gradient + AdamW's two moments per trained element."""
    return 3 * numel * bytes_per


def fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.manual_seed(0)
    b = ChameleonBackbone.load(tiny_chameleon_path())
    ids = [b.token_id(f"<reserved{16200 + i}>") for i in range(N_TOKENS)]
    vocab, hidden = b.vocab_size, b.hidden_size

    # One training batch: 4 image answers (1024 codes each) after a personalized prompt.
    codes = b.encode_images([_noise_image(i) for i in range(4)])
    samples = []
    for row in codes.tolist():
        prompt = [b.bos_id] + ids + b.encode_text(" A photo.") + [b.eot_id]
        answer = ids[1:17] + [b.boi_id] + row + [b.eoi_id, b.eot_id]
        samples.append(Sample(prompt + answer, [False] * len(prompt) + [True] * len(answer)))
    batch = collate(samples, b.pad_id, "cpu")

    # Ours: the concept rows as their own parameters.
    tokens = ConceptTokens.from_base(b.input_embeddings(), b.output_head(), ids, ids)
    ours_params = list(tokens.parameters())
    ours_opt = torch.optim.AdamW(ours_params, lr=1e-3)

    # Full matrices: the reference approach (all rows in AdamW, untouched rows copied back).
    emb_w, head_w = b.input_embeddings().weight, b.output_head().weight
    frozen = torch.ones(vocab, dtype=torch.bool)
    frozen[ids] = False
    full_params = [emb_w, head_w]
    full_opt = torch.optim.AdamW(full_params, lr=1e-3)
    emb_orig, head_orig = emb_w.detach().clone(), head_w.detach().clone()

    def step_ours():
        attach(b, tokens)
        loss = sequence_loss(b, *batch)
        ours_opt.zero_grad(set_to_none=False)
        loss.backward()
        ours_opt.step()
        detach(b)

    def step_full():
        for p in full_params:
            p.requires_grad_(True)
        loss = sequence_loss(b, *batch)
        full_opt.zero_grad(set_to_none=False)
        loss.backward()
        full_opt.step()
        with torch.no_grad():
            emb_w[frozen] = emb_orig[frozen]
            head_w[frozen] = head_orig[frozen]
        for p in full_params:
            p.requires_grad_(False)

    step_ours(), step_full()  # warm-up; also creates the optimizer state measured below
    measured_ours, measured_full = state_bytes(ours_params, ours_opt), state_bytes(full_params, full_opt)
    times = {"ours": [], "full": []}
    for _ in range(args.steps):  # interleaved so drift affects both alike
        for name, fn in (("ours", step_ours), ("full", step_full)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    print(f"concept tokens: {N_TOKENS} rows in the embedding and the output head\n")
    print(f"{'geometry':<34}{'ours':>14}{'full matrices':>16}{'ratio':>9}")
    tiny_ours, tiny_full = formula_bytes(2 * N_TOKENS * hidden, 4), formula_bytes(2 * vocab * hidden, 4)
    print(f"{f'tiny (V={vocab}, H={hidden}) measured fp32':<34}{fmt(measured_ours):>14}{fmt(measured_full):>16}"
          f"{measured_full / measured_ours:>8.0f}x")
    print(f"{f'tiny (V={vocab}, H={hidden}) formula fp32':<34}{fmt(tiny_ours):>14}{fmt(tiny_full):>16}"
          f"{tiny_full / tiny_ours:>8.0f}x")
    for label, per in (("fp32", 4), ("bf16", 2)):
        o, f = formula_bytes(2 * N_TOKENS * 4096, per), formula_bytes(2 * 65536 * 4096, per)
        print(f"{'Chameleon-7B (V=65536, H=4096) ' + label:<34}{fmt(o):>14}{fmt(f):>16}{f / o:>8.0f}x")
    mo, mf = statistics.median(times["ours"]), statistics.median(times["full"])
    print(f"\nstep time on the tiny model (batch 4 x {batch[0].shape[1]} tokens, median of {args.steps}):")
    print(f"  ours {mo * 1000:.1f} ms   full matrices {mf * 1000:.1f} ms   ratio full/ours {mf / mo:.2f}x")


def _noise_image(seed: int):
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(256, 256, 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(arr)


if __name__ == "__main__":
    main()
