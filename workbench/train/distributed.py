"""The few collective operations training needs, and nothing when run as one process.

Under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1 in the environment) the gloo
process group is started on first use; rank 0 reads the project and writes the version,
the other ranks receive what they need by broadcast.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def setup() -> bool:
    """Join the process group torchrun describes; False when running as one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def mean(value: float) -> float:
    """The mean of a float over ranks, identical on every rank."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world_size()


__all__ = ["active", "barrier", "broadcast", "mean", "rank", "setup", "world_size"]
