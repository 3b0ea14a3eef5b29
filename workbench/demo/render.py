"""Procedural renderer of synthetic phone-casing inspection images.

Pure numpy/scipy renderer for the Loupe demo dataset: brushed anodised aluminium with
one of four defect types (or none), under bright or dim light, from three production
lines and two cameras. Every random draw comes from the ``numpy.random.Generator``
passed in, so a given generator state always gives the same image.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> img = render_casing(rng, "scratch", lighting="dim", line="B")
>>> img.shape, img.dtype
((128, 128, 3), dtype('uint8'))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

__all__ = ["CAMERAS", "CLASSES", "LIGHTINGS", "LINES", "contact_sheet", "defect_boxes",
           "render_casing", "render_casing_with_boxes"]

CLASSES: tuple[str, ...] = ("ok", "scratch", "dent", "pit_mark", "discoloration")
LIGHTINGS: tuple[str, ...] = ("bright", "dim")
LINES: tuple[str, ...] = ("A", "B", "C")
CAMERAS: tuple[str, ...] = ("cam1", "cam2")

# Per-line RGB tint of the anodised surface: neutral silver, warm, cool blue-grey.
_TINTS: dict[str, np.ndarray] = {
    "A": np.array([0.97, 0.98, 1.00], np.float32),
    "B": np.array([1.02, 0.98, 0.92], np.float32),
    "C": np.array([0.91, 0.96, 1.03], np.float32),
}
# Camera: (blur sigma in px at 128 px, exposure gain).
_CAMERAS: dict[str, tuple[float, float]] = {"cam1": (0.0, 1.0), "cam2": (0.7, 1.07)}

_Painter = Callable[[np.random.Generator, np.ndarray, np.ndarray, bool], np.ndarray]


def _check(value: str, choices: Sequence[str], name: str) -> None:
    """Raise ``ValueError`` naming ``name`` and its valid ``choices`` if ``value`` is unknown."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")


def _grid(size: int) -> np.ndarray:
    """Return stacked float32 ``(yy, xx)`` pixel coordinate grids, shape ``(2, size, size)``."""
    return np.indices((size, size), dtype=np.float32)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise field of shape ``(size, size)``, roughly unit std."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) * (cells / size) - 0.5
    w = np.exp(-((pos[:, None] - np.arange(cells, dtype=np.float32)) ** 2) / 0.8)
    w /= w.sum(axis=1, keepdims=True)
    field = w @ coarse @ w.T
    return field / (field.std() + 1e-6)


def _window(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[slice, slice]:
    """Clipped ``(rows, cols)`` slices covering the box ``lo``..``hi`` given as (x, y)."""
    x0, y0 = (max(math.floor(v), 0) for v in lo)
    x1, y1 = (min(math.ceil(v) + 1, size) for v in hi)
    return slice(y0, max(y1, y0 + 1)), slice(x0, max(x1, x0 + 1))


def _streaks(noise: np.ndarray, sigma_y: float, length: int) -> np.ndarray:
    """Blur ``noise`` lightly across rows and strongly (two periodic box passes) along them."""
    out = ndimage.gaussian_filter1d(noise, sigma_y, axis=0, mode="wrap")
    for _ in range(2):
        out = ndimage.uniform_filter1d(out, length, axis=1, mode="wrap")
    return out


def _brushed_surface(rng: np.random.Generator, size: int, light: np.ndarray) -> np.ndarray:
    """Render the brushed-metal luminance map in ``[0, 1]``.

    Streaks are white noise strongly blurred along one axis (periodic, sheared by a small
    random angle), over a lighting gradient, a soft specular band and fine grain.
    """
    k = size / 128
    noise = rng.standard_normal((2, size, size)).astype(np.float32)
    fine = _streaks(noise[0], 0.4, int(40 * k) + 1)
    coarse = _streaks(noise[1], 2.5 * k, int(60 * k) + 1)
    tex = 0.04 * fine / fine.std() + 0.014 * coarse / coarse.std()
    angle = math.radians(rng.uniform(-6.0, 6.0))
    yy, xx = _grid(size)
    c = (size - 1) / 2
    # Shear the periodic texture column by column: a small-angle rotation of the streaks.
    shift = (np.arange(size) - c) * math.tan(angle)
    base = np.floor(shift).astype(int)
    frac = (shift - base).astype(np.float32)
    rows = (np.arange(size)[:, None] + base[None, :]) % size
    cols = np.arange(size)[None, :]
    lum = (1 - frac) * tex[rows, cols] + frac * tex[(rows + 1) % size, cols]
    proj = ((xx - c) * float(light[0]) + (yy - c) * float(light[1])) / size  # in [-0.7, 0.7]
    lum += rng.uniform(0.58, 0.68) + rng.uniform(0.05, 0.14) * proj
    band_dir = angle + math.pi / 2 + rng.uniform(-0.4, 0.4)
    band = ((xx - c) * math.cos(band_dir) + (yy - c) * math.sin(band_dir)) / size
    offset, width = rng.uniform(-0.4, 0.4), rng.uniform(0.12, 0.3)
    lum += rng.uniform(0.04, 0.12) * np.exp(-(((band - offset) / width) ** 2))
    grain = rng.standard_normal((size, size)).astype(np.float32)
    lum += 0.012 * ndimage.gaussian_filter(grain, 0.6)
    return lum


def _paint_ok(
    rng: np.random.Generator, img: np.ndarray, light: np.ndarray, dim: bool
) -> np.ndarray:
    """Clean part; sometimes a very faint, colourless, broad brightness drift."""
    if rng.random() < 0.5:
        img = img * (1 + 0.02 * _smooth_field(rng, img.shape[0], 4))[..., None]
    return img


def _curve_distance(pts: np.ndarray, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """Distance of window pixels to polyline ``pts`` (n, 2) as (x, y), and curve parameter t."""
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    a, b = pts[:-1, :, None, None], pts[1:, :, None, None]
    ab = b - a
    px, py = xx[None] - a[:, 0], yy[None] - a[:, 1]
    t = np.clip((px * ab[:, 0] + py * ab[:, 1]) / (ab[:, 0] ** 2 + ab[:, 1] ** 2 + 1e-9), 0, 1)
    d = np.hypot(px - t * ab[:, 0], py - t * ab[:, 1])
    idx = d.argmin(axis=0)
    dist = np.take_along_axis(d, idx[None], 0)[0]
    tt = (idx + np.take_along_axis(t, idx[None], 0)[0]).astype(np.float32) / len(ab)
    return dist, tt


def _one_scratch(rng: np.random.Generator, size: int) -> np.ndarray:
    """Signed luminance delta of a single thin, slightly curved, anti-aliased scratch."""
    k = size / 128
    centre = rng.uniform(0.25, 0.75, 2) * size
    phi, length = rng.uniform(0, np.pi), rng.uniform(0.35, 0.85) * size
    direction = np.array([np.cos(phi), np.sin(phi)])
    normal = np.array([-direction[1], direction[0]])
    p0, p2 = centre - direction * length / 2, centre + direction * length / 2
    p1 = centre + normal * rng.uniform(-0.15, 0.15) * length
    t = np.linspace(0, 1, 13)[:, None]
    pts = ((1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2).astype(np.float32)
    rows, cols = _window(pts.min(axis=0) - 4 * k - 3, pts.max(axis=0) + 4 * k + 3, size)
    dist, tt = _curve_distance(pts, rows, cols)
    taper = rng.uniform(0.5, 0.9) if rng.random() < 0.5 else 0.0
    if rng.random() < 0.5:
        tt = 1 - tt
    width = rng.uniform(0.8, 1.8) * max(k, 0.6) * (1 - taper * tt)
    core = np.clip(width / 2 + 0.5 - dist, 0, 1)
    halo = np.exp(-((dist / (width + 1.5 * k)) ** 2))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    contrast = rng.uniform(0.2, 0.4) * (1 - 0.5 * taper * tt)
    delta = np.zeros((size, size), np.float32)
    delta[rows, cols] = sign * contrast * (core + 0.25 * halo)
    return delta


def _paint_scratch(
    rng: np.random.Generator, img: np.ndarray, light: np.ndarray, dim: bool
) -> np.ndarray:
    """One (sometimes two) thin long scratches, bright or dark, sometimes tapering."""
    delta = _one_scratch(rng, img.shape[0])
    if rng.random() < 0.25:
        delta += _one_scratch(rng, img.shape[0])
    return img + delta[..., None]


def _paint_dent(
    rng: np.random.Generator, img: np.ndarray, light: np.ndarray, dim: bool
) -> np.ndarray:
    """Oval dimple: streaks pinched inside, shaded consistently with ``light``."""
    size = img.shape[0]
    k = size / 128
    cx, cy = (rng.uniform(0.25, 0.75, 2) * size).tolist()
    ra = rng.uniform(12, 28) * k
    rb = ra * rng.uniform(0.6, 1.0)
    theta = rng.uniform(0, math.pi)
    cos, sin = math.cos(theta), math.sin(theta)
    rows, cols = _window(np.array([cx - ra - 2, cy - ra - 2]), np.array([cx + ra, cy + ra]), size)
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    u, v = (xx - cx) * cos + (yy - cy) * sin, (yy - cy) * cos - (xx - cx) * sin
    bowl = np.clip(1 - (u / ra) ** 2 - (v / rb) ** 2, 0, 1) ** 2  # compact smooth dimple
    pinch = rng.uniform(0.35, 0.6) * bowl
    ys, xs = cy + (yy - cy) * (1 - pinch), cx + (xx - cx) * (1 - pinch)
    hy, hx = np.gradient(-bowl)
    # Normal (-hx, -hy, 1) dotted with the light: the wall facing the light is shadowed.
    shade = -(hx * float(light[0]) + hy * float(light[1]))
    shade *= rng.uniform(0.2, 0.35) / (np.abs(shade).max() + 1e-9)
    gain = 1 + shade + 0.2 * np.maximum(shade, 0) - 0.03 * bowl
    out = img.copy()
    for i in range(3):
        warped = ndimage.map_coordinates(img[..., i], [ys, xs], order=1, mode="nearest")
        out[rows, cols, i] = warped * gain
    return out


def _paint_pit_mark(
    rng: np.random.Generator, img: np.ndarray, light: np.ndarray, dim: bool
) -> np.ndarray:
    """Cluster of 3-15 tiny dark pits with a slight bright rim; faint in dim light."""
    size = img.shape[0]
    k = size / 128
    n = int(rng.integers(3, 16))
    centre = rng.uniform(0.2, 0.8, 2) * size
    spread = rng.uniform(3, 12) * k
    pos = (centre + spread * 0.6 * rng.standard_normal((n, 2))).astype(np.float32)
    radius = np.maximum(rng.uniform(0.55, 1.4, n) * k, 0.5).astype(np.float32)
    depth = rng.uniform(0.3, 0.5, n).astype(np.float32) * (0.9 if dim else 1.0)
    rows, cols = _window(pos.min(axis=0) - 6 * max(k, 1), pos.max(axis=0) + 6 * max(k, 1), size)
    yy, xx = np.mgrid[rows, cols].astype(np.float32)
    d = np.hypot(xx[None] - pos[:, 0, None, None], yy[None] - pos[:, 1, None, None])
    r = radius[:, None, None]
    pit = np.exp(-((d / r) ** 2))
    rim = np.exp(-(((d - 1.7 * r) / (0.6 * max(k, 0.6))) ** 2))
    delta = np.clip((depth[:, None, None] * (0.35 * rim - pit)).sum(axis=0), -0.6, 0.3)
    img = img.copy()
    img[rows, cols] *= 1 + delta[..., None]
    return img


def _paint_discoloration(
    rng: np.random.Generator, img: np.ndarray, light: np.ndarray, dim: bool
) -> np.ndarray:
    """Soft-edged irregular oxidation blotch tinted golden/brown or blue/purple."""
    size = img.shape[0]
    cx, cy = (rng.uniform(0.25, 0.75, 2) * size).tolist()
    rx, ry = (rng.uniform(0.13, 0.3, 2) * size).tolist()
    yy, xx = _grid(size)
    envelope = np.exp(-(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2))
    shape = envelope * (1 + 0.6 * _smooth_field(rng, size, 6) + 0.3 * _smooth_field(rng, size, 14))
    mask = np.clip((shape / shape.max() - 0.25) / 0.6, 0, 1)
    mask = mask * mask * (3 - 2 * mask)  # smoothstep: soft, feathered edge
    if rng.random() < 0.5:
        tint = np.array([1.08, 0.9, 0.6], np.float32)  # golden/brown
    else:
        tint = np.array([0.86, 0.80, 1.10], np.float32)  # blue/purple
    tint = tint + rng.uniform(-0.04, 0.04, 3).astype(np.float32)
    mask = (rng.uniform(0.6, 0.9) * mask)[..., None]
    return img * (1 + mask * (tint - 1) - 0.06 * mask)


_PAINTERS: dict[str, _Painter] = {
    "ok": _paint_ok,
    "scratch": _paint_scratch,
    "dent": _paint_dent,
    "pit_mark": _paint_pit_mark,
    "discoloration": _paint_discoloration,
}


def render_casing(
    rng: np.random.Generator,
    label: str,
    *,
    lighting: str = "bright",
    line: str = "A",
    camera: str = "cam1",
    size: int = 128,
) -> np.ndarray:
    """Render one synthetic phone-casing inspection image.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness; the same state gives the same image.
    label : str
        Defect class, one of ``CLASSES``.
    lighting : {"bright", "dim"}
        Dim light is about half as bright, lower contrast and noisier; pits turn faint.
    line : {"A", "B", "C"}
        Production line, sets the colour tint (neutral, warm, cool).
    camera : {"cam1", "cam2"}
        ``"cam2"`` is slightly blurrier and exposed a little brighter.
    size : int
        Side of the square image in pixels (at least 16).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(size, size, 3)``.
    """
    return _render(rng, label, lighting=lighting, line=line, camera=camera, size=size)[0]


def render_casing_with_boxes(
    rng: np.random.Generator,
    label: str,
    *,
    lighting: str = "bright",
    line: str = "A",
    camera: str = "cam1",
    size: int = 128,
) -> tuple[np.ndarray, list[dict]]:
    """Render an image as :func:`render_casing` does (same pixels for the same generator
    state) and the boxes around its painted defect.

    Returns
    -------
    (pixels, boxes)
        ``uint8`` array of shape ``(size, size, 3)``, and ``{"label", "bounding_box":
        [x, y, w, h]}`` per defect (relative to the image; ``[]`` for ``"ok"``), see
        :func:`defect_boxes`.
    """
    pixels, change = _render(rng, label, lighting=lighting, line=line, camera=camera,
                             size=size)
    if label == "ok":
        return pixels, []
    return pixels, [{"label": label, "bounding_box": box} for box in defect_boxes(change)]


#: Change of surface luminance (0-1 scale) that counts as part of a painted defect.
DEFECT_THRESHOLD = 0.035
#: Pixels (at 128 px) within which changed pixels are grouped into one defect.
DEFECT_GAP = 5.0


def defect_boxes(change: np.ndarray, *, threshold: float = DEFECT_THRESHOLD,
                 gap: float = DEFECT_GAP, min_pixels: int = 4) -> list[list[float]]:
    """Boxes around the regions a painter changed.

    Parameters
    ----------
    change : array of shape (size, size)
        ``|painted - unpainted|`` (largest over channels) before camera and light effects.
    threshold : float
        Change that counts as defect.
    gap : float
        Changed pixels closer than this (scaled with the image size) form one defect; a
        region of fewer than ``min_pixels`` changed pixels is ignored.

    Returns
    -------
    list of [x, y, w, h]
        Relative boxes, largest region first.
    """
    size = change.shape[0]
    mask = change > threshold
    radius = max(1, round(gap * size / 128))
    grouped = ndimage.binary_dilation(mask, iterations=radius)
    regions, _ = ndimage.label(grouped)
    boxes = []
    for index, window in enumerate(ndimage.find_objects(regions), start=1):
        inside = mask[window] & (regions[window] == index)
        if inside.sum() < min_pixels:
            continue
        rows, cols = np.nonzero(inside)
        y0, x0 = rows.min() + window[0].start, cols.min() + window[1].start
        y1, x1 = rows.max() + window[0].start + 1, cols.max() + window[1].start + 1
        boxes.append((int(inside.sum()), [x0 / change.shape[1], y0 / size,
                                          (x1 - x0) / change.shape[1], (y1 - y0) / size]))
    return [[float(v) for v in box] for _, box in sorted(boxes, key=lambda b: -b[0])]


def _render(rng: np.random.Generator, label: str, *, lighting: str, line: str, camera: str,
            size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image and where the painter changed the surface (see :func:`defect_boxes`)."""
    _check(label, CLASSES, "label")
    _check(lighting, LIGHTINGS, "lighting")
    _check(line, LINES, "line")
    _check(camera, CAMERAS, "camera")
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    size, dim = int(size), lighting == "dim"
    phi = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(phi), np.sin(phi)], np.float32)
    lum = _brushed_surface(rng, size, light)
    tint = _TINTS[line] + rng.uniform(-0.008, 0.008, 3).astype(np.float32)
    surface = lum[..., None] * tint
    img = _PAINTERS[label](rng, surface, light, dim)
    change = np.abs(img - surface).max(axis=2)
    blur, gain = _CAMERAS[camera]
    if blur:
        img = ndimage.gaussian_filter(img, (blur * size / 128, blur * size / 128, 0))
    img = img * gain
    if dim:
        mean = img.mean()
        img = rng.uniform(0.45, 0.55) * (mean + 0.7 * (img - mean))
    sigma = 0.022 if dim else 0.006
    img = img + sigma * rng.standard_normal(img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), change


def contact_sheet(images: list[np.ndarray], labels: list[str], columns: int = 8) -> Image.Image:
    """Tile images into a grid with a small caption under each tile.

    Parameters
    ----------
    images : list of numpy.ndarray
        ``uint8`` images, ``(H, W, 3)`` or ``(H, W)``; tiles use the largest size.
    labels : list of str
        One caption per image.
    columns : int
        Tiles per row.

    Returns
    -------
    PIL.Image.Image
        RGB contact sheet.
    """
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} != {len(labels)}")
    if not images:
        raise ValueError("images must not be empty")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    tile_h = max(im.shape[0] for im in images)
    tile_w = max(im.shape[1] for im in images)
    cap, pad = 14, 2
    rows = -(-len(images) // columns)
    cols = min(columns, len(images))
    sheet = Image.new(
        "RGB", (cols * (tile_w + pad) + pad, rows * (tile_h + cap + pad) + pad), (24, 24, 24)
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (im, text) in enumerate(zip(images, labels, strict=True)):
        x = pad + (i % columns) * (tile_w + pad)
        y = pad + (i // columns) * (tile_h + cap + pad)
        arr = np.asarray(im, dtype=np.uint8)
        sheet.paste(Image.fromarray(arr).convert("RGB"), (x, y))
        text = str(text)
        while len(text) > 1 and draw.textlength(text, font=font) > tile_w - 2:
            text = text[:-1]
        draw.text((x + 1, y + tile_h + 1), text, fill=(230, 230, 230), font=font)
    return sheet
