"""Export a trained model to one file that runs without Loupe: ONNX or TorchScript.

Resizing and normalisation are part of the graph: the file takes uint8 RGB images of shape
(N, H, W, 3), any N, H and W, and returns class probabilities (N, n_classes). Class names,
image size, version and project travel inside the file as JSON metadata, so
:class:`workbench.deploy.edge.EdgePredictor` needs nothing but the file (and numpy, Pillow and
onnxruntime or torch) to give the same labels as ``ModelVersion.predict``.

>>> path = wb.export(mv, "onnx", "exports/casing-v3.onnx")
>>> EdgePredictor(path).predict(["part_0001.png"])

Every export is checked before it replaces anything at ``path``: the written file is loaded
as the edge box would load it and must agree with the torch model within
:data:`TOLERANCE` on synthetic images of another size and batch than the ones it was traced
with.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from loupe_edge.predictor import (
    DETECTION_FORMAT_VERSION,
    EXTRA_FILE,
    FORMAT_VERSION,
    JIT_DEPRECATION,
    METADATA_KEY,
    EdgeDetector,
    EdgePredictor,
    postprocess_detections,
)

from workbench.errors import LoupeError
from workbench.keywords import renamed
from workbench.store.leftovers import partial_path, remove_stale
from workbench.train.classification.network import Classifier

ExportFormat = Literal["onnx", "torchscript"]

#: Largest max-abs difference in probabilities accepted between the file and the model.
TOLERANCE = 1e-3
#: ONNX opset: 18 is the first whose Resize has the ``antialias`` attribute.
OPSET = 18
#: Suffixes :class:`~workbench.deploy.edge.EdgePredictor` recognises, per format.
SUFFIXES: dict[str, tuple[str, ...]] = {"onnx": (".onnx",), "torchscript": (".pt", ".ts")}

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
#: A detector's outputs: per-anchor class scores (N, A, C) and relative boxes (N, A, 4).
DETECTION_OUTPUTS = ("scores", "boxes")
#: Smallest image side the ONNX graph is declared for (smaller ones still run in onnxruntime).
_MIN_SIDE = 16
#: (batch, height, width) of the traced sample and of the check; they differ on purpose.
_SAMPLE_SHAPE = (2, 97, 131)
_CHECK_SHAPE = (3, 61, 45)


class ExportError(LoupeError, RuntimeError):
    """The model could not be exported, or the exported file disagrees with it."""


def _pixels(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Synthetic uint8 RGB images: smooth gradients plus noise, so resizing matters."""
    n, h, w = shape
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, h)[:, None, None] + np.linspace(0, 55, w)[None, :, None]
    noise = rng.integers(0, 60, size=(n, h, w, 3))
    return np.clip(ramp[None] * rng.uniform(0.3, 1.0, size=(n, 1, 1, 3)) + noise, 0,
                   255).astype(np.uint8)


def _write_onnx(module: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    from torch.export import Dim

    shapes = {INPUT_NAME: {0: Dim("batch", min=1), 1: Dim("height", min=_MIN_SIDE),
                           2: Dim("width", min=_MIN_SIDE)}}
    sample = torch.from_numpy(_pixels(_SAMPLE_SHAPE, seed=0))
    outputs = list(DETECTION_OUTPUTS) if metadata.get("task") == "detection" else [OUTPUT_NAME]
    program = torch.onnx.export(module, (sample,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=outputs, dynamic_shapes=shapes,
                                opset_version=OPSET, verbose=False, report=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.save(str(path), external_data=False)


def _write_torchscript(module: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    sample = torch.from_numpy(_pixels(_SAMPLE_SHAPE, seed=0))
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, and still the only format
        # torch.jit.load reads without Loupe. Tracer warnings pass through: the check after
        # writing decides whether the trace holds for other sizes.
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, (sample,), check_trace=False)
        traced.save(str(path), _extra_files={EXTRA_FILE: json.dumps(metadata)})


_WRITERS: dict[str, Callable[[torch.nn.Module, Path, dict[str, Any]], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
}


def _loupe_version() -> str | None:
    """The installed Loupe's version (None when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loupe-workbench")
    except PackageNotFoundError:
        return None


def _metadata(model: object, classifier: Classifier, format: str) -> dict[str, Any]:
    config = getattr(model, "config", None)
    return {
        "format_version": FORMAT_VERSION,
        "format": format,
        "classes": list(classifier.classes),
        "image_size": int(classifier.image_size),
        "version": getattr(model, "name", None),
        "project": getattr(model, "project_name", None),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loupe_version": _loupe_version(),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32",
                   "shape": ["batch", len(classifier.classes)]},
        "config": json.loads(json.dumps(config, default=str)) if config is not None else None,
        # softmax(log p / temperature) is inside the graph; recorded for the reader
        "calibration": {"method": "temperature",
                        "temperature": float(getattr(classifier, "temperature", 1.0))},
    }


def _detection_metadata(model: object, detector: Any, format: str) -> dict[str, Any]:
    config = getattr(model, "config", None)
    decoding = {k: getattr(detector.config, k) for k in
                ("score_threshold", "nms_iou", "max_detections", "candidates")}
    n_anchors = int(detector.anchors.shape[0])
    return {
        "format_version": DETECTION_FORMAT_VERSION,
        "format": format,
        "task": "detection",
        "model": "retinanet",
        "classes": list(detector.classes),
        "image_size": int(detector.image_size),
        "version": getattr(model, "name", None),
        "project": getattr(model, "project_name", None),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loupe_version": _loupe_version(),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB"},
        "outputs": [{"name": DETECTION_OUTPUTS[0], "dtype": "float32",
                     "shape": ["batch", n_anchors, len(detector.classes)],
                     "meaning": "sigmoid class score of each anchor's box"},
                    {"name": DETECTION_OUTPUTS[1], "dtype": "float32",
                     "shape": ["batch", n_anchors, 4],
                     "meaning": "relative x1, y1, x2, y2 of each anchor's decoded box"}],
        "decoding": decoding,
        "detector": detector.config.to_dict(),
        "config": json.loads(json.dumps(config, default=str)) if config is not None else None,
    }


def _sample_images(model: object, limit: int = 2) -> list[np.ndarray]:
    """Up to ``limit`` images a version was trained on (of one size), when still on disk."""
    from workbench.store.ingest.images import read_rgb

    snapshot = getattr(model, "snapshot", None)
    if snapshot is None:
        return []
    try:
        paths = list(snapshot()["filepath"])
    except Exception:  # an old or partial version: the synthetic check still runs
        return []
    images: list[np.ndarray] = []
    for path in paths:
        try:
            pixels = read_rgb(path)
        except Exception:  # moved or unreadable files are simply not used
            continue
        if not images or pixels.shape == images[0].shape:
            images.append(pixels)
        if len(images) == limit:
            break
    return images


def _detections_difference(expected: dict[str, np.ndarray], got: dict[str, np.ndarray],
                           margin: float) -> float:
    """Largest score or coordinate difference between the boxes two runs kept, each matched
    to its closest box of the same class; inf when a box clearly above the threshold (by
    ``margin``) has no counterpart."""
    worst = 0.0
    for a, b in ((expected, got), (got, expected)):
        for label, score, box in zip(a["labels"], a["scores"], a["boxes"], strict=True):
            same = b["labels"] == label
            if not same.any():
                if score > margin:
                    return float("inf")
                continue
            gaps = np.maximum(np.abs(b["boxes"][same] - box).max(axis=1),
                              np.abs(b["scores"][same] - score))
            if score > margin or gaps.min() <= margin:
                worst = max(worst, float(gaps.min()))
    return worst


def _check_detector(module: Any, path: Path, samples: list[np.ndarray]) -> tuple[float, float]:
    """Max abs difference of the raw outputs (scores and boxes) between the file, loaded as
    an edge box loads it, and the module, on synthetic images and ``samples``; and of the
    final boxes after decoding."""
    batches = [_pixels(_CHECK_SHAPE, seed=1)] + ([np.stack(samples)] if samples else [])
    try:
        edge = EdgeDetector(path)
    except Exception as error:
        raise ExportError(f"the exported detector cannot be loaded ({type(error).__name__}: "
                          f"{error}).") from error
    raw = final = 0.0
    for pixels in batches:
        with torch.no_grad():
            scores, boxes = (t.numpy() for t in module(torch.from_numpy(pixels)))
        try:
            got_scores, got_boxes = edge.predict_pixels(pixels)
        except Exception as error:
            raise ExportError(f"the exported detector does not run on a batch of "
                              f"{len(pixels)} images of {pixels.shape[1]}x{pixels.shape[2]} "
                              f"pixels ({type(error).__name__}: {error}).") from error
        raw = max(raw, float(np.abs(got_scores - scores).max()),
                  float(np.abs(got_boxes - boxes).max()))
        threshold = min(edge.decoding.get("score_threshold", 0.05), 0.01)
        settings = {**edge.decoding, "score_threshold": threshold}
        for i in range(len(pixels)):
            final = max(final, _detections_difference(
                postprocess_detections(scores[i], boxes[i], **settings),
                postprocess_detections(got_scores[i], got_boxes[i], **settings),
                margin=threshold + 10 * TOLERANCE))
    return raw, final


def _export_detector(model: object, detector: Any, format: str, path: Path,
                     partial: Path) -> None:
    metadata = _detection_metadata(model, detector, format)
    module = copy.deepcopy(detector).cpu().eval()
    try:
        _WRITERS[format](module, partial, metadata)
    except Exception as error:
        raise ExportError(f"{format} export failed ({type(error).__name__}: {error}).") \
            from error
    raw, final = _check_detector(module, partial, _sample_images(model))
    if not (raw <= TOLERANCE and final <= TOLERANCE):
        raise ExportError(
            f"the {format} detector disagrees with the model: raw scores and boxes differ by "
            f"up to {raw:.2g}, final boxes by {final:.2g} (tolerance {TOLERANCE:g}). Nothing "
            f"was written to {str(path)!r}; try the other format.")


def _check(module: Classifier, path: Path) -> float:
    """Max abs difference between the file, loaded as an edge box loads it, and the model."""
    pixels = _pixels(_CHECK_SHAPE, seed=1)
    with torch.no_grad():
        expected = module(torch.from_numpy(pixels)).numpy()
    try:
        got = EdgePredictor(path).predict_pixels(pixels)
    except Exception as error:
        raise ExportError(f"the exported file does not run on a batch of {_CHECK_SHAPE[0]} "
                          f"images of {_CHECK_SHAPE[1]}x{_CHECK_SHAPE[2]} pixels "
                          f"({type(error).__name__}: {error}).") from error
    return float(np.abs(got - expected).max())


@renamed(model="version")
def export(version: object, format: ExportFormat, path: str | os.PathLike[str]) -> Path:
    """Write a model version to one self-contained file for
    :class:`~workbench.deploy.edge.EdgePredictor`.

    Parameters
    ----------
    version : ModelVersion, Classifier or Detector
        A trained model version (anything with a ``.classifier``, a detection version
        with a ``.detector``, or an anomaly version: its backbone and normal patch bank,
        read by ``EdgePredictor`` as an ``EdgeAnomaly``, see
        :mod:`workbench.deploy.anomaly_export`; its ``name``, ``project_name`` and
        ``config`` are recorded),
        a bare :class:`~workbench.train.classification.network.Classifier` or a bare
        :class:`~workbench.train.detection.retinanet.Detector`. It is copied, never modified. A
        detector's
        file returns per-anchor scores and relative boxes; score threshold, per-class NMS
        and the number of boxes kept are recorded in its metadata and applied by
        :class:`~workbench.deploy.edge.EdgeDetector` (raw outputs and final boxes are both
        checked, on synthetic images and on up to two of the version's images).
    format : {"onnx", "torchscript"}
        ``"onnx"``: opset 18, run with onnxruntime; dynamic batch, height and width.
        ``"torchscript"``: a traced module for ``torch.jit.load``.
    path : str or path-like
        Destination, ending in ``.onnx`` for ONNX, ``.pt`` or ``.ts`` for TorchScript.
        Missing folders are created; an existing file is replaced only once the new one
        has passed the check.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        Unknown format, or a suffix that does not match it.
    TypeError
        ``version`` is neither a model version nor a Classifier.
    ExportError
        The exporter failed, or the written file disagrees with the model by more than
        :data:`TOLERANCE` on a check batch.
    """
    if format not in _WRITERS:
        raise ValueError(f"format={format!r} is not one of {list(_WRITERS)}.")
    if getattr(version, "task", None) == "anomaly":
        return _export(version, None, format, path)
    from workbench.train.detection.retinanet import Detector

    detector = version.detector if getattr(version, "task", None) == "detection" else version
    if isinstance(detector, Detector):
        return _export(version, detector, format, path)
    classifier = getattr(version, "classifier", version)
    if not isinstance(classifier, Classifier):
        raise TypeError("version must be a model version (from wb.train), a "
                        "workbench.train.classification.network.Classifier or a "
                        "workbench.train.detection.retinanet.Detector, got "
                        f"{type(version).__name__}.")
    return _export(version, classifier, format, path)


def _export(model: object, network: torch.nn.Module | None, format: str,
            path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUFFIXES[format]:
        raise ValueError(f"path {str(path)!r} must end in {' or '.join(SUFFIXES[format])} for "
                         f"format={format!r}: EdgePredictor picks its runtime by the suffix.")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)  # what a killed export left in this folder
    # Same folder, same suffix: os.replace is atomic and the check loads it like the target.
    partial = partial_path(path, keep_suffix=True)
    if network is None:  # an anomaly version: its graph is built from the version
        from workbench.deploy.anomaly_export import export_anomaly

        try:
            export_anomaly(model, format, path, partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path
    if not isinstance(network, Classifier):
        try:
            _export_detector(model, network, format, path, partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path
    metadata = _metadata(model, network, format)
    module = copy.deepcopy(network).cpu().eval()
    try:
        try:
            _WRITERS[format](module, partial, metadata)
        except Exception as error:
            raise ExportError(f"{format} export failed ({type(error).__name__}: {error}).") \
                from error
        difference = _check(module, partial)
        if not difference <= TOLERANCE:
            raise ExportError(
                f"the {format} file disagrees with the model: probabilities differ by up to "
                f"{difference:.2g} (tolerance {TOLERANCE:g}) on a batch of {_CHECK_SHAPE[0]} "
                f"images of {_CHECK_SHAPE[1]}x{_CHECK_SHAPE[2]} pixels. Nothing was written to "
                f"{str(path)!r}; a module with Python control flow on tensor values or shapes "
                "cannot be traced faithfully: try the other format.")
        partial.replace(path)  # atomic: same folder
    finally:
        partial.unlink(missing_ok=True)
    return path


def detect_exported(path: str | os.PathLike[str], images: Any, *,
                    score_threshold: float | None = None, batch_size: int = 8) -> Any:
    """Run an exported detector on image files: the prediction frame, as the line-side box
    computes it (:class:`~workbench.deploy.edge.EdgeDetector`: onnxruntime, numpy, Pillow).

    Parameters
    ----------
    path : str or path-like
        A detector written by :func:`export`.
    images : str, path-like or sequence of them
    score_threshold : float, optional
        The lowest confidence kept; the one the export recorded by default.

    Returns
    -------
    pd.DataFrame
        One row per box: ``filepath``, ``label``, ``confidence``, ``x``, ``y``, ``w``, ``h``
        (relative top-left corner and size), images in input order, best box first.
    """
    import pandas as pd

    if isinstance(images, str | os.PathLike):
        images = [images]
    found = EdgeDetector(path).predict(list(images), batch_size=batch_size,
                                       score_threshold=score_threshold)
    rows = [{"filepath": image["filepath"], **box} for image in found
            for box in image["boxes"]]
    columns = ["filepath", "label", "confidence", "x", "y", "w", "h"]
    return pd.DataFrame(rows, columns=columns)


__all__ = ["DETECTION_OUTPUTS", "OPSET", "SUFFIXES", "TOLERANCE", "ExportError", "ExportFormat",
           "detect_exported", "export"]
