"""Shared pieces of the synthesis package: the result type, input checks and recipes.

Everything here trusts nothing at the public entry (:func:`check_image`, :func:`check_rng`,
:class:`Recipe` overrides) and everything after it works on float images in ``[0, 1]`` of
shape ``(H, W, C)`` with ``C`` 1 (grey) or 3 (colour).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Smallest accepted image side, in pixels.
MIN_SIDE = 16

#: Rec. 601 luma weights, used to turn colour into grey.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True, eq=False)
class Painted:
    """A synthesised image, where it changed, and the recipe that made it.

    Attributes
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        The result, with the shape and dtype of the input image.
    mask : ndarray of bool, shape (H, W)
        Where the defect is; pixels outside it are unchanged (``augment`` returns all True).
    params : dict
        Plain JSON-able values actually used. Passing them back as ``**overrides`` with any
        generator reproduces ``image`` exactly.
    """

    image: np.ndarray
    mask: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def check_image(image: Any, name: str = "image") -> np.ndarray:
    """Validate a uint8 grey ``(H, W)`` or colour ``(H, W, 3)`` image and return it.

    Raises
    ------
    ValueError
        If ``image`` is not a numpy array, not uint8, has another shape or a side below
        :data:`MIN_SIDE`.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"{name} must be a numpy array, got {type(image).__name__}; "
            "pass np.asarray(pil_image)."
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must have dtype uint8, got {image.dtype}; convert floats in [0, 1] "
            "with np.round(x * 255).astype(np.uint8)."
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(
            f"{name} must have shape (H, W) for grey or (H, W, 3) for colour, got "
            f"{image.shape}; drop an alpha channel with {name}[..., :3]."
        )
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"{name} is too small: shape {image.shape}, both sides must be at least "
            f"{MIN_SIDE} px; upsample it first."
        )
    return image


def check_rng(rng: Any) -> np.random.Generator:
    """Return ``rng`` if it is a ``numpy.random.Generator``, else raise ``ValueError``."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
            "pass np.random.default_rng(seed)."
        )
    return rng


def plain(value: Any) -> Any:
    """Convert numpy scalars, arrays and tuples to plain Python (JSON-able) values."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class Recipe:
    """Collect a painter's parameters: an override when given, else a draw from ``rng``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    overrides : mapping
        Caller's ``**overrides``; keys outside ``accepted`` raise ``ValueError``.
    accepted : sequence of str
        Parameter names the painter understands, in the order they are documented.
    owner : str
        Function name used in error messages.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        overrides: Mapping[str, Any],
        accepted: Sequence[str],
        owner: str,
    ) -> None:
        unknown = sorted(set(overrides) - set(accepted))
        if unknown:
            raise ValueError(
                f"{owner} got unknown override(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted)}."
            )
        self.rng = rng
        self.owner = owner
        self.params: dict[str, Any] = {}
        self._overrides = dict(overrides)

    def given(self, name: str) -> bool:
        """Whether the caller overrode ``name``."""
        return name in self._overrides

    def take(self, name: str, draw: Callable[[np.random.Generator], Any]) -> Any:
        """Record and return the override for ``name``, or ``draw(rng)`` if none."""
        value = self._overrides[name] if name in self._overrides else draw(self.rng)
        self.params[name] = plain(value)
        return self.params[name]

    def number(
        self, name: str, draw: Callable[[np.random.Generator], Any], lo: float, hi: float
    ) -> float:
        """Like :meth:`take` for a float that must lie in ``[lo, hi]``."""
        value = self.take(name, draw)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not lo <= value <= hi
        ):
            raise ValueError(
                f"{self.owner}: {name} must be a number in [{lo}, {hi}], got {value!r}."
            )
        self.params[name] = float(value)
        return float(value)

    def vector(
        self, name: str, draw: Callable[[np.random.Generator], Any], length: int
    ) -> list[float]:
        """Like :meth:`take` for a list of ``length`` finite floats."""
        value = self.take(name, draw)
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            arr = np.empty(0)
        if arr.shape != (length,) or not np.all(np.isfinite(arr)):
            raise ValueError(
                f"{self.owner}: {name} must be a list of {length} finite numbers, "
                f"got {value!r}."
            )
        self.params[name] = [float(v) for v in arr]
        return self.params[name]

    def choice(
        self, name: str, draw: Callable[[np.random.Generator], Any], choices: Sequence[str]
    ) -> str:
        """Like :meth:`take` for one of ``choices``."""
        value = self.take(name, draw)
        if value not in choices:
            raise ValueError(
                f"{self.owner}: {name} must be one of {', '.join(choices)}, got {value!r}."
            )
        return value


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)`` or ``(H, W, 3)`` to float32 ``(H, W, C)`` in ``[0, 1]``."""
    f = image.astype(np.float32) / 255.0
    return f[..., None] if f.ndim == 2 else f


def luma(f: np.ndarray) -> np.ndarray:
    """Luminance ``(H, W)`` of a float ``(H, W, C)`` image."""
    return f[..., 0] if f.shape[2] == 1 else f @ LUMA


def window(
    lo: Sequence[float], hi: Sequence[float], shape: tuple[int, ...]
) -> tuple[slice, slice]:
    """Clipped ``(rows, cols)`` slices of the box ``lo``..``hi`` given as ``(x, y)``."""
    x0 = min(max(math.floor(lo[0]), 0), shape[1] - 1)
    y0 = min(max(math.floor(lo[1]), 0), shape[0] - 1)
    x1 = min(max(math.ceil(hi[0]) + 1, x0 + 1), shape[1])
    y1 = min(max(math.ceil(hi[1]) + 1, y0 + 1), shape[0])
    return slice(y0, y1), slice(x0, x1)


def background(lum: np.ndarray, rows: slice, cols: slice, pad: int) -> tuple[float, float]:
    """Mean and robust spread (half the 16–84 % range) of ``lum`` around a window."""
    r = slice(max(rows.start - pad, 0), rows.stop + pad)
    c = slice(max(cols.start - pad, 0), cols.stop + pad)
    patch = lum[r, c]
    p16, p84 = np.percentile(patch, [16, 84])
    return float(patch.mean()), float(p84 - p16) / 2


def finish(
    image: np.ndarray, out: np.ndarray, weight: np.ndarray, cutoff: float, params: dict
) -> Painted:
    """Quantise ``out`` back to uint8 inside ``weight >= cutoff``; keep ``image`` elsewhere.

    The mask is never empty: if nothing reaches ``cutoff`` it is the pixel where ``weight``
    peaks.
    """
    mask = weight >= cutoff
    if not mask.any():
        mask[np.unravel_index(int(np.argmax(weight)), weight.shape)] = True
    q = np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
    q = q[..., 0] if image.ndim == 2 else q
    sel = mask if image.ndim == 2 else mask[..., None]
    return Painted(image=np.where(sel, q, image), mask=mask, params=params)
