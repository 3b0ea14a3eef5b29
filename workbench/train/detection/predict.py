"""A detector's boxes for pixels or image files, decoded exactly as an exported file
decodes them (score threshold, per-class NMS, most boxes kept), and as a frame."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from loupe_edge.predictor import postprocess_detections
from tqdm.auto import tqdm

from workbench.store.ingest.images import read_rgb
from workbench.train._loop import batches
from workbench.train.detection.retinanet import Detector

#: Columns of a prediction frame (plus ``sample_id`` / ``filepath`` and ``fold``).
BOX_COLUMNS = ("label", "confidence", "x", "y", "w", "h")


def _decoding(detector: Detector, score_threshold: float | None) -> dict[str, Any]:
    config = detector.config
    return {"score_threshold": config.score_threshold if score_threshold is None
            else float(score_threshold), "nms_iou": config.nms_iou,
            "max_detections": config.max_detections, "candidates": config.candidates}


@torch.inference_mode()
def detect(detector: Detector, pixels: torch.Tensor, *, batch_size: int = 16,
           score_threshold: float | None = None) -> list[dict[str, np.ndarray]]:
    """Detections (``labels``, ``scores``, relative ``boxes`` x, y, w, h) per image, for
    uint8 images (n, 3, S, S) already at the detector's size."""
    detector.eval()
    settings = _decoding(detector, score_threshold)
    found = []
    for part in batches(len(pixels), batch_size):
        scores, boxes = detector.raw(pixels[part])
        found += [postprocess_detections(s, b, **settings)
                  for s, b in zip(scores.numpy(), boxes.numpy(), strict=True)]
    return found


@torch.inference_mode()
def detect_files(detector: Detector, paths: Sequence[str], *, batch_size: int = 8,
                 score_threshold: float | None = None,
                 progress: bool = False) -> list[dict[str, np.ndarray]]:
    """Detections per image file, through the whole module (resizing included), exactly
    as an exported file computes them; consecutive images of one size share a batch."""
    detector.eval()
    settings = _decoding(detector, score_threshold)
    found: list[dict[str, np.ndarray]] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            scores, boxes = detector(torch.from_numpy(np.stack(batch)))
            found.extend(postprocess_detections(s, b, **settings)
                         for s, b in zip(scores.numpy(), boxes.numpy(), strict=True))
            batch.clear()

    for path in tqdm(paths, desc="detecting", unit="image", disable=not progress):
        pixels = read_rgb(path)
        if batch and (pixels.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(pixels)
    flush()
    return found


def detection_frame(found: Sequence[dict[str, np.ndarray]], classes: Sequence[str],
                    key: str, keys: Sequence[Any]) -> pd.DataFrame:
    """One row per box: ``key`` (sample_id or filepath), label, confidence, x, y, w, h."""
    rows = {key: [], **{c: [] for c in BOX_COLUMNS}}
    for value, result in zip(keys, found, strict=True):
        n = len(result["scores"])
        rows[key] += [value] * n
        rows["label"] += [classes[int(c)] for c in result["labels"]]
        rows["confidence"] += result["scores"].astype(float).tolist()
        for i, column in enumerate("xywh"):
            rows[column] += result["boxes"][:, i].astype(float).tolist()
    frame = pd.DataFrame(rows)
    frame[key] = frame[key].astype(object)
    frame["label"] = frame["label"].astype(object)
    return frame


__all__ = ["BOX_COLUMNS", "detect", "detect_files", "detection_frame"]
