"""Procedural defect painters: scratch, pit marks, dent, discoloration on any real image.

Each painter takes a uint8 grey ``(H, W)`` or colour ``(H, W, 3)`` image of any size and a
``numpy.random.Generator`` and returns a :class:`~workbench.improve.synthesis.Painted`. Sizes are
fractions of the image's short side and positions fractions of its width and height, so a
recipe scales with the image. Contrast is set from the local background (its mean and
spread), so a defect stays visible on dark, bright and textured surfaces. Every random
choice is recorded in ``params``; ``painter(image, rng, **params)`` replays it exactly.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> out = paint("scratch", image, rng)
>>> again = paint("scratch", image, np.random.default_rng(1), **out.params)
>>> bool((again.image == out.image).all())
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from workbench.improve.synthesis._core import (
    Painted,
    Recipe,
    background,
    check_image,
    check_rng,
    finish,
    luma,
    to_float,
    window,
)

__all__ = [
    "PAINTERS",
    "DefectKind",
    "paint",
    "paint_dent",
    "paint_discoloration",
    "paint_pit_marks",
    "paint_scratch",
]

DefectKind = Literal["scratch", "pit_mark", "dent", "discoloration"]

_SCRATCH_FIELDS = ("center", "angle", "length", "bend", "width", "taper")


def _start(
    image: np.ndarray, rng: np.random.Generator, overrides: dict, accepted: tuple, owner: str
) -> tuple[np.ndarray, np.ndarray, Recipe, int]:
    """Validate inputs; return the float image, its luminance, the recipe and short side."""
    check_image(image)
    check_rng(rng)
    f = to_float(image)
    return f, luma(f), Recipe(rng, overrides, accepted, owner), min(image.shape[:2])


def _pick_side(rng: np.random.Generator, mean: float, want: float, p_bright: float) -> str:
    """Draw ``"bright"``/``"dark"``; flip to the other when this one lacks the headroom."""
    side = "bright" if rng.random() < p_bright else "dark"
    room = {"bright": 1.0 - mean, "dark": mean}
    other = "dark" if side == "bright" else "bright"
    return other if room[side] < want and room[other] > room[side] else side


# --- scratch ---------------------------------------------------------------------------------

def _draw_scratch(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "center": rng.uniform(0.25, 0.75, 2).tolist(),
        "angle": float(rng.uniform(0.0, 180.0)),
        "length": float(rng.uniform(0.35, 0.8)),
        "bend": float(rng.uniform(-0.15, 0.15)),
        "width": float(rng.uniform(0.006, 0.012)),
        "taper": float(rng.uniform(0.3, 0.9)) if rng.random() < 0.5 else 0.0,
    }


def _check_scratches(value: Any) -> list[dict[str, Any]]:
    ok = isinstance(value, list) and len(value) > 0
    for item in value if ok else ():
        ok = ok and isinstance(item, dict) and set(item) == set(_SCRATCH_FIELDS)
        ok = ok and len(np.atleast_1d(item["center"])) == 2
        ok = ok and all(np.all(np.isfinite(np.asarray(item[k], float))) for k in _SCRATCH_FIELDS)
    if not ok:
        raise ValueError(
            "paint_scratch: scratches must be a non-empty list of dicts with keys "
            f"{', '.join(_SCRATCH_FIELDS)}, got {value!r}."
        )
    return value


def _bezier(start: np.ndarray, control: np.ndarray, end: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end


def _polyline_distance(
    pts: np.ndarray, rows: slice, cols: slice, reach: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of window pixels to polyline ``pts`` (n, 2) as (x, y), and arc parameter t.

    Pixels farther than ``reach`` from every segment keep distance ``inf``.
    """
    h, w = rows.stop - rows.start, cols.stop - cols.start
    dist = np.full((h, w), np.inf, np.float32)
    tpar = np.zeros((h, w), np.float32)
    n = len(pts) - 1
    for i, (a, b) in enumerate(itertools.pairwise(pts)):
        lo = np.minimum(a, b) - reach - [cols.start, rows.start]
        hi = np.maximum(a, b) + reach - [cols.start, rows.start]
        r, c = window(lo, hi, (h, w))
        yy, xx = np.mgrid[r, c].astype(np.float32)
        xx += cols.start
        yy += rows.start
        ab = b - a
        px, py = xx - a[0], yy - a[1]
        t = np.clip((px * ab[0] + py * ab[1]) / (ab @ ab + 1e-9), 0.0, 1.0)
        d = np.hypot(px - t * ab[0], py - t * ab[1])
        closer = d < dist[r, c]
        dist[r, c] = np.where(closer, d, dist[r, c])
        tpar[r, c] = np.where(closer, (i + t) / n, tpar[r, c])
    return dist, tpar


def _scratch_profile(spec: dict[str, Any], shape: tuple[int, ...], short: int) -> tuple:
    """Window and anti-aliased profile in [0, ~1.1] of one scratch."""
    h, w = shape[:2]
    centre = np.array([spec["center"][0] * w, spec["center"][1] * h])
    phi = math.radians(spec["angle"])
    direction = np.array([math.cos(phi), math.sin(phi)])
    normal = np.array([-direction[1], direction[0]])
    length = spec["length"] * short
    start, end = centre - direction * length / 2, centre + direction * length / 2
    control = centre + normal * 2 * spec["bend"] * length
    pts = _bezier(start, control, end, int(np.clip(length / 4, 8, 64)))
    width = max(spec["width"] * short, 0.7)
    reach = 2.0 * width + 3.0
    rows, cols = window(pts.min(axis=0) - reach, pts.max(axis=0) + reach, shape)
    dist, t = _polyline_distance(pts, rows, cols, reach)
    taper = float(np.clip(spec["taper"], 0.0, 0.95))
    wt = width * (1 - taper * t)
    core = np.clip(wt / 2 + 0.5 - dist, 0.0, 1.0)
    halo = np.exp(-((dist / (0.6 * wt + 0.8)) ** 2))
    return rows, cols, (core + 0.2 * halo) * (1 - 0.5 * taper * t)


def paint_scratch(image: np.ndarray, rng: np.random.Generator, **overrides: Any) -> Painted:
    """Paint one or two thin curved anti-aliased scratches, bright or dark.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        Surface to paint on; any size with both sides >= 16.
    rng : numpy.random.Generator
        Source of every random choice not given in ``overrides``.
    **overrides
        ``scratches`` (list of dicts with ``center`` (x, y) as fractions of width and
        height, ``angle`` in degrees, ``length``, ``width`` as fractions of the short side,
        ``bend`` as a fraction of the length, ``taper`` in [0, 0.95]), ``polarity``
        (``"bright"`` or ``"dark"``) and ``contrast`` (luminance change in [0, 1]).

    Returns
    -------
    Painted
        The image, the mask of the scratch (core and halo) and the params used.
    """
    f, lum, recipe, short = _start(
        image, rng, overrides, ("scratches", "polarity", "contrast"), "paint_scratch"
    )
    specs = _check_scratches(recipe.take(
        "scratches", lambda r: [_draw_scratch(r) for _ in range(1 if r.random() < 0.75 else 2)]
    ))
    weight = np.zeros(lum.shape, np.float32)
    for spec in specs:
        rows, cols, prof = _scratch_profile(spec, lum.shape, short)
        weight[rows, cols] = np.maximum(weight[rows, cols], prof)
    ys, xs = np.nonzero(weight > 0.05)
    if len(ys):
        rows, cols = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    else:
        rows, cols = slice(0, lum.shape[0]), slice(0, lum.shape[1])
    mean, spread = background(lum, rows, cols, pad=max(short // 16, 2))
    want = max(float(rng.uniform(0.12, 0.22)), 4.0 * spread)
    polarity = recipe.choice(
        "polarity", lambda r: _pick_side(r, mean, want, 0.5), ("bright", "dark")
    )
    room = 1.0 - mean if polarity == "bright" else mean
    contrast = recipe.number("contrast", lambda r: min(want, 0.9 * room), 0.0, 1.0)
    sign = 1.0 if polarity == "bright" else -1.0
    out = f + (sign * contrast * weight)[..., None]
    return finish(image, out, weight, 0.06, recipe.params)


# --- pit marks -------------------------------------------------------------------------------

def _draw_pits(rng: np.random.Generator) -> list[dict[str, Any]]:
    """3-8 pits scattered around the cluster centre, not overlapping much."""
    n = int(rng.integers(3, 9))
    spread = rng.uniform(0.03, 0.07)
    pits: list[dict[str, Any]] = []
    for _ in range(40 * n):
        if len(pits) == n:
            break
        offset, radius = spread * rng.standard_normal(2), float(rng.uniform(0.006, 0.016))
        if all(
            np.hypot(*(offset - p["offset"])) > 1.6 * (radius + p["radius"]) + 0.01
            for p in pits
        ):
            pits.append({"offset": offset.tolist(), "radius": radius})
    return pits


def _check_pits(value: Any) -> list[dict[str, Any]]:
    ok = isinstance(value, list) and len(value) > 0
    for item in value if ok else ():
        ok = ok and isinstance(item, dict) and set(item) == {"offset", "radius"}
        ok = ok and np.asarray(item["offset"], float).shape == (2,)
        ok = ok and bool(np.isfinite(item["radius"])) and item["radius"] > 0
    if not ok:
        raise ValueError(
            "paint_pit_marks: pits must be a non-empty list of dicts with keys offset "
            f"(dx, dy as fractions of the short side) and radius (> 0), got {value!r}."
        )
    return value


def paint_pit_marks(image: np.ndarray, rng: np.random.Generator, **overrides: Any) -> Painted:
    """Paint a cluster of 3-10 small dark round pits with a faint bright rim.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        Surface to paint on; any size with both sides >= 16.
    rng : numpy.random.Generator
        Source of every random choice not given in ``overrides``.
    **overrides
        ``center`` (x, y as fractions of width and height), ``pits`` (list of dicts with
        ``offset`` from the centre and ``radius``, fractions of the short side), ``depth``
        (luminance drop at a pit's floor) and ``rim`` (luminance rise of the rim).

    Returns
    -------
    Painted
        The image, the mask of the pits with their rims and the params used.
    """
    f, lum, recipe, short = _start(
        image, rng, overrides, ("center", "pits", "depth", "rim"), "paint_pit_marks"
    )
    h, w = lum.shape
    cx, cy = recipe.vector("center", lambda r: r.uniform(0.2, 0.8, 2), 2)
    pits = _check_pits(recipe.take("pits", _draw_pits))
    pos = np.array([[cx * w, cy * h]]) + short * np.array([p["offset"] for p in pits])
    radius = np.maximum(short * np.array([p["radius"] for p in pits]), 0.7)
    reach = 2.5 * radius.max() + 2
    rows, cols = window(pos.min(axis=0) - reach, pos.max(axis=0) + reach, lum.shape)
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    pit = np.zeros(yy.shape, np.float32)
    ring = np.zeros(yy.shape, np.float32)
    for (px, py), r in zip(pos, radius, strict=True):
        d = np.hypot(xx - px, yy - py)
        disc = 0.75 * np.clip(r + 0.5 - d, 0.0, 1.0) + 0.25 * np.exp(-((d / r) ** 2))
        pit = np.maximum(pit, disc)
        ring = np.maximum(ring, np.exp(-(((d - 1.5 * r) / (0.4 * r + 0.5)) ** 2)))
    ring *= 1 - np.clip(2 * pit, 0, 1)
    mean, spread = background(lum, rows, cols, pad=max(short // 16, 2))
    want = max(float(rng.uniform(0.22, 0.35)), 4.0 * spread)
    rim_share = float(rng.uniform(0.25, 0.4))
    depth = recipe.number("depth", lambda r: min(want, 0.85 * mean), 0.0, 1.0)
    rim = recipe.number(
        "rim", lambda r: rim_share * depth if depth >= 0.6 * want else 0.5 * want, 0.0, 1.0
    )
    weight = np.zeros(lum.shape, np.float32)
    weight[rows, cols] = np.maximum(pit, ring)
    out = f.copy()
    out[rows, cols] += (rim * ring - depth * pit)[..., None]
    return finish(image, out, weight, 0.06, recipe.params)


# --- dent ------------------------------------------------------------------------------------

def paint_dent(image: np.ndarray, rng: np.random.Generator, **overrides: Any) -> Painted:
    """Paint a soft elliptical depression, shaded by light from one side.

    The surface texture is pinched towards the centre; the wall near the light is darker
    and the far wall brighter, as on a real dent.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        Surface to paint on; any size with both sides >= 16.
    rng : numpy.random.Generator
        Source of every random choice not given in ``overrides``.
    **overrides
        ``center`` (x, y as fractions of width and height), ``radius`` (major semi-axis,
        fraction of the short side), ``aspect`` (minor / major axis), ``angle`` (degrees),
        ``light`` (direction the light comes from, degrees), ``contrast`` (shading
        amplitude in luminance) and ``pinch`` (texture pull towards the centre, [0, 0.9]).

    Returns
    -------
    Painted
        The image, the elliptical mask of the dent and the params used.
    """
    f, lum, recipe, short = _start(
        image, rng, overrides,
        ("center", "radius", "aspect", "angle", "light", "contrast", "pinch"), "paint_dent",
    )
    h, w = lum.shape
    cx, cy = recipe.vector("center", lambda r: r.uniform(0.25, 0.75, 2), 2)
    ra = short * recipe.number("radius", lambda r: r.uniform(0.08, 0.18), 1e-3, 2.0)
    rb = ra * recipe.number("aspect", lambda r: r.uniform(0.55, 1.0), 0.05, 1.0)
    theta = math.radians(recipe.number("angle", lambda r: r.uniform(0, 180), -360, 360))
    phi = math.radians(recipe.number("light", lambda r: r.uniform(0, 360), -360, 360))
    cx, cy = cx * w, cy * h
    rows, cols = window([cx - ra - 2, cy - ra - 2], [cx + ra + 2, cy + ra + 2], lum.shape)
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = (xx - cx) * cos + (yy - cy) * sin, (yy - cy) * cos - (xx - cx) * sin
    q = (u / ra) ** 2 + (v / rb) ** 2
    inside = np.clip(1 - q, 0.0, 1.0)
    bowl = inside**2
    # d(bowl)/dx, d(bowl)/dy; the surface is -bowl, its normal (bx, by, 1).
    dq_dx = 2 * u / ra**2 * cos - 2 * v / rb**2 * sin
    dq_dy = 2 * u / ra**2 * sin + 2 * v / rb**2 * cos
    bx, by = -2 * inside * dq_dx, -2 * inside * dq_dy
    shade = bx * math.cos(phi) + by * math.sin(phi)
    shade /= 1.54 / rb  # the largest slope of the profile along the minor axis
    mean, spread = background(lum, rows, cols, pad=max(short // 16, 2))
    want = max(float(rng.uniform(0.12, 0.2)), 4.0 * spread)
    contrast = recipe.number(
        "contrast", lambda r: min(want, 0.9 * max(mean, 1 - mean)), 0.0, 1.0
    )
    pinch = recipe.number("pinch", lambda r: r.uniform(0.2, 0.5), 0.0, 0.9)
    pull = 1 - pinch * bowl
    coords = [cy + (yy - cy) * pull, cx + (xx - cx) * pull]
    out = f.copy()
    delta = contrast * (shade - 0.2 * bowl)
    for c in range(f.shape[2]):
        warped = ndimage.map_coordinates(f[..., c], coords, order=1, mode="nearest")
        out[rows, cols, c] = warped + delta
    weight = np.zeros(lum.shape, np.float32)
    weight[rows, cols] = inside
    return finish(image, out, weight, 0.02, recipe.params)


# --- discoloration ---------------------------------------------------------------------------

# Stain hues as per-channel shift directions (R, G, B): golden, brown, blue-purple heat tint.
_STAIN_HUES = np.array(
    [[0.55, 0.2, -0.75], [0.45, -0.1, -0.6], [-0.35, -0.5, 0.75]], np.float32
)
_BLOTCH_EXTENT = 2.2  # the window reaches this many radii from the centre


def _blotch(seed: int, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Irregular stain opacity in [0, 1] at normalised ellipse coordinates ``(s, t)``.

    A Gaussian envelope modulated by two octaves of smooth noise (from ``seed``), cut and
    feathered with a smoothstep. Normalised by its peak over a fixed grid, so the shape is
    the same at every image size.
    """
    noise_rng = np.random.default_rng(seed)
    octaves = []
    for cells, amp in ((7, 0.7), (15, 0.35)):
        grid = ndimage.gaussian_filter(noise_rng.standard_normal((cells, cells)), 0.6)
        octaves.append((grid / (grid.std() + 1e-9), amp))

    def field(ss: np.ndarray, tt: np.ndarray) -> np.ndarray:
        env = np.exp(-(ss**2 + tt**2))
        total = np.ones_like(ss)
        for grid, amp in octaves:
            scale = (len(grid) - 1) / (2 * _BLOTCH_EXTENT)
            at = [(tt + _BLOTCH_EXTENT) * scale, (ss + _BLOTCH_EXTENT) * scale]
            total += amp * ndimage.map_coordinates(grid, at, order=3, mode="nearest")
        return env * np.maximum(total, 0.0)

    ref = np.linspace(-_BLOTCH_EXTENT, _BLOTCH_EXTENT, 65)
    peak = field(*np.meshgrid(ref, ref)).max()
    m = np.clip((field(s, t) / (peak + 1e-9) - 0.22) / 0.5, 0.0, 1.0)
    return m * m * (3 - 2 * m)


def paint_discoloration(
    image: np.ndarray, rng: np.random.Generator, **overrides: Any
) -> Painted:
    """Paint a blotchy, smooth-edged stain: a hue shift on colour, a tone shift on grey.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        Surface to paint on; any size with both sides >= 16.
    rng : numpy.random.Generator
        Source of every random choice not given in ``overrides``.
    **overrides
        ``center`` (x, y as fractions of width and height), ``radii`` (two semi-axes,
        fractions of the short side), ``angle`` (degrees), ``seed`` (int, the blotch's
        irregular outline), ``opacity`` in [0, 1], ``edge`` (extra strength of the tide
        line at the soft edge, [0, 2]) and ``shift`` (per-channel change at full opacity:
        three values on colour, one on grey).

    Returns
    -------
    Painted
        The image, the mask of the stain and the params used.
    """
    f, lum, recipe, short = _start(
        image, rng, overrides,
        ("center", "radii", "angle", "seed", "opacity", "edge", "shift"),
        "paint_discoloration",
    )
    h, w = lum.shape
    cx, cy = recipe.vector("center", lambda r: r.uniform(0.3, 0.7, 2), 2)
    rx, ry = recipe.vector("radii", lambda r: r.uniform(0.12, 0.28, 2), 2)
    if min(rx, ry) <= 0:
        raise ValueError(f"paint_discoloration: radii must be > 0, got {[rx, ry]}.")
    theta = math.radians(recipe.number("angle", lambda r: r.uniform(0, 180), -360, 360))
    seed = recipe.take("seed", lambda r: int(r.integers(0, 2**31 - 1)))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"paint_discoloration: seed must be an int >= 0, got {seed!r}.")
    opacity = recipe.number("opacity", lambda r: r.uniform(0.65, 0.95), 0.0, 1.0)
    edge = recipe.number("edge", lambda r: r.uniform(0.2, 0.6), 0.0, 2.0)
    cx, cy, rx, ry = cx * w, cy * h, rx * short, ry * short
    reach = _BLOTCH_EXTENT * max(rx, ry)
    rows, cols = window([cx - reach, cy - reach], [cx + reach, cy + reach], lum.shape)
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    cos, sin = math.cos(theta), math.sin(theta)
    s = ((xx - cx) * cos + (yy - cy) * sin) / rx
    t = ((yy - cy) * cos - (xx - cx) * sin) / ry
    m = _blotch(seed, s, t)
    inner = m > 0.5
    mean, spread = background(lum, rows, cols, 0) if not inner.any() else (
        float(lum[rows, cols][inner].mean()),
        float(np.subtract(*np.percentile(lum[rows, cols][inner], [84, 16]))) / 2,
    )
    want = max(float(rng.uniform(0.1, 0.18)), 3.0 * spread)
    if f.shape[2] == 3:
        want *= 1.8  # a hue shift reads weaker than a tone shift of the same size
    hue = int(rng.integers(len(_STAIN_HUES)))
    jitter = rng.normal(0.0, 0.08, 3)
    if f.shape[2] == 3:
        default = want * (_STAIN_HUES[hue] + jitter - 0.1)
    else:
        default = [want if _pick_side(rng, mean, want, 0.0) == "bright" else -want]
    shift = np.asarray(recipe.vector("shift", lambda r: default, f.shape[2]), np.float32)
    weight = np.zeros(lum.shape, np.float32)
    weight[rows, cols] = m
    out = f.copy()
    tide = m + edge * 4 * m * (1 - m)  # a stronger tide line at the soft edge
    out[rows, cols] += opacity * tide[..., None] * shift
    return finish(image, out, weight, 0.04, recipe.params)


#: Painter per defect class name.
PAINTERS: dict[str, Callable[..., Painted]] = {
    "scratch": paint_scratch,
    "pit_mark": paint_pit_marks,
    "dent": paint_dent,
    "discoloration": paint_discoloration,
}


def paint(
    kind: DefectKind, image: np.ndarray, rng: np.random.Generator, **overrides: Any
) -> Painted:
    """Paint a defect of class ``kind`` on ``image``; see the painter in :data:`PAINTERS`.

    Raises
    ------
    ValueError
        If ``kind`` is not a key of :data:`PAINTERS`, or the painter rejects its inputs.
    """
    painter = PAINTERS.get(kind) if isinstance(kind, str) else None
    if painter is None:
        raise ValueError(
            f"unknown defect kind {kind!r}; expected one of {', '.join(PAINTERS)}."
        )
    return painter(image, rng, **overrides)
