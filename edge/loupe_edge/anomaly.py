"""Run an exported anomaly model (``wb.train(p, task="anomaly")``) on the line: a score per
image, ``ok`` or ``anomaly`` by the version's threshold, and a heatmap of where it looks wrong.

The file maps one image, already resized with its aspect ratio kept (:func:`resize_keeping_aspect`,
done here with Pillow exactly as the workbench does it), to the distance of each of its
patches to the nearest normal patch kept in the version's memory bank: (1, h, w). The
image's score is the highest patch distance; the heatmap is the distances resized to the
image and smoothed (:func:`heatmap`: numpy only, the same function the workbench uses).

>>> model = EdgePredictor("commutator-v2.onnx")      # an EdgeAnomaly for an anomaly export
>>> model.predict(["part_0001.png"])[0]
{'filepath': 'part_0001.png', 'label': 'anomaly', 'anomaly_score': 7.9, 'confidence': 0.41}
>>> model.heatmap("part_0001.png").shape             # (height, width) of the image
(1408, 512)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from loupe_edge.predictor import EdgePredictor, PathLike, read_rgb

#: Metadata layout version of anomaly exports (``"task": "anomaly"``).
ANOMALY_FORMAT_VERSION = 3
#: The label of an image scored at or above the threshold.
ANOMALY = "anomaly"
#: Resized sides are multiples of this (the deepest feature map's stride).
STRIDE = 32
#: Standard deviation, in pixels of the original image, of the heatmap's smoothing.
SMOOTHING_PX = 4.0
#: The smoothing kernel reaches this many standard deviations (scipy's default).
_TRUNCATE = 4.0


def aspect_size(width: int, height: int, side: int, stride: int = STRIDE) -> tuple[int, int]:
    """(width, height) with the *shorter* side at ``side`` pixels and the longer one scaled
    alike, both rounded to a multiple of ``stride`` (at least one stride)."""
    scale = side / min(width, height)

    def rounded(n: int) -> int:
        return max(stride, round(n * scale / stride) * stride)

    return rounded(width), rounded(height)


def resize_keeping_aspect(image: Image.Image, side: int, stride: int = STRIDE) -> Image.Image:
    """``image`` in RGB resized to :func:`aspect_size` (bilinear): a thin crack on a long
    part is not squashed away as it would be in a square."""
    image = image.convert("RGB")
    return image.resize(aspect_size(image.width, image.height, side, stride),
                        Image.Resampling.BILINEAR)


def _upsample(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array (half-pixel centres, edges clamped)."""
    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        source = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0)
        low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
        return low, np.minimum(low + 1, n_in - 1), (source - low).astype(np.float32)

    y0, y1, wy = axis(values.shape[0], height)
    x0, x1, wx = axis(values.shape[1], width)
    rows = values[y0] * (1 - wy)[:, None] + values[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx)[None] + rows[:, x1] * wx[None]


def _smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with mirrored edges, one axis after the other (what
    ``scipy.ndimage.gaussian_filter`` computes, without scipy)."""
    radius = int(_TRUNCATE * sigma + 0.5)
    if radius < 1:
        return values
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    out = values
    for ax in (0, 1):
        if out.shape[ax] == 1:
            continue
        pad = [(0, 0), (0, 0)]
        pad[ax] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[ax]
        acc = np.zeros_like(out)
        for k, weight in enumerate(weights):
            acc += weight * (padded[k:k + n] if ax == 0 else padded[:, k:k + n])
        out = acc
    return out


def heatmap(distances: np.ndarray, size: tuple[int, int], *,
            sigma: float = SMOOTHING_PX) -> np.ndarray:
    """Patch distances (h, w) as a float32 map of ``size`` = (width, height) of the image:
    resized bilinearly, then smoothed with a Gaussian of ``sigma`` pixels."""
    width, height = size
    values = _upsample(np.asarray(distances, dtype=np.float32), height, width)
    return _smooth(values.astype(np.float32), sigma).astype(np.float32)


def confidence(scores: np.ndarray, threshold: float) -> np.ndarray:
    """How sure an ok/anomaly label is: the score's distance from the threshold relative to
    the threshold, capped at 1 (0 on the threshold)."""
    return np.clip(np.abs(np.asarray(scores) - threshold) / max(threshold, 1e-12), 0, 1)


class EdgeAnomaly(EdgePredictor):
    """An exported anomaly model: scores, labels and heatmaps of image files.

    ``EdgePredictor(path)`` returns one when the file is an anomaly export.

    Attributes
    ----------
    classes : list of str
        The normal class and ``"anomaly"``.
    normal : str
        The class of good parts the version learned.
    threshold : float
        Scores at or above it are labelled ``"anomaly"``.
    image_size : int
        The shorter side every image is resized to (the other keeps the aspect ratio).
    """

    def __init__(self, path: PathLike, *, providers: Sequence[str] | None = None) -> None:
        opened = self.__dict__.pop("_opened", None)
        from loupe_edge.predictor import _open, _task

        self.path, self._run, self.metadata = opened or _open(path, providers)
        if _task(self.metadata) != "anomaly":
            raise ValueError(f"{str(self.path)!r} is not an anomaly model; load it with "
                             "EdgePredictor.")
        self.classes = list(self.metadata["classes"])
        self.version = self.metadata.get("version")
        self.project = self.metadata.get("project")
        self.image_size = int(self.metadata["image_size"])
        self.stride = int(self.metadata.get("stride", STRIDE))
        self.normal = str(self.metadata["normal"])
        self.threshold = float(self.metadata["threshold"])
        self.sigma = float(self.metadata.get("smoothing_px", SMOOTHING_PX))

    def __repr__(self) -> str:
        return (f"EdgeAnomaly({str(self.path)!r}, version={self.version!r}, "
                f"normal={self.normal!r}, threshold={self.threshold:.4g})")

    def patch_distances(self, pixels: np.ndarray) -> np.ndarray:
        """Distance of each patch of one decoded RGB image (H, W, 3), uint8, to the nearest
        normal patch: float32 (h, w)."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
            raise ValueError("pixels must be one uint8 RGB image of shape (H, W, 3), got "
                             f"{pixels.dtype} of shape {pixels.shape}.")
        resized = resize_keeping_aspect(Image.fromarray(pixels), self.image_size, self.stride)
        batch = np.ascontiguousarray(np.asarray(resized, dtype=np.uint8)[None])
        return np.asarray(self._run(batch)[0], dtype=np.float32)[0]

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Anomaly scores of a batch of decoded images (N, H, W, 3): float32 (N,)."""
        pixels = np.asarray(pixels)
        if pixels.ndim != 4:
            raise ValueError("pixels must be a uint8 array of shape (n_images, H, W, 3), got "
                             f"{pixels.dtype} of shape {pixels.shape}.")
        return np.array([self.patch_distances(image).max() for image in pixels],
                        dtype=np.float32)

    def predict_proba(self, paths: Sequence[PathLike], *, batch_size: int = 8) -> np.ndarray:
        """Not defined for anomaly scores: use :meth:`predict` (score, label, confidence)."""
        raise TypeError("an anomaly model gives scores, not class probabilities; use "
                        "predict() for anomaly_score, label and confidence")

    def heatmap(self, path: PathLike) -> np.ndarray:
        """Float32 map of how unlike the normal patches each place of the image is, at the
        image's own size (height, width)."""
        pixels = read_rgb(path)
        return heatmap(self.patch_distances(pixels), (pixels.shape[1], pixels.shape[0]),
                       sigma=self.sigma)

    def predict(self, paths: Sequence[PathLike], *, batch_size: int = 8,
                heatmaps: bool = False) -> list[dict[str, Any]]:
        """One dict per image: ``filepath``, ``label`` (the normal class or ``"anomaly"``),
        ``anomaly_score``, ``confidence``, and with ``heatmaps=True`` the ``heatmap``
        (float32 at the image's size). An unreadable image raises ValueError naming it."""
        found: list[dict[str, Any]] = []
        for path in paths:
            pixels = read_rgb(path)
            distances = self.patch_distances(pixels)
            score = float(distances.max())
            row: dict[str, Any] = {
                "filepath": str(path),
                "label": ANOMALY if score >= self.threshold else self.normal,
                "anomaly_score": score,
                "confidence": float(confidence(np.float32(score), self.threshold))}
            if heatmaps:
                row["heatmap"] = heatmap(distances, (pixels.shape[1], pixels.shape[0]),
                                         sigma=self.sigma)
            found.append(row)
        return found


__all__ = ["ANOMALY", "ANOMALY_FORMAT_VERSION", "SMOOTHING_PX", "STRIDE", "EdgeAnomaly",
           "aspect_size", "confidence", "heatmap", "resize_keeping_aspect"]
