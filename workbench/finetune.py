"""Fine-tuning one network: augmentation, AdamW + cosine schedule, early stopping, resume.

:func:`fit` trains a ``Sequential(body, head)`` (its head already fitted as a linear probe:
LP-FT) on images held in memory as uint8 squares. Batch-norm statistics stay frozen (a
batch of 16 defect images estimates them worse than ImageNet did). After every epoch the
whole training state is written atomically to ``state_path``, so an interrupted fit goes on
from its last finished epoch. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and each rank takes its share of every batch.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from workbench import distributed
from workbench.images import read_rgb


class TrainingCancelled(RuntimeError):  # noqa: N818 (reads as what happened)
    """A training run was stopped by the user; finished epochs and folds are kept on disk,
    and ``train(..., resume=True)`` goes on from there."""


class CancelFlag(Protocol):
    """Anything with ``is_set()``, such as a ``threading.Event`` a Stop button sets."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class FinetuneSettings:
    """Optimisation settings of a fine-tune (recorded in the version's config)."""

    epochs: int = 15
    batch_size: int = 16
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    patience: int = 5
    warmup_epochs: int = 1
    freeze_batchnorm: bool = True
    #: Share of the body's parameter tensors trained, counted from the output end: 1.0 is
    #: the whole network, 0.3 roughly the last blocks (about 2.5x faster steps on a CPU).
    trainable: float = 1.0


@dataclass
class FitResult:
    """A fitted member, the epoch it was taken from, its held-out probabilities, and the
    held-out loss and accuracy after every epoch."""

    member: nn.Sequential
    best_epoch: int
    epochs_run: int
    val_probs: np.ndarray | None
    curve: list[dict[str, float]]


def augmentation() -> v2.Compose:
    """Changes an inspection image can undergo without changing its class.

    Flips, small rotations and shifts, mild brightness/contrast; no hue or saturation
    changes, no crops that could cut a defect out of view.
    """
    return v2.Compose([
        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        v2.ColorJitter(brightness=0.15, contrast=0.15),
    ])


def load_pixels(paths: Sequence[str | os.PathLike[str]], image_size: int, *,
                progress: bool = True) -> torch.Tensor:
    """Decode and resize images once: uint8 tensor (n, 3, image_size, image_size).

    Memory: n × 3 × image_size² bytes (150 KB per image at 224 px).
    """
    out = torch.empty((len(paths), 3, image_size, image_size), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc="decoding", unit="image", disable=not progress,
                                  leave=False)):
        x = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)[None].to(torch.float32)
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        out[i] = x[0].round().clamp(0, 255).to(torch.uint8)
    return out


def _normalise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = (pixels.to(torch.float32) / 255.0 - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def probabilities(member: nn.Module, pixels: torch.Tensor, mean: torch.Tensor,
                  std: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Softmax of an un-augmented forward: (n, n_classes), float32."""
    was_training = member.training
    member.eval()
    chunks = [member(_normalise(pixels[i:i + batch_size], mean, std)).softmax(1)
              for i in range(0, len(pixels), batch_size)]
    member.train(was_training)
    return torch.cat(chunks).float().numpy()


def _train_mode(member: nn.Module, freeze_batchnorm: bool) -> None:
    """Train mode, with batch-norm layers frozen (running statistics and all) if asked."""
    member.train()
    for module in member.modules() if freeze_batchnorm else ():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _schedule(optimizer: torch.optim.Optimizer, warmup: int,
              total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(state, partial)
    partial.replace(path)


def fit(member: nn.Sequential, pixels: torch.Tensor, labels: np.ndarray, *,
        settings: FinetuneSettings, epochs: int, seed: int, mean: Sequence[float],
        std: Sequence[float], val_pixels: torch.Tensor | None = None,
        val_labels: np.ndarray | None = None, state_path: Path | None = None,
        cancel: CancelFlag | None = None, desc: str = "fine-tune",
        progress: bool = True) -> FitResult:
    """Fine-tune ``member`` on uint8 images (n, 3, S, S) with integer labels (n,).

    With validation images, the weights of the epoch with the highest validation accuracy
    are kept (ties: the later epoch, as the cosine schedule anneals) and training stops after
    ``settings.patience`` epochs below that accuracy; without, all ``epochs`` run and the last
    weights are kept. (Validation loss picked epochs too early: on folds of ten images it
    rises with the confidence of one mistake; see docs/benchmarks.md.) ``state_path``: where
    the state after each epoch is kept for resuming (read first if it exists).
    """
    torch.manual_seed(seed * 1009 + distributed.rank())  # augmentation differs per rank
    order = torch.Generator().manual_seed(seed)  # batches agree across ranks
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    member = member.to(memory_format=torch.channels_last)
    body, head = member[0], member[1]
    if not 0.0 <= settings.trainable <= 1.0:
        raise ValueError(f"trainable must be between 0 and 1, got {settings.trainable!r}.")
    parameters = list(body.parameters())
    frozen = len(parameters) - round(settings.trainable * len(parameters))
    for i, parameter in enumerate(parameters):
        parameter.requires_grad_(i >= frozen)
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in body.parameters() if p.requires_grad], "lr": settings.lr},
         {"params": list(head.parameters()), "lr": settings.head_lr}],
        weight_decay=settings.weight_decay)
    world = distributed.world_size()
    steps = max(1, len(pixels) // settings.batch_size + bool(len(pixels) % settings.batch_size))
    scheduler = _schedule(optimizer, settings.warmup_epochs * steps, epochs * steps)
    model: nn.Module = member
    if distributed.active():
        model = nn.parallel.DistributedDataParallel(member, broadcast_buffers=False)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    augment = augmentation()
    state = {"epoch": 0, "best": None, "best_accuracy": -1.0, "best_epoch": 0, "bad": 0,
             "val_probs": None, "curve": []}
    if state_path is not None and state_path.is_file():
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        member.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        order.set_state(saved["order"])
        state = {k: saved[k] for k in state}
    bar = tqdm(total=epochs, initial=state["epoch"], desc=desc, unit="epoch",
               disable=not progress, leave=False)
    try:
        while state["epoch"] < epochs and state["bad"] < settings.patience:
            _train_mode(member, settings.freeze_batchnorm)
            permutation = torch.randperm(len(pixels), generator=order)
            for start in range(0, len(pixels), settings.batch_size):
                if cancel is not None and cancel.is_set():
                    raise TrainingCancelled("training cancelled; finished epochs are kept, "
                                            "resume with train(..., resume=True)")
                batch = permutation[start:start + settings.batch_size]
                if len(batch) < world:
                    continue  # every rank needs a share
                batch = batch[distributed.rank()::world]
                images = torch.stack([augment(pixels[i]) for i in batch])
                loss = F.cross_entropy(model(_normalise(images, mean_t, std_t)), y[batch],
                                       label_smoothing=settings.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            state["epoch"] += 1
            if val_pixels is not None and len(val_pixels):
                probs = probabilities(member, val_pixels, mean_t, std_t)
                truth = np.asarray(val_labels, dtype=np.int64)
                val_loss = distributed.mean(float(F.nll_loss(
                    torch.from_numpy(np.log(np.clip(probs, 1e-12, None))),
                    torch.from_numpy(truth))))
                accuracy = distributed.mean(float((probs.argmax(1) == truth).mean()))
                state["curve"].append({"epoch": state["epoch"], "val_loss": val_loss,
                                       "val_accuracy": accuracy})
                if accuracy >= state["best_accuracy"]:  # ties: the later epoch
                    state.update(best=copy.deepcopy(member.state_dict()),
                                 best_accuracy=accuracy, best_epoch=state["epoch"], bad=0,
                                 val_probs=probs)
                else:
                    state["bad"] += 1
                bar.set_postfix(val_acc=f"{accuracy:.3f}", val_loss=f"{val_loss:.3f}")
            bar.update(1)
            if state_path is not None and distributed.rank() == 0:
                _save_atomic({**state, "model": member.state_dict(),
                              "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(),
                              "rng": torch.get_rng_state(), "order": order.get_state()},
                             state_path)
            distributed.barrier()
    finally:
        bar.close()
    if state["best"] is not None:
        member.load_state_dict(state["best"])
    member = member.to(memory_format=torch.contiguous_format).eval()
    return FitResult(member=member, best_epoch=state["best_epoch"] or state["epoch"],
                     epochs_run=state["epoch"], val_probs=state["val_probs"],
                     curve=state["curve"])


__all__ = ["CancelFlag", "FinetuneSettings", "FitResult", "TrainingCancelled", "augmentation",
           "fit", "load_pixels", "probabilities"]
