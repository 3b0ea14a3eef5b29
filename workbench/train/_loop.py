"""What every training loop shares: the learning-rate schedule, batches, and stopping.

Classification fine-tuning (:mod:`workbench.train.classification.finetune`) and detector
training (:mod:`workbench.train.detection.train`) both warm up then follow a cosine, walk
their images in batches (shuffled for training, in order for prediction), and check a
Stop button between batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import torch

from workbench.errors import LoupeError


class TrainingCancelled(LoupeError, RuntimeError):  # noqa: N818 (reads as what happened)
    """A training run was stopped by the user; finished epochs and folds are kept on disk,
    and ``train(..., resume=True)`` goes on from there."""


class CancelFlag(Protocol):
    """Anything with ``is_set()``, such as a ``threading.Event`` a Stop button sets."""

    def is_set(self) -> bool: ...


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int,
                  total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then a cosine down to 0 at ``total`` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def batches(n: int, batch_size: int, *, order: torch.Tensor | None = None,
            cancel: CancelFlag | None = None, cancelled: str = "training cancelled"
            ) -> Iterator[torch.Tensor | slice]:
    """The batches of ``n`` items: slices in order, or index tensors of ``order`` (a
    permutation); raises :class:`TrainingCancelled` with ``cancelled`` when ``cancel`` is
    set before a batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    for start in range(0, n, batch_size):
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(cancelled)
        yield (slice(start, start + batch_size) if order is None
               else order[start:start + batch_size])
