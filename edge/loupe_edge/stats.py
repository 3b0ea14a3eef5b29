"""Image statistics on the line: how unfamiliar one image is, and whether a window of them
has drifted from the deployment's training images.

Both compare brightness, contrast and sharpness (:func:`image_properties`, the same numbers
the workbench's drift checks use) with the deployment's ``reference.npz``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import numpy as np

#: The image statistics, in the order ``reference.npz`` stores them.
PROPERTIES = ("brightness", "contrast", "sharpness", "width", "height")
#: The ones that decide familiarity and drift (size is the camera's, not the part's).
COMPARED = ("brightness", "contrast", "sharpness")
#: A window drifts when a statistic's mean moved this many reference standard deviations.
DRIFT_SHIFT = 1.0
#: Fewest images in the window before it is judged.
MIN_WINDOW = 30


def image_properties(gray: np.ndarray) -> dict[str, float]:
    """Brightness, contrast and sharpness of a greyscale image (H, W) with values 0–255.

    brightness: mean grey level / 255; contrast: standard deviation / 255; sharpness:
    variance of the 4-neighbour Laplacian (of grey levels / 255), which blur lowers.
    """
    values = np.asarray(gray, dtype=np.float32) / 255.0
    if values.ndim != 2 or min(values.shape) < 3:
        raise ValueError(f"image_properties needs a 2-D image of at least 3x3 pixels, got "
                         f"shape {values.shape}")
    laplacian = (values[:-2, 1:-1] + values[2:, 1:-1] + values[1:-1, :-2] + values[1:-1, 2:]
                 - 4 * values[1:-1, 1:-1])
    return {"brightness": float(values.mean()), "contrast": float(values.std()),
            "sharpness": float(laplacian.var()),
            "height": float(gray.shape[0]), "width": float(gray.shape[1])}


def gray_of(pixels: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) to grey levels as Pillow's ``convert("L")`` computes them."""
    rgb = pixels.astype(np.float32)
    return np.round(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)


class Familiarity:
    """How far an image's statistics lie from the training images'.

    ``score(props)`` is the share of training images that lie closer to the training
    centre (standardised distance over :data:`COMPARED`): 0.5 is typical, 0.99 is stranger
    than 99 % of them. Without a reference every score is NaN.
    """

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        names = [str(n) for n in reference.get("property_names", PROPERTIES)]
        table = np.asarray(reference.get("properties", np.empty((0, len(names)))),
                           dtype=np.float64)
        columns = [names.index(p) for p in COMPARED if p in names]
        self.available = table.ndim == 2 and len(table) >= 2 and len(columns) == len(COMPARED)
        if not self.available:
            self.mean = self.std = np.full(len(COMPARED), np.nan)
            self.distances = np.empty(0)
            return
        values = table[:, columns]
        self.mean = values.mean(axis=0)
        self.std = np.where(values.std(axis=0) > 1e-9, values.std(axis=0), 1.0)
        self.distances = np.sort(self._distance(values))

    def _distance(self, values: np.ndarray) -> np.ndarray:
        return np.sqrt((((values - self.mean) / self.std) ** 2).mean(axis=-1))

    def vector(self, props: Mapping[str, float]) -> np.ndarray:
        return np.array([props[p] for p in COMPARED], dtype=np.float64)

    def score(self, props: Mapping[str, float]) -> float:
        if not self.available:
            return float("nan")
        distance = float(self._distance(self.vector(props)))
        return float(np.searchsorted(self.distances, distance, side="right")
                     / len(self.distances))


class RollingDrift:
    """The last ``window`` images' statistics against the reference: the largest shift of a
    mean in reference standard deviations (``statistic``), flagged beyond
    :data:`DRIFT_SHIFT` once :data:`MIN_WINDOW` images are in."""

    def __init__(self, familiarity: Familiarity, window: int = 200) -> None:
        self.familiarity = familiarity
        self.values: deque[np.ndarray] = deque(maxlen=window)

    def add(self, props: Mapping[str, float]) -> None:
        self.values.append(self.familiarity.vector(props))

    @property
    def statistic(self) -> float:
        if not self.familiarity.available or not self.values:
            return float("nan")
        shift = (np.mean(self.values, axis=0) - self.familiarity.mean) / self.familiarity.std
        return float(np.abs(shift).max())

    @property
    def drifted(self) -> bool:
        statistic = self.statistic
        return len(self.values) >= MIN_WINDOW and statistic == statistic \
            and statistic > DRIFT_SHIFT

    def moved(self) -> dict[str, float]:
        """Each statistic's shift in reference standard deviations (signed)."""
        if not self.familiarity.available or not self.values:
            return {}
        shift = (np.mean(self.values, axis=0) - self.familiarity.mean) / self.familiarity.std
        return {name: round(float(v), 3) for name, v in zip(COMPARED, shift, strict=True)}


__all__ = ["COMPARED", "DRIFT_SHIFT", "MIN_WINDOW", "PROPERTIES", "Familiarity",
           "RollingDrift", "gray_of", "image_properties"]
