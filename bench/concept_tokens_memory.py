"""Concept tokens vs the full-matrix approach: gradient + optimizer-state bytes and step time, side by side.

The reference Yo'Chameleon/Yo'LLaVA code gives the whole input-embedding and lm_head matrices to
AdamW and copies the untouched rows back after each step. Ours trains only the new rows.

Both sides run in this one process on the same model and batch, interleaved, median of `--steps`:
  * `--geometry real` (default): Chameleon-7B embedding geometry (vocab 65536, hidden 4096, MLP 11008,
    32 heads) on a shallow trunk of `--layers` decoder layers (random weights), so it fits a CPU. The
    gradient + AdamW bytes are MEASURED: the tensors the optimizer holds after a real step are counted.
  * `--geometry tiny`: the tiny random checkpoint through the real loading path.
The 7B formula row (3 x trained elements x bytes) is printed beside the measurement for reference.

Run: python bench/concept_tokens_memory.py [--geometry real|tiny] [--layers 1] [--steps 5] [--codes 256]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_geometry import RandomChameleon, sync  # noqa: E402

from unifybench.models.concept_tokens import ConceptTokens, attach, detach  # noqa: E402
from unifybench.training import Sample, collate, sequence_loss  # noqa: E402

N_TOKENS = 33  # <sks> + 16 <g> + 16 <u>
FIRST_CONCEPT_ID = 16200  # <reserved16200..>, as Yo'Chameleon uses


def state_bytes(params, optimizer) -> int:
    """Bytes of the gradients of `params` plus every tensor in the optimizer's state (measured)."""
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


def image_batch(b, ids: list[int], batch: int, codes: int, seed: int = 0):
    """`batch` Yo'Chameleon generation samples: personalized prompt, then <g..> + an image of `codes` codes."""
    g = torch.Generator().manual_seed(seed)
    allowed = b.image_token_ids.cpu()
    samples = []
    for _ in range(batch):
        row = allowed[torch.randint(0, len(allowed), (codes,), generator=g)].tolist()
        prompt = [b.bos_id] + ids + [10, 11, 12, 13] + [b.eot_id]           # "<sks> is <g><u>. A photo."
        answer = ids[1:17] + [b.boi_id] + row + [b.eoi_id, b.eot_id]
        samples.append(Sample(prompt + answer, [False] * len(prompt) + [True] * len(answer)))
    return collate(samples, b.pad_id, b.device)


def compare_steps(b, batch, steps: int, ids: list[int] | None = None) -> dict:
    """Both approaches on backbone `b` and `batch`: measured state bytes, peak step memory (CUDA), step times."""
    ids = ids or list(range(FIRST_CONCEPT_ID, FIRST_CONCEPT_ID + N_TOKENS))
    vocab = b.vocab_size
    cuda = b.device.type == "cuda"

    tokens = ConceptTokens.from_base(b.input_embeddings(), b.output_head(), ids, ids)
    tokens.to(b.device)
    ours_params = list(tokens.parameters())
    ours_opt = torch.optim.AdamW(ours_params, lr=1e-3)

    emb_w, head_w = b.input_embeddings().weight, b.output_head().weight
    frozen = torch.ones(vocab, dtype=torch.bool, device=b.device)
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

    peak = {}
    for name, fn in (("ours", step_ours), ("full", step_full)):  # warm-up; creates the state measured below
        if cuda:
            sync(b.device)
            torch.cuda.reset_peak_memory_stats(b.device)
            base = torch.cuda.memory_allocated(b.device)
        fn()
        if cuda:
            sync(b.device)
            peak[name] = torch.cuda.max_memory_allocated(b.device) - base
    measured = {"ours": state_bytes(ours_params, ours_opt), "full": state_bytes(full_params, full_opt)}
    times = {"ours": [], "full": []}
    for _ in range(steps):  # interleaved so drift affects both alike
        for name, fn in (("ours", step_ours), ("full", step_full)):
            sync(b.device)
            t0 = time.perf_counter()
            fn()
            sync(b.device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    # Free the full-matrix side's state before anything else runs on this model.
    full_opt.state.clear()
    for p in full_params:
        p.grad = None
    return {"state_bytes": measured, "memory_ratio": measured["full"] / measured["ours"],
            "step_s": med, "step_ratio": med["full"] / med["ours"], "steps": steps,
            "batch": list(batch[0].shape), **({"peak_step_bytes": peak} if peak else {})}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--geometry", choices=("real", "tiny"), default="real")
    ap.add_argument("--layers", type=int, default=1, help="decoder layers of the real-geometry trunk")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1, help="sequences per step (the paper's batch is 4)")
    ap.add_argument("--codes", type=int, default=256, help="image codes per answer (a real image has 1024)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.geometry == "real":
        b = RandomChameleon.build(args.layers)
        ids = list(range(FIRST_CONCEPT_ID, FIRST_CONCEPT_ID + N_TOKENS))
        label = f"Chameleon-7B embedding geometry (V={b.vocab_size}, H={b.hidden_size}), {args.layers}-layer trunk, fp32"
    else:
        from unifybench.models.chameleon.backbone import ChameleonBackbone
        from unifybench.models.chameleon.tiny import tiny_chameleon_path
        b = ChameleonBackbone.load(tiny_chameleon_path())
        ids = [b.token_id(f"<reserved{FIRST_CONCEPT_ID + i}>") for i in range(N_TOKENS)]
        label = f"tiny checkpoint (V={b.vocab_size}, H={b.hidden_size}), fp32"
    batch = image_batch(b, ids, args.batch, min(args.codes, b.image_seq_length))
    r = compare_steps(b, batch, args.steps, ids)
    r.update(geometry=args.geometry, layers=args.layers, threads=torch.get_num_threads())

    print(f"concept tokens ({N_TOKENS} rows in the embedding and the output head) vs full matrices")
    print(label)
    print(f"{'':<44}{'ours':>14}{'full matrices':>16}{'ratio':>9}")
    sb = r["state_bytes"]
    print(f"{'gradients + AdamW state, measured':<44}{fmt(sb['ours']):>14}{fmt(sb['full']):>16}"
          f"{r['memory_ratio']:>8.0f}x")
    for tag, per in (("fp32", 4), ("bf16", 2)):
        o, f = formula_bytes(2 * N_TOKENS * 4096, per), formula_bytes(2 * 65536 * 4096, per)
        print(f"{'Chameleon-7B formula ' + tag:<44}{fmt(o):>14}{fmt(f):>16}{f / o:>8.0f}x")
    st = r["step_s"]
    print(f"step time (batch {r['batch'][0]} x {r['batch'][1]} tokens, median of {args.steps}, interleaved):")
    print(f"  ours {st['ours'] * 1000:.1f} ms   full matrices {st['full'] * 1000:.1f} ms   "
          f"full/ours {r['step_ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return r


if __name__ == "__main__":
    main()
