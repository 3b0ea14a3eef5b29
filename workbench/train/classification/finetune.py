"""Fine-tuning one network: augmentation, AdamW + cosine schedule, early stopping, resume.

:func:`fit` trains a ``Sequential(body, head)`` (its head already fitted as a linear probe:
LP-FT) on images held in memory as uint8 squares, or (``FinetuneSettings(frozen_blocks=4)``,
EfficientNet bodies) trains only the body's upper stages on a tensor cache:
:func:`trunk_features` runs the frozen lower stages once on the eight flips and quarter
turns of every image, and every fold and the final model of a run read those features
instead of decoding, augmenting and running the whole network on every step. Batch-norm
statistics stay frozen (a batch of 16 defect images estimates them worse than ImageNet did).
After every epoch the whole training state is written atomically to ``state_path``, so an
interrupted fit goes on from its last finished epoch. Under ``torchrun`` the model is
wrapped in DistributedDataParallel and each rank takes its share of every batch (on pixels:
a run's cache is for one process).

A saved state holds tensors, numbers, strings, lists and dicts only (random-number states as
uint8 tensors) and is read with ``torch.load(weights_only=True)``: a project folder can come
from a stranger's archive, and no code in it ever runs. A state file that is not one Loupe
wrote (a pickle, another format, tensors of other shapes) is ignored with an
:class:`UnusableStateWarning` naming it, and that fit starts from scratch (the result is the
same model an uninterrupted run gives).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from workbench.store.ingest.images import read_rgb
from workbench.train import distributed
from workbench.train._loop import CancelFlag, TrainingCancelled, batches, warmup_cosine


class UnusableStateWarning(UserWarning):
    """A saved training state was not used (unreadable, not Loupe's, or not this model's);
    that part of the training starts from scratch."""


#: ``format`` of a saved fine-tune state (1: pickled NumPy and Python objects, never read).
STATE_FORMAT = 2


@dataclass(frozen=True)
class FinetuneSettings:
    """Optimisation settings of a fine-tune (recorded in the version's config)."""

    epochs: int = 15
    batch_size: int = 16
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    #: Early stopping: stop after this many epochs below the best held-out accuracy and
    #: keep that epoch's weights. ``None``: every epoch runs and the last weights are kept
    #: (the final model then trains the same schedule), what the feature cache was measured
    #: with.
    patience: int | None = 5
    warmup_epochs: int = 1
    freeze_batchnorm: bool = True
    #: Share of the body's parameter tensors trained, counted from the output end: 1.0 is
    #: the whole network, 0.3 roughly the last blocks (about 2.5x faster steps on a CPU).
    trainable: float = 1.0
    #: Range of the random brightness and contrast factors of the augmentation. Widen the
    #: brightness range, e.g. to (0.35, 1.3), where the line's light changes (a night shift).
    brightness: tuple[float, float] = (0.85, 1.15)
    contrast: tuple[float, float] = (0.85, 1.15)
    #: The final model's: 0 (the default) trains every layer on freshly augmented pixels.
    #: 1 … stages - 1, for EfficientNet-style bodies: the stem and this many first stages
    #: stay frozen and run once per image and view (:func:`trunk_features`), and only the
    #: rest trains, on those cached features (4 with 20 epochs: NEU 0.970 and KolektorSDD
    #: 0.825 defect AP, against 0.976 and 0.904 on pixels; docs/benchmarks.md). Other
    #: bodies always train on pixels.
    frozen_blocks: int = 0
    #: Views per image in the cache: flips and quarter turns (at most 8, the first is the
    #: image itself), each after the first with a random brightness and contrast.
    views: int = 8
    #: The cross-validation fold models only estimate how the final model does on unseen
    #: images (``auto``'s choice, label issues, the version's metrics), so they may be
    #: cheaper than it: ``fold_frozen_blocks`` frozen stages (a tensor cache computed once
    #: and shared by every fold; ``None``: as ``frozen_blocks``) and ``fold_epochs`` epochs
    #: (``None``: as many as the final model). By default the folds train 10 epochs on the
    #: cache of 4 frozen stages and the final model every layer on pixels: half of the
    #: time of folds like the final model at the same accuracy (docs/benchmarks.md).
    #: Folds trained on the cache run every epoch (no early stopping); when the folds are
    #: trained otherwise than the final model, the final model trains ``epochs``.
    fold_frozen_blocks: int | None = 4
    fold_epochs: int | None = 10

    def __post_init__(self) -> None:
        for name in ("fold_frozen_blocks", "fold_epochs"):
            value, least = getattr(self, name), int(name == "fold_epochs")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not least <= value <= 99):
                raise ValueError(f"FinetuneSettings.{name} must be None (as the final "
                                 f"model) or an integer from {least} to 99; got {value!r}")
        for name, least, most in (("frozen_blocks", 0, 99), ("views", 1, 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not least <= value <= most:
                raise ValueError(f"FinetuneSettings.{name} must be an integer from {least} "
                                 f"to {most}; got {value!r}")
        for name in ("brightness", "contrast"):
            value = getattr(self, name)
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                low = high = -1.0
            if not 0 <= low <= high:
                raise ValueError(f"FinetuneSettings.{name} must be a (low, high) pair of "
                                 f"factors with 0 <= low <= high, e.g. (0.85, 1.15); got "
                                 f"{value!r}")
            object.__setattr__(self, name, (low, high))  # a list from JSON: a tuple


@dataclass
class FitResult:
    """A fitted member, the epoch it was taken from, its held-out probabilities, and the
    held-out loss and accuracy after every epoch."""

    member: nn.Sequential
    best_epoch: int
    epochs_run: int
    val_probs: np.ndarray | None
    curve: list[dict[str, float]]


def augmentation(settings: FinetuneSettings | None = None) -> v2.Compose:
    """Changes an inspection image can undergo without changing its class.

    Flips, small rotations and shifts, brightness and contrast in the ranges of
    ``settings`` (mild by default); no hue or saturation changes, no crops that could cut a
    defect out of view.
    """
    settings = settings or FinetuneSettings()
    return v2.Compose([
        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        v2.ColorJitter(brightness=tuple(settings.brightness),
                       contrast=tuple(settings.contrast)),
    ])


def dihedral(pixels: torch.Tensor, view: int) -> torch.Tensor:
    """Square images (..., S, S) under one of the 8 flips and quarter turns (0: as is)."""
    if view & 4:
        pixels = pixels.transpose(-1, -2)
    if view & 1:
        pixels = pixels.flip(-1)
    if view & 2:
        pixels = pixels.flip(-2)
    return pixels


def split_body(body: nn.Module, frozen_blocks: int
               ) -> tuple[nn.Sequential, nn.Sequential] | None:
    """The frozen lower part and the trained upper part of an EfficientNet-style body (timm's
    ``conv_stem``, ``bn1``, ``blocks``, ``conv_head``, ``bn2``, ``global_pool``), made of the
    body's own modules: ``top(trunk(x))`` equals ``body(x)``, and training ``top`` trains
    the body. ``None`` for other bodies or ``frozen_blocks`` outside 1 … stages − 1."""
    parts = ("conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool")
    if not all(hasattr(body, part) for part in parts) or \
            not 0 < frozen_blocks < len(body.blocks):
        return None
    trunk = nn.Sequential(body.conv_stem, body.bn1, *body.blocks[:frozen_blocks])
    top = nn.Sequential(*body.blocks[frozen_blocks:], body.conv_head, body.bn2,
                        body.global_pool)
    return trunk, top


#: Most bytes a run's feature cache may take; fewer views are cached beyond that.
MAX_CACHE_BYTES = 2 * 2**30


@torch.inference_mode()
def trunk_features(trunk: nn.Module, pixels: torch.Tensor, *, settings: FinetuneSettings,
                   mean: Sequence[float], std: Sequence[float], seed: int,
                   device: str | torch.device = "cpu", batch_size: int = 32,
                   progress: bool = True) -> torch.Tensor | None:
    """The frozen ``trunk``'s output for every image under every view: float32
    (views, n, C, H, W), computed once and shared by every fold of a run.

    View ``v`` is flip/turn ``v`` of :func:`dihedral`; views after the first also get a
    random brightness and contrast from the settings' ranges (seeded: a run is
    reproducible). Fewer views when ``settings.views`` of them would exceed
    :data:`MAX_CACHE_BYTES`; ``None`` when not even two fit (train on pixels then).
    """
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    trunk = trunk.to(device).eval()
    first = trunk(_normalise(pixels[:1].to(device), mean_t, std_t))
    views = min(settings.views, MAX_CACHE_BYTES // max(1, first.numel() * 4 * len(pixels)))
    if views < min(2, settings.views):
        return None
    out = torch.empty((views, len(pixels), *first.shape[1:]), dtype=torch.float32,
                      device=device)
    jitter = v2.ColorJitter(brightness=tuple(settings.brightness),
                            contrast=tuple(settings.contrast))
    bar = tqdm(total=views * len(pixels), desc="feature cache", unit="image",
               disable=not progress, leave=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for view in range(views):
            for part in batches(len(pixels), batch_size):
                images = dihedral(pixels[part], view)
                if view:
                    images = torch.stack([jitter(image) for image in images])
                out[view, part] = trunk(_normalise(images.to(device), mean_t, std_t))
                bar.update(len(images))
    bar.close()
    return out


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
                  std: torch.Tensor, batch_size: int = 32,
                  features: bool = False) -> np.ndarray:
    """Softmax of an un-augmented forward: (n, n_classes), float32. ``features``: ``pixels``
    are already the input of ``member`` (cached trunk features), not uint8 images."""
    was_training = member.training
    member.eval()
    device = next(member.parameters()).device
    chunks = [member(pixels[part].to(device) if features
                     else _normalise(pixels[part].to(device), mean, std)).softmax(1)
              for part in batches(len(pixels), batch_size)]
    member.train(was_training)
    return torch.cat(chunks).float().cpu().numpy()


def _train_mode(member: nn.Module, freeze_batchnorm: bool) -> None:
    """Train mode, with batch-norm layers frozen (running statistics and all) if asked."""
    member.train()
    for module in member.modules() if freeze_batchnorm else ():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _save_atomic(state: dict[str, Any], path: Path) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)  # a link planted there is removed, never written through
    torch.save(state, partial)
    partial.replace(path)


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "best": None, "best_accuracy": -1.0, "best_epoch": 0, "bad": 0,
            "val_probs": None, "curve": []}


def _start(member: nn.Sequential, settings: FinetuneSettings, *, seed: int, epochs: int,
           steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR,
                                torch.Generator]:
    """Seeded random numbers, a new optimiser and schedule, and the batch-order generator."""
    torch.manual_seed(seed * 1009 + distributed.rank())  # augmentation differs per rank
    order = torch.Generator().manual_seed(seed)  # batches agree across ranks
    body, head = member[0], member[1]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in body.parameters() if p.requires_grad], "lr": settings.lr},
         {"params": list(head.parameters()), "lr": settings.head_lr}],
        weight_decay=settings.weight_decay)
    scheduler = warmup_cosine(optimizer, settings.warmup_epochs * steps, epochs * steps)
    return optimizer, scheduler, order


def _state_file(state: dict[str, Any], member: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler,
                order: torch.Generator) -> dict[str, Any]:
    """What a state file holds: tensors and plain values, readable with weights_only."""
    probs = state["val_probs"]
    return {**state, "format": STATE_FORMAT,
            "val_probs": None if probs is None else torch.from_numpy(np.array(probs)),
            "model": member.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
            "order": order.get_state()}


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file :func:`fit` wrote, loaded without running any code in it.

    ``torch.load(weights_only=True)`` refuses anything but tensors and plain values; a file
    it refuses, or one of another format, gives an :class:`UnusableStateWarning` naming it
    and ``None``.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a broken or hostile file can fail anywhere in the unpickler
        _ignore(path, f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}")
        return None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        _ignore(path, f"format {found!r}, this Loupe reads format {STATE_FORMAT}")
        return None
    return saved


def _ignore(path: Path, why: str) -> None:
    warnings.warn(f"ignored the saved training state {str(path)!r} ({why}); this part "
                  "trains from scratch and the file is replaced after its first epoch. "
                  "Loupe reads only tensors and plain values from a project folder, never "
                  "code.", UnusableStateWarning, stacklevel=4)


def _check_weights(weights: Any, member: nn.Module, what: str) -> None:
    expected = member.state_dict()
    if not isinstance(weights, dict) or list(weights) != list(expected):
        raise ValueError(f"{what}: not this model's state dict")
    for name, tensor in weights.items():
        if (not isinstance(tensor, torch.Tensor) or tensor.shape != expected[name].shape
                or tensor.dtype != expected[name].dtype):
            raise ValueError(f"{what}: {name!r} is not a tensor of this model's shape")


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer) -> None:
    fresh = optimizer.state_dict()
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if (not isinstance(groups, list) or not isinstance(saved.get("state"), dict)
            or [g.get("params") if isinstance(g, dict) else None for g in groups]
            != [g["params"] for g in fresh["param_groups"]]):
        raise ValueError("optimizer: not this model's optimiser state")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, entry in saved["state"].items():
        if not (isinstance(index, int) and 0 <= index < len(params)
                and isinstance(entry, dict)):
            raise ValueError("optimizer: state of an unknown parameter")
        for value in entry.values():
            if isinstance(value, torch.Tensor) and value.ndim and \
                    value.shape != params[index].shape:
                raise ValueError("optimizer: moments of another shape than the parameters")


def _check_fields(saved: dict[str, Any], scheduler: torch.optim.lr_scheduler.LRScheduler,
                  n_val: int) -> None:
    for name in ("epoch", "best_epoch", "bad"):
        value = saved[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: {value!r} is not a count")
    if not isinstance(saved["best_accuracy"], float):
        raise ValueError("best_accuracy is not a number")
    if not (isinstance(saved["curve"], list)
            and all(isinstance(row, dict) for row in saved["curve"])):
        raise ValueError("curve is not a list of records")
    probs = saved["val_probs"]
    if probs is not None and not (isinstance(probs, torch.Tensor) and probs.ndim == 2
                                  and len(probs) == n_val and probs.is_floating_point()):
        raise ValueError("val_probs are not one row of probabilities per held-out image")
    for name in ("rng", "order"):
        value = saved[name]
        if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8
                and value.ndim == 1):
            raise ValueError(f"{name} is not a random-number state")
    if not isinstance(saved["scheduler"], dict) or \
            set(saved["scheduler"]) != set(scheduler.state_dict()):
        raise ValueError("scheduler: not this schedule's state")


def _restore(saved: dict[str, Any], member: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, order: torch.Generator,
             n_val: int) -> dict[str, Any]:
    """Check a loaded state against the model, then put it in place; the loop's state."""
    _check_weights(saved["model"], member, "model")
    if saved["best"] is not None:
        _check_weights(saved["best"], member, "best")
    _check_optimizer(saved["optimizer"], optimizer)
    _check_fields(saved, scheduler, n_val)
    member.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    order.set_state(saved["order"])
    state = {k: saved[k] for k in _fresh_state()}
    if state["val_probs"] is not None:
        state["val_probs"] = state["val_probs"].numpy()
    return state


def fit(member: nn.Sequential, pixels: torch.Tensor, labels: np.ndarray, *,
        settings: FinetuneSettings, epochs: int, seed: int, mean: Sequence[float],
        std: Sequence[float], val_pixels: torch.Tensor | None = None,
        val_labels: np.ndarray | None = None, state_path: Path | None = None,
        cancel: CancelFlag | None = None, desc: str = "fine-tune",
        progress: bool = True, features: torch.Tensor | None = None,
        val_features: torch.Tensor | None = None, device: str | torch.device = "cpu",
        bar: Any = None) -> FitResult:
    """Fine-tune ``member`` on uint8 images (n, 3, S, S) with integer labels (n,).

    With validation images and a ``settings.patience``, the weights of the epoch with the
    highest validation accuracy are kept (ties: the later epoch, as the cosine schedule
    anneals) and training stops after ``patience`` epochs below that accuracy; otherwise all
    ``epochs`` run, the last weights are kept and validated once. (Validation loss picked
    epochs too early: on folds of ten images it rises with the confidence of one mistake;
    see docs/benchmarks.md.) ``state_path``: where
    the state after each epoch is kept for resuming (read first if it exists, without
    running code; a file that is not a state of this fit is ignored with an
    :class:`UnusableStateWarning`).

    ``features`` (views, n, C, H, W): the body's frozen trunk already run on every image
    (:func:`trunk_features` with the same ``settings``); only the upper stages of
    :func:`split_body` and the head train, each step on a random view of each image
    (``pixels`` is then unused), validating on ``val_features`` (n_val, C, H, W). ``device``:
    where the network trains (the member comes back on the CPU). ``bar``: a progress bar
    the epochs advance (one for a whole run, with the time left), instead of one per fit.
    """
    device = torch.device(device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    member = member.to(device=device, memory_format=torch.channels_last)
    if not 0.0 <= settings.trainable <= 1.0:
        raise ValueError(f"trainable must be between 0 and 1, got {settings.trainable!r}.")
    top = None
    if features is not None:
        parts = split_body(member[0], settings.frozen_blocks)
        if parts is None:
            raise ValueError("features= needs an EfficientNet-style body and "
                             "settings.frozen_blocks between 1 and its stages - 1.")
        top = parts[1]
        trained = {id(p) for p in top.parameters()}
        for parameter in member[0].parameters():
            parameter.requires_grad_(id(parameter) in trained)
        pixels = features
        n_images = features.shape[1]
    else:
        parameters = list(member[0].parameters())
        frozen = len(parameters) - round(settings.trainable * len(parameters))
        for i, parameter in enumerate(parameters):
            parameter.requires_grad_(i >= frozen)
        n_images = len(pixels)
    world = distributed.world_size()
    steps = max(1, n_images // settings.batch_size + bool(n_images % settings.batch_size))
    optimizer, scheduler, order = _start(member, settings, seed=seed, epochs=epochs,
                                         steps=steps)
    state = _fresh_state()
    saved = read_state(state_path) if state_path is not None and state_path.is_file() else None
    if saved is not None:
        initial = {k: v.clone() for k, v in member.state_dict().items()}
        try:
            held_out = val_pixels if top is None else val_features
            state = _restore(saved, member, optimizer, scheduler, order,
                             0 if held_out is None else len(held_out))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            _ignore(state_path, str(error))
            member.load_state_dict(initial)
            optimizer, scheduler, order = _start(member, settings, seed=seed, epochs=epochs,
                                                 steps=steps)
    model: nn.Module = member
    if top is not None:
        model = nn.Sequential(top, member[1])  # the body's upper stages and the head
    elif distributed.active():
        model = nn.parallel.DistributedDataParallel(member, broadcast_buffers=False)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    augment = augmentation(settings)
    own_bar = bar is None
    if own_bar:
        bar = tqdm(total=epochs, initial=state["epoch"], desc=desc, unit="epoch",
                   disable=not progress, leave=False)
    else:
        bar.update(state["epoch"])  # epochs an interrupted run already finished
    try:
        patience = epochs if settings.patience is None else settings.patience
        while state["epoch"] < epochs and state["bad"] < patience:
            _train_mode(member, settings.freeze_batchnorm)
            permutation = torch.randperm(n_images, generator=order)
            for batch in batches(n_images, settings.batch_size, order=permutation,
                                 cancel=cancel, cancelled="training cancelled; finished "
                                 "epochs are kept, resume with train(..., resume=True)"):
                if len(batch) < world:
                    continue  # every rank needs a share
                batch = batch[distributed.rank()::world]
                if top is not None:
                    views = torch.randint(0, len(features), (len(batch),))
                    x = features[views, batch].to(device).contiguous(
                        memory_format=torch.channels_last)
                else:
                    images = torch.stack([augment(pixels[i]) for i in batch])
                    x = _normalise(images.to(device), mean_t, std_t)
                loss = F.cross_entropy(model(x), y[batch.to(device)],
                                       label_smoothing=settings.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            state["epoch"] += 1
            held_out = val_pixels if top is None else val_features
            last = state["epoch"] == epochs  # without a patience only the last one counts
            if held_out is not None and len(held_out) and (settings.patience or last):
                probs = probabilities(member if top is None else model, held_out, mean_t,
                                      std_t, features=top is not None)
                truth = np.asarray(val_labels, dtype=np.int64)
                val_loss = distributed.mean(float(F.nll_loss(
                    torch.from_numpy(np.log(np.clip(probs, 1e-12, None))),
                    torch.from_numpy(truth))))
                accuracy = distributed.mean(float((probs.argmax(1) == truth).mean()))
                state["curve"].append({"epoch": state["epoch"], "val_loss": val_loss,
                                       "val_accuracy": accuracy})
                if settings.patience is None:  # the last epoch is the one kept
                    state.update(best_accuracy=accuracy, best_epoch=state["epoch"],
                                 val_probs=probs)
                elif accuracy >= state["best_accuracy"]:  # ties: the later epoch
                    state.update(best=copy.deepcopy(member.state_dict()),
                                 best_accuracy=accuracy, best_epoch=state["epoch"], bad=0,
                                 val_probs=probs)
                else:
                    state["bad"] += 1
                bar.set_postfix(val_acc=f"{accuracy:.3f}", val_loss=f"{val_loss:.3f}")
            bar.update(1)
            if state_path is not None and distributed.rank() == 0:
                _save_atomic(_state_file(state, member, optimizer, scheduler, order),
                             state_path)
            distributed.barrier()
    finally:
        if own_bar:
            bar.close()
    if state["best"] is not None:
        member.load_state_dict(state["best"])
    member = member.to(device="cpu", memory_format=torch.contiguous_format).eval()
    for parameter in member.parameters():
        parameter.requires_grad_(True)
    return FitResult(member=member, best_epoch=state["best_epoch"] or state["epoch"],
                     epochs_run=state["epoch"], val_probs=state["val_probs"],
                     curve=state["curve"])


__all__ = ["MAX_CACHE_BYTES", "STATE_FORMAT", "CancelFlag", "FinetuneSettings", "FitResult",
           "TrainingCancelled", "UnusableStateWarning", "augmentation", "dihedral", "fit",
           "load_pixels", "probabilities", "read_state", "split_body", "trunk_features"]
