"""Copy the defect of one image onto another with Poisson (seamless) cloning.

:func:`defect_region` finds the part of an image that stands out from its own smoothed
background; :func:`paste` crops it, scales and rotates it, and blends its gradient field
into a base image by solving the Poisson equation on the pasted region (sparse LU, one
factorisation for all channels), so the defect keeps its shape while its level and colour
follow the base.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from scipy import ndimage
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import splu

from workbench.improve.synthesis._core import (
    LUMA,
    Painted,
    check_image,
    check_rng,
    to_float,
)

__all__ = ["defect_region", "paste"]

_SCALES = (0.7, 1.3)


def defect_region(image: np.ndarray) -> np.ndarray:
    """Where an image differs most from its own smoothed background.

    The colour distance from a large median background (computed at low resolution) is
    lightly smoothed and thresholded at ``max(median + 5 MAD, 0.35 max)``;
    the connected component with the largest summed excess is kept and dilated a little.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        An image showing one defect; both sides >= 16.

    Returns
    -------
    ndarray of bool, shape (H, W)
        The defect region; never empty (a flat image gives a small central disc).

    Raises
    ------
    ValueError
        If ``image`` is not a uint8 grey or colour image of at least 16 px a side.
    """
    check_image(image)
    f = to_float(image)
    h, w = f.shape[:2]
    short = min(h, w)
    factor = min(1.0, 64.0 / short)
    small = ndimage.zoom(f, (factor, factor, 1), order=1) if factor < 1 else f
    size = max(3, int(0.35 * min(small.shape[:2])) | 1)
    back = ndimage.median_filter(small, size=(size, size, 1), mode="reflect")
    if factor < 1:
        back = ndimage.zoom(back, (h / back.shape[0], w / back.shape[1], 1), order=1)
    dist = np.sqrt(((f - back) ** 2).sum(axis=2))
    diff = ndimage.gaussian_filter(dist, max(1.0, short / 64))
    med = float(np.median(diff))
    mad = float(np.median(np.abs(diff - med))) * 1.4826
    top = float(diff.max())
    thr = max(med + 5 * mad, 0.35 * top)
    labels, n = ndimage.label(diff > thr) if top > 1e-6 else (None, 0)
    if n:
        excess = ndimage.sum_labels(diff - thr, labels, index=np.arange(1, n + 1))
        region = labels == 1 + int(np.argmax(excess))
    else:
        region = np.zeros((h, w), bool)
        region[h // 2, w // 2] = True
    grow = max(2, round(short / 64))
    disc = np.hypot(*np.mgrid[-grow : grow + 1, -grow : grow + 1]) <= grow
    return ndimage.binary_dilation(region, structure=disc)


def _match_channels(source: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Float ``source`` with the channel count of ``base`` (grey is replicated, colour lumas)."""
    f = to_float(source)
    if base.ndim == 3 and f.shape[2] == 1:
        return np.repeat(f, 3, axis=2)
    if base.ndim == 2 and f.shape[2] == 3:
        return (f @ LUMA)[..., None]
    return f


def _int_list(value: Any, length: int, name: str) -> list[int]:
    arr = np.asarray(value)
    if arr.shape != (length,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"paste: {name} must be a list of {length} ints, got {value!r}.")
    return [int(v) for v in arr]


def _crop_box(region: np.ndarray, given: Any) -> list[int]:
    """``[top, left, bottom, right]`` (exclusive ends) of the region plus a margin."""
    h, w = region.shape
    if given is not None:
        top, left, bottom, right = _int_list(given, 4, "crop_box")
        if not (0 <= top < bottom <= h and 0 <= left < right <= w) or min(
            bottom - top, right - left
        ) < 3:
            raise ValueError(
                f"paste: crop_box must be [top, left, bottom, right] inside the source "
                f"({h}x{w}) and at least 3 px a side, got {given!r}."
            )
        return [top, left, bottom, right]
    ys, xs = np.nonzero(region)
    margin = 2 + round(0.1 * max(np.ptp(ys), np.ptp(xs)))
    return [
        max(int(ys.min()) - margin, 0),
        max(int(xs.min()) - margin, 0),
        min(int(ys.max()) + margin + 1, h),
        min(int(xs.max()) + margin + 1, w),
    ]


def _transform(
    patch: np.ndarray, mask: np.ndarray, scale: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and rotate (counter-clockwise, degrees) a float patch and its mask."""
    h, w = mask.shape
    shape = _rotated_shape(h, w, scale, angle)
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    matrix = np.array([[cos, sin], [-sin, cos]]) / scale
    centre_out = (np.array(shape) - 1) / 2
    offset = (np.array([h, w]) - 1) / 2 - matrix @ centre_out
    out = np.stack(
        [
            ndimage.affine_transform(patch[..., c], matrix, offset, shape, order=1, mode="nearest")
            for c in range(patch.shape[2])
        ],
        axis=-1,
    )
    moved = ndimage.affine_transform(mask.astype(np.float32), matrix, offset, shape, order=1)
    return out, moved > 0.5


def _rotated_shape(h: int, w: int, scale: float, angle: float) -> tuple[int, int]:
    """Canvas ``(rows, cols)`` holding an ``h`` x ``w`` patch scaled and rotated, plus 1 px."""
    theta = math.radians(angle)
    cos, sin = abs(math.cos(theta)), abs(math.sin(theta))
    return (
        math.ceil(scale * (h * cos + w * sin) - 1e-6) + 2,
        math.ceil(scale * (w * cos + h * sin) - 1e-6) + 2,
    )


def _poisson(target: np.ndarray, guide: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Solve ``lap(f) = lap(guide)`` on ``omega`` with ``f = target`` around it.

    ``omega`` must not touch the array border. Arrays are float ``(H, W, C)``.
    """
    ys, xs = np.nonzero(omega)
    n = len(ys)
    index = np.full(omega.shape, -1, np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    rhs = np.zeros((n, target.shape[2]), np.float64)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        rhs += guide[ys, xs] - guide[ny, nx]
        inside = omega[ny, nx]
        rows.append(np.nonzero(inside)[0])
        cols.append(index[ny[inside], nx[inside]])
        vals.append(np.full(int(inside.sum()), -1.0))
        rhs[~inside] += target[ny[~inside], nx[~inside]]
    matrix = csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    out = target.astype(np.float64).copy()
    out[ys, xs] = splu(matrix).solve(rhs)
    return out


def _copy(target: np.ndarray, guide: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Plain copy of ``guide`` into ``target`` on ``omega``."""
    return np.where(omega[..., None], guide, target)


_BLENDS = {"poisson": _poisson, "copy": _copy}


def paste(
    base: np.ndarray,
    source: np.ndarray,
    rng: np.random.Generator,
    *,
    scale: float | None = None,
    angle: float | None = None,
    position: tuple[int, int] | list[int] | None = None,
    crop_box: list[int] | None = None,
    blend: Literal["poisson", "copy"] = "poisson",
) -> Painted:
    """Paste the defect of ``source`` into ``base`` with seamless (Poisson) cloning.

    The source's :func:`defect_region` is cropped with a margin, scaled, rotated and placed
    fully inside ``base``; inside the region the result has the source's gradients, at its
    border it meets the base exactly.

    Parameters
    ----------
    base : ndarray of uint8, shape (H, W) or (H, W, 3)
        Image to paste into; its shape, dtype and channels are kept.
    source : ndarray of uint8, shape (h, w) or (h, w, 3)
        Image showing a defect; any size; converted to ``base``'s channels.
    rng : numpy.random.Generator
        Source of the scale, angle and position not given.
    scale : float, optional
        Zoom of the crop, > 0; drawn from [0.7, 1.3] (shrunk if needed to fit ``base``).
    angle : float, optional
        Counter-clockwise rotation in degrees; drawn from [0, 360).
    position : (row, col), optional
        Top-left corner of the transformed patch in ``base``; drawn so it fits.
    crop_box : [top, left, bottom, right], optional
        Crop of ``source`` (exclusive ends); defaults to the defect region plus a margin.
    blend : {"poisson", "copy"}, default="poisson"
        ``"poisson"`` clones the gradients seamlessly; ``"copy"`` pastes the pixels as they
        are (a baseline that shows the seam).

    Returns
    -------
    Painted
        The blended image, the pasted region in ``base`` coordinates, and params
        ``scale``, ``angle``, ``position``, ``crop_box`` and ``blend``.

    Raises
    ------
    ValueError
        If an image is invalid, ``blend`` is unknown, or ``scale``, ``position`` or
        ``crop_box`` do not fit.
    """
    if blend not in _BLENDS:
        raise ValueError(f"paste: unknown blend {blend!r}; expected one of {', '.join(_BLENDS)}.")
    check_image(base, "base")
    check_image(source, "source")
    check_rng(rng)
    src = _match_channels(source, base)
    region = defect_region(source)
    top, left, bottom, right = box = _crop_box(region, crop_box)
    patch, mask = src[top:bottom, left:right], region[top:bottom, left:right]
    if not mask.any():
        mask = np.ones_like(mask)
    h, w = mask.shape
    bh, bw = base.shape[:2]
    if angle is None:
        angle = float(rng.uniform(0.0, 360.0))
    elif isinstance(angle, bool) or not isinstance(angle, int | float) or not math.isfinite(angle):
        raise ValueError(f"paste: angle must be a finite number of degrees, got {angle!r}.")
    theta = math.radians(angle)
    cos, sin = abs(math.cos(theta)), abs(math.sin(theta))
    fit = min((bh - 3) / (h * cos + w * sin), (bw - 3) / (w * cos + h * sin))
    if scale is None:
        scale = min(float(rng.uniform(*_SCALES)), fit)
    elif isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"paste: scale must be a number > 0, got {scale!r}.")
    shape = _rotated_shape(h, w, scale, angle)
    if shape[0] > bh or shape[1] > bw:
        raise ValueError(
            f"paste: scale={scale} makes the rotated patch {shape[0]}x{shape[1]} px, larger "
            f"than base ({bh}x{bw}); pass scale <= {fit:.3f} or leave it to be drawn."
        )
    if position is None:
        position = [int(rng.integers(0, bh - shape[0] + 1)),
                    int(rng.integers(0, bw - shape[1] + 1))]
    row, col = _int_list(position, 2, "position")
    if not (0 <= row <= bh - shape[0] and 0 <= col <= bw - shape[1]):
        raise ValueError(
            f"paste: position {[row, col]} puts the {shape[0]}x{shape[1]} patch outside base "
            f"({bh}x{bw}); row must be in [0, {bh - shape[0]}], col in [0, {bw - shape[1]}]."
        )
    guide, omega = _transform(patch, mask, float(scale), float(angle))
    omega[[0, -1], :] = False
    omega[:, [0, -1]] = False
    if not omega.any():
        omega[shape[0] // 2, shape[1] // 2] = True
    rows, cols = slice(row, row + shape[0]), slice(col, col + shape[1])
    target = to_float(base)[rows, cols]
    blended = np.clip(_BLENDS[blend](target, guide, omega), 0.0, 1.0)
    q = np.rint(blended * 255).astype(np.uint8)
    out = base.copy()
    region_out = np.zeros((bh, bw), bool)
    region_out[rows, cols] = omega
    window_out = out[rows, cols]
    window_out[omega] = q[omega][:, 0] if base.ndim == 2 else q[omega]
    params = {"scale": float(scale), "angle": float(angle), "position": [row, col],
              "crop_box": box, "blend": blend}
    return Painted(image=out, mask=region_out, params=params)
