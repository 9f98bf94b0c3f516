"""Data parallelism with PyTorch's own engine: torchrun's environment -> a process group -> DDP.

`torchrun --nproc_per_node N -m seqlab train ...` starts N processes with RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT in their environment. `setup` joins them into one process group (gloo on the
CPU, NCCL on CUDA, one GPU per local rank). Every rank builds the same data and the same model from the same
seed; the trainer shards each epoch's plan with `shard_plan`, wraps the model in DistributedDataParallel
(which averages gradients over the ranks in backward) and reduces metric sums with `all_reduce_sums`. Only
rank 0 writes files. Without a process group every helper here is the identity, so one code path serves both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0, the one process that writes the run directory, metrics and logs."""
    return rank() == 0


def setup(device: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1). Returns True if this
    call created it (the caller then owns `teardown`). NCCL when the run is on CUDA, gloo otherwise."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return True


def teardown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled; for small values such as a path or a dict of metrics)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank ([obj] without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sums(sums: dict[str, float]) -> dict[str, float]:
    """The sum over ranks of each rank's metric sums (ranks may hold different keys; a missing key is 0)."""
    total: dict[str, float] = {}
    for part in all_gather_object(dict(sums)):
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + v
    return total


def any_rank(*flags: bool) -> list[bool]:
    """For each flag: is it set on any rank? One all-reduce for all of them."""
    if not is_distributed():
        return list(flags)
    t = torch.tensor([float(f) for f in flags])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel when a process group exists, else `model` itself."""
    if not is_distributed():
        return model
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _size(item: Any) -> int:
    """Examples in a batch descriptor: its length for index arrays, else 1 (batches of equal weight)."""
    return len(item) if isinstance(item, (np.ndarray, torch.Tensor)) else 1


def shard_plan(plan: Sequence[Any], rank: int, world: int) -> list[tuple[Any, float]]:
    """Rank `rank`'s share of an epoch's batches: at step s it takes batch s*world + rank, so one step of
    `world` ranks with batch b covers what one process covers in `world` steps, and one process with batch
    world*b sees the same global batches when the plan is a permutation cut into batches.

    Each batch comes with the weight its loss is multiplied by before backward: world * n_r / N (n_r its
    examples, N those of the whole step), so that DDP's mean over ranks of the gradients is the gradient of
    the mean loss over the global batch, the uneven last batch included. Every rank runs the same number of
    steps (DDP needs it): when the plan runs out, a rank takes batch 0 with weight 0 (it adds nothing)."""
    steps = -(-len(plan) // world)
    out = []
    for s in range(steps):
        sizes = [_size(plan[i]) if i < len(plan) else 0 for i in range(s * world, (s + 1) * world)]
        i = s * world + rank
        if i < len(plan):
            out.append((plan[i], world * sizes[rank] / sum(sizes)))
        else:
            out.append((plan[0], 0.0))
    return out
