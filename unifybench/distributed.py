"""Many GPUs and nodes through torch.distributed (launched by torchrun): process group, device, barriers.

Ranks share out the concepts through the work queue of `unifybench.workqueue` (each claims the next
unfinished one); rank 0 then reads all units back in concept order and scores them, so results do not
depend on the number of ranks.
"""
from __future__ import annotations

import os


def init(spec) -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun with several ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        backend = "nccl" if spec.device.startswith("cuda") else "gloo"
        # Rank 0 scores while the others wait at the final barrier: allow long scoring.
        import datetime
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=12))
    return dist.get_rank(), dist.get_world_size()


def rank_device(device: str) -> str:
    """One GPU per local rank; CPU stays CPU."""
    if device.startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
