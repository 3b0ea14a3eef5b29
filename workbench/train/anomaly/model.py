"""``AnomalyModel``: a stored patch bank with its backbone, scoring image files.

The checkpoint holds tensors and plain values only (the bank, the feature settings, the
threshold); the backbone is rebuilt from the version's backbone name and weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from workbench.train.anomaly.patchcore import (
    PatchBank,
    PatchFeatures,
    PatchSettings,
    heatmap,
    patch_map,
)

#: ``model.pt`` format tag of an anomaly version.
ANOMALY_FORMAT = "loupe-anomaly-1"
#: The label of an image at or above the threshold.
ANOMALY = "anomaly"


def patch_box(size: tuple[int, int], grid: tuple[int, int], y: int, x: int
              ) -> tuple[int, int, int, int]:
    """The pixels of patch (y, x) of a (rows, columns) patch grid over an image of ``size`` =
    (width, height), widened to its 3x3 neighbourhood (what the patch's features saw):
    x0, y0, x1, y1."""
    width, height = size
    rows, columns = grid
    cell_w, cell_h = width / columns, height / rows
    return (max(0, int((x - 1) * cell_w)), max(0, int((y - 1) * cell_h)),
            min(width, int(np.ceil((x + 2) * cell_w))), min(height, int(np.ceil((y + 2) * cell_h))))


def open_image(path: str | Path) -> Image.Image:
    """The image at ``path``, decoded; a file that is not one raises ValueError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ValueError(f"{str(path)!r} cannot be read as an image ({error}); replace or "
                         "remove the file") from None


class AnomalyModel:
    """Scores images by their patches' distance to the normal patches kept in the bank."""

    def __init__(self, features: PatchFeatures, bank: PatchBank, settings: PatchSettings,
                 *, threshold: float, normal: str, source: np.ndarray | None = None) -> None:
        self.features, self.bank, self.settings = features.eval(), bank, settings
        self.threshold, self.normal = float(threshold), normal
        #: Where each kept patch comes from: (row of the version's snapshot, patch row,
        #: patch column), one line per bank row (None for a bank saved without it).
        self.source = source

    @classmethod
    def load(cls, checkpoint: Path, *, backbone: str, weights: Any) -> AnomalyModel:
        """From a version's ``model.pt`` (read as tensors and plain values only)."""
        from workbench.train.backbones import create_backbone

        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state.get("format") != ANOMALY_FORMAT:
            raise ValueError(f"{str(checkpoint)!r} is not an anomaly model "
                             f"(format {state.get('format')!r})")
        body, _ = create_backbone(backbone, weights=weights)
        settings = PatchSettings(image_size=int(state["image_size"]),
                                 mean=tuple(state["mean"]), std=tuple(state["std"]),
                                 indices=tuple(state["indices"]))
        source = state.get("bank_source")
        return cls(PatchFeatures(body, settings.indices), PatchBank(state["bank"].numpy()),
                   settings, threshold=float(state["threshold"]), normal=str(state["normal"]),
                   source=None if source is None else source.numpy())

    def checkpoint(self) -> dict[str, Any]:
        """What ``model.pt`` keeps."""
        return {"format": ANOMALY_FORMAT, "task": "anomaly",
                "bank": torch.from_numpy(self.bank.vectors.copy()),
                "image_size": self.settings.image_size, "mean": list(self.settings.mean),
                "std": list(self.settings.std), "indices": list(self.settings.indices),
                "threshold": self.threshold, "normal": self.normal,
                **({} if self.source is None else
                   {"bank_source": torch.from_numpy(self.source.astype(np.int64))})}

    def distances(self, image: Image.Image) -> np.ndarray:
        """Patch distances (h, w) of one decoded image."""
        return self.bank.distances(patch_map(self.features, image, self.settings))

    def score_files(self, paths: Sequence[str | Path], *, progress: bool = True
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each file's anomaly score (its highest patch distance) and its patch distances."""
        scores, maps = np.zeros(len(paths), dtype=np.float32), []
        for i, path in enumerate(tqdm(paths, desc="anomaly scores", unit="image",
                                      disable=not progress)):
            found = self.distances(open_image(path))
            scores[i] = float(found.max())
            maps.append(found)
        return scores, maps

    def worst_patch(self, image: Image.Image) -> dict[str, Any]:
        """The image's highest-scoring patch and the normal patch nearest to it:
        ``score``, ``box`` (x0, y0, x1, y1 in the image's pixels), and with a bank that
        knows its sources ``source_row`` (of the version's snapshot) and ``source_patch``
        (patch row and column in that image)."""
        found, index = self.bank.nearest(patch_map(self.features, image, self.settings))
        y, x = np.unravel_index(int(found.argmax()), found.shape)
        result: dict[str, Any] = {"score": float(found[y, x]),
                                  "box": patch_box(image.size, found.shape, int(y), int(x))}
        if self.source is not None:
            row, sy, sx = (int(v) for v in self.source[int(index[y, x])])
            result |= {"source_row": row, "source_patch": (sy, sx)}
        return result

    def heatmap(self, path: str | Path) -> np.ndarray:
        """Float32 patch distances at the image's own size (width x height as stored)."""
        image = open_image(path)
        return heatmap(self.distances(image), image.size)

    def confidence(self, scores: np.ndarray) -> np.ndarray:
        """How sure the label is: the score's distance from the threshold, relative to the
        threshold, capped at 1 (0 on the threshold)."""
        return np.clip(np.abs(scores - self.threshold) / max(self.threshold, 1e-12), 0, 1)

    def labels(self, scores: np.ndarray) -> np.ndarray:
        return np.where(scores >= self.threshold, ANOMALY, self.normal)


__all__ = ["ANOMALY", "ANOMALY_FORMAT", "AnomalyModel", "open_image", "patch_box"]
