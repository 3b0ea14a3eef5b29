"""Label-preserving augmentation of real defect images."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from workbench.improve.synthesis._core import Painted, Recipe, check_image, check_rng, to_float

__all__ = ["augment"]

_KEYS = (
    "flip_h", "flip_v", "rot90", "angle", "brightness", "contrast", "blur", "noise",
    "noise_seed",
)


def _flag(recipe: Recipe, name: str) -> bool:
    value = recipe.take(name, lambda r: bool(r.random() < 0.5))
    if not isinstance(value, bool):
        raise ValueError(f"augment: {name} must be True or False, got {value!r}.")
    return value


def augment(image: np.ndarray, rng: np.random.Generator, **overrides: Any) -> Painted:
    """Apply random label-preserving transforms to a real image of a defect class.

    In order: horizontal/vertical flips, a quarter-turn rotation (half turns only on
    non-square images, so the shape is kept), a small rotation with reflect padding,
    brightness and contrast jitter, then either a slight Gaussian blur, slight noise, or
    neither.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        The image; both sides >= 16.
    rng : numpy.random.Generator
        Source of every choice not given in ``overrides``.
    **overrides
        ``flip_h``, ``flip_v`` (bool), ``rot90`` (quarter turns, 0-3), ``angle`` (degrees,
        drawn from [-10, 10]), ``brightness`` and ``contrast`` (relative changes, drawn
        from [-0.15, 0.15]), ``blur`` (Gaussian sigma in px, 0 for none), ``noise`` (sigma
        in grey levels, 0 for none) and ``noise_seed`` (int).

    Returns
    -------
    Painted
        The transformed image (same shape and dtype), an all-True mask and the params.

    Raises
    ------
    ValueError
        If ``image`` or ``rng`` is invalid, an override is unknown or out of range, or
        ``rot90`` is odd on a non-square image.
    """
    check_image(image)
    check_rng(rng)
    recipe = Recipe(rng, overrides, _KEYS, "augment")
    h, w = image.shape[:2]
    flip_h, flip_v = _flag(recipe, "flip_h"), _flag(recipe, "flip_v")
    rot90 = recipe.take("rot90", lambda r: int(r.integers(4)) if h == w else 2 * int(r.integers(2)))
    if isinstance(rot90, bool) or not isinstance(rot90, int) or not 0 <= rot90 <= 3:
        raise ValueError(f"augment: rot90 must be an int in 0-3, got {rot90!r}.")
    if rot90 % 2 and h != w:
        raise ValueError(
            f"augment: rot90={rot90} would change the shape of a {h}x{w} image; "
            "pass 0 or 2 for non-square images."
        )
    angle = recipe.number("angle", lambda r: r.uniform(-10.0, 10.0), -45.0, 45.0)
    brightness = recipe.number("brightness", lambda r: r.uniform(-0.15, 0.15), -1.0, 1.0)
    contrast = recipe.number("contrast", lambda r: r.uniform(-0.15, 0.15), -1.0, 1.0)
    finish = str(rng.choice(["none", "blur", "noise"]))
    blur = recipe.number(
        "blur", lambda r: r.uniform(0.3, 1.0) if finish == "blur" else 0.0, 0.0, 10.0
    )
    noise = recipe.number(
        "noise", lambda r: r.uniform(2.0, 6.0) if finish == "noise" else 0.0, 0.0, 100.0
    )
    seed = recipe.take("noise_seed", lambda r: int(r.integers(0, 2**31 - 1)))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"augment: noise_seed must be an int >= 0, got {seed!r}.")

    f = to_float(image)
    if flip_h:
        f = f[:, ::-1]
    if flip_v:
        f = f[::-1]
    f = np.rot90(f, rot90, axes=(0, 1))
    if angle:
        f = ndimage.rotate(f, angle, axes=(1, 0), reshape=False, order=1, mode="reflect")
    mean = float(f.mean())
    f = ((f - mean) * (1 + contrast) + mean) * (1 + brightness)
    if blur:
        f = ndimage.gaussian_filter(f, (blur, blur, 0))
    if noise:
        f = f + noise / 255 * np.random.default_rng(seed).standard_normal(f.shape)
    q = np.rint(np.clip(f, 0.0, 1.0) * 255).astype(np.uint8)
    q = q[..., 0] if image.ndim == 2 else q
    return Painted(image=q, mask=np.ones((h, w), bool), params=recipe.params)
