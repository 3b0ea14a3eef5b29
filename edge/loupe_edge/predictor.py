"""Run an exported Loupe model where Loupe is not installed: a line-side box, a script, a service.

Needs Python >= 3.11, numpy, Pillow and onnxruntime (``.onnx`` files) or torch (``.pt`` /
``.ts`` TorchScript files), nothing else: this module imports no other part of Loupe, so it can
also be copied alone next to the model file. Resizing and normalisation are inside the
exported graph; images go in as decoded RGB pixels, exactly as ``ModelVersion.predict``
reads them.

>>> model = EdgePredictor("casing-v3.onnx")
>>> model.classes, model.version
(['ok', 'scratch', ...], 'v3')
>>> model.predict(["part_0001.png"])[0]["label"]
'scratch'

From a shell, one JSON line per image (exit status 1 if any image could not be read)::

    loupe-edge predict casing-v3.onnx part_0001.png part_0002.png
    python predictor.py casing-v3.onnx part_0001.png          # the file copied alone
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Key of the JSON metadata in an ONNX file's ``metadata_props``.
METADATA_KEY = "loupe"
#: Name of the JSON metadata file inside a TorchScript archive.
EXTRA_FILE = "loupe.json"
#: Version of the metadata layout :mod:`workbench.deploy.export` writes for classifiers.
FORMAT_VERSION = 1
#: Version it writes for box detectors (``"task": "detection"``; older predictors refuse
#: them by this number). This module reads both.
DETECTION_FORMAT_VERSION = 2
#: Newest metadata layout this module reads (3: anomaly models, ``loupe_edge.anomaly``).
NEWEST_FORMAT_VERSION = 3

_ONNX_SUFFIXES = (".onnx",)
_TORCHSCRIPT_SUFFIXES = (".pt", ".ts")
#: torch >= 2.10 marks ``torch.jit`` deprecated; loading a saved file still works.
JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"

PathLike = str | os.PathLike[str]
#: A loaded model as a function: uint8 (N, H, W, 3) batch -> its outputs, in order.
Runner = Callable[[np.ndarray], list[np.ndarray]]


def read_rgb(path: PathLike) -> np.ndarray:
    """Decode an image file to RGB pixels of shape (H, W, 3), uint8.

    The same decoding as ``workbench.store.ingest.images.read_rgb``: Pillow's ``convert("RGB")``, no
    EXIF rotation. Raises ValueError naming the file when it is missing or not an image.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ValueError(f"cannot read image {str(path)!r}: file not found") from None
    except IsADirectoryError:
        raise ValueError(f"cannot read image {str(path)!r}: is a folder, not a file") from None
    except Exception as error:  # Pillow raises many types for corrupt data
        raise ValueError(f"cannot decode image {str(path)!r} "
                         f"({type(error).__name__}: {error})") from None


def _load_onnx(path: Path, providers: Sequence[str] | None) -> tuple[Runner, str | None]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no optimiser notices on the console
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as error:  # onnxruntime raises its own types for unreadable models
        raise ValueError(f"{str(path)!r} is not a readable ONNX model "
                         f"({type(error).__name__}: {error}).") from error
    name = session.get_inputs()[0].name

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {name: pixels})

    return run, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


def _load_torchscript(path: Path, providers: Sequence[str] | None) -> tuple[Runner, str | None]:
    import torch

    if providers is not None:
        raise ValueError("providers applies to ONNX models only; a TorchScript model runs on "
                         "the CPU.")
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as error:  # a broken archive fails anywhere in the loader
        raise ValueError(f"{str(path)!r} is not a readable TorchScript model "
                         f"({type(error).__name__}: {error}).") from error
    module.eval()

    def run(pixels: np.ndarray) -> list[np.ndarray]:
        # no_grad, not inference_mode: under inference_mode the TorchScript executor runs
        # about ten times slower (torch 2.14, CPU).
        with torch.no_grad():
            out = module(torch.from_numpy(pixels))
        return [t.numpy() for t in out] if isinstance(out, tuple | list) else [out.numpy()]

    raw = extra[EXTRA_FILE]
    return run, (raw.decode() if isinstance(raw, bytes) else raw) or None


#: Suffix → loader returning the model as a function on uint8 (N, H, W, 3) batches, and the
#: raw metadata JSON (None when the file has none).
_LOADERS: dict[str, Callable[[Path, Sequence[str] | None], tuple[Runner, str | None]]] = {
    **dict.fromkeys(_ONNX_SUFFIXES, _load_onnx),
    **dict.fromkeys(_TORCHSCRIPT_SUFFIXES, _load_torchscript),
}


def _parse_metadata(raw: str | None, path: Path) -> dict[str, Any]:
    hint = "Export models with wb.export(model_version, 'onnx', path))."
    if raw is None:
        raise ValueError(f"{str(path)!r} is not a Loupe export: it carries no Loupe metadata. "
                         f"{hint}")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r}: its Loupe metadata is not valid JSON "
                         f"({error}).") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise ValueError(f"{str(path)!r}: its Loupe metadata has no format_version. {hint}")
    if version > NEWEST_FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} was exported in format {version}; this loupe-edge "
                         f"reads format {NEWEST_FORMAT_VERSION} at most. Install the "
                         "loupe-edge of the Loupe that exported the model.")
    classes = meta.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{str(path)!r}: its Loupe metadata lists no class names.")
    return meta


def _open(path: PathLike, providers: Sequence[str] | None
          ) -> tuple[Path, Runner, dict[str, Any]]:
    path = Path(path).expanduser()
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ValueError(f"cannot tell the format of {str(path)!r} from its suffix "
                         f"{path.suffix!r}; expected one of {list(_LOADERS)}.")
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {str(path)!r}.")
    run, raw = loader(path, providers)
    return path, run, _parse_metadata(raw, path)


def _task(metadata: dict[str, Any]) -> str:
    return str(metadata.get("task") or "classification")


def _predictor(opened: tuple[Path, Runner, dict[str, Any]]) -> EdgePredictor:
    """A new, not yet initialised predictor for an opened file: an ``EdgeAnomaly`` for an
    anomaly export, an :class:`EdgePredictor` otherwise (``__init__`` reuses ``opened``)."""
    kind: type = EdgePredictor
    if _task(opened[2]) == "anomaly":
        from loupe_edge.anomaly import EdgeAnomaly

        kind = EdgeAnomaly
    predictor = object.__new__(kind)
    predictor._opened = opened
    return predictor


class EdgePredictor:
    """An exported model, loaded with its class names, ready to label image files.

    An anomaly export (``wb.train(p, task="anomaly")``) gives a
    ``loupe_edge.anomaly.EdgeAnomaly``: scores, ok/anomaly labels and heatmaps.

    Parameters
    ----------
    path : str or path-like
        A file written by ``wb.export``: ``.onnx`` (run by onnxruntime) or ``.pt`` /
        ``.ts`` (TorchScript, run by torch).
    providers : sequence of str, optional
        onnxruntime execution providers, e.g. ``["CUDAExecutionProvider",
        "CPUExecutionProvider"]``; the CPU by default.

    Attributes
    ----------
    classes : list of str
        Class names, column for column of :meth:`predict_proba`.
    version : str or None
        Name of the model version that was exported (``"v3"``).
    project : str or None
        Name of the project it was trained in.
    image_size : int
        Side of the square every image is resized to inside the model.
    metadata : dict
        Everything the export recorded (also ``created_at``, ``format``, ``config``).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        An unknown suffix, an unreadable model, or a model that is not a Loupe export.
    """

    def __new__(cls, path: PathLike, *, providers: Sequence[str] | None = None
                ) -> EdgePredictor:
        if cls is not EdgePredictor:
            return super().__new__(cls)
        return _predictor(_open(path, providers))

    def __init__(self, path: PathLike, *, providers: Sequence[str] | None = None) -> None:
        opened = self.__dict__.pop("_opened", None)  # set by _predictor
        self.path, self._run, self.metadata = opened or _open(path, providers)
        if _task(self.metadata) != "classification":
            raise ValueError(f"{str(self.path)!r} is a box detector, not a classifier; load it "
                             "with EdgeDetector.")
        self.classes: list[str] = list(self.metadata["classes"])
        self.version: str | None = self.metadata.get("version")
        self.project: str | None = self.metadata.get("project")
        self.image_size: int | None = self.metadata.get("image_size")

    def __repr__(self) -> str:
        return (f"EdgePredictor({str(self.path)!r}, version={self.version!r}, "
                f"classes={self.classes!r})")

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of decoded images.

        Parameters
        ----------
        pixels : ndarray of shape (n_images, H, W, 3), uint8
            RGB images of one size.

        Returns
        -------
        ndarray of shape (n_images, n_classes), float32
        """
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError("pixels must be a uint8 array of shape (n_images, H, W, 3), got "
                             f"{pixels.dtype} of shape {pixels.shape}.")
        out = np.asarray(self._run(np.ascontiguousarray(pixels))[0], dtype=np.float32)
        if out.shape != (len(pixels), len(self.classes)):
            raise ValueError(f"{str(self.path)!r} returned shape {out.shape} for "
                             f"{len(pixels)} images; its metadata lists {len(self.classes)} "
                             "classes.")
        return out

    def predict_proba(self, paths: Sequence[PathLike], *, batch_size: int = 8) -> np.ndarray:
        """Class probabilities of image files, row i for ``paths[i]``.

        Consecutive images of the same size share a batch of at most ``batch_size``.

        Parameters
        ----------
        paths : sequence of str or path-like
            Image files of any size and mode (converted to RGB).
        batch_size : int, default 8

        Returns
        -------
        ndarray of shape (n_images, n_classes), float32

        Raises
        ------
        ValueError
            Naming the first file that is missing or cannot be decoded.
        """
        if isinstance(paths, str | os.PathLike):
            raise TypeError("paths must be a list of image paths; for one image pass [path].")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        out = np.empty((len(paths), len(self.classes)), dtype=np.float32)
        batch: list[np.ndarray] = []
        start = 0
        for path in paths:
            pixels = read_rgb(path)
            if batch and (pixels.shape != batch[0].shape or len(batch) == batch_size):
                out[start:start + len(batch)] = self.predict_pixels(np.stack(batch))
                start, batch = start + len(batch), []
            batch.append(pixels)
        if batch:
            out[start:] = self.predict_pixels(np.stack(batch))
        return out

    def predict(self, paths: Sequence[PathLike], *, batch_size: int = 8) -> list[dict[str, Any]]:
        """Label image files.

        Returns
        -------
        list of dict, one per path, in order
            ``filepath`` (str), ``label`` (most probable class), ``confidence`` (its
            probability) and ``probabilities`` (class name → probability).
        """
        probs = self.predict_proba(paths, batch_size=batch_size)
        results = []
        for path, row in zip(paths, probs, strict=True):
            best = int(np.argmax(row))
            results.append({"filepath": str(path), "label": self.classes[best],
                            "confidence": float(row[best]),
                            "probabilities": dict(zip(self.classes, map(float, row),
                                                      strict=True))})
        return results


def _iou_one(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``x1, y1, x2, y2`` box with each row of ``others``."""
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[_iou_one(boxes[best], boxes[order]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def postprocess_detections(scores: np.ndarray, boxes: np.ndarray, *,
                           score_threshold: float = 0.05, nms_iou: float = 0.5,
                           max_detections: int = 50, candidates: int = 1000
                           ) -> dict[str, np.ndarray]:
    """One image's detections from per-anchor scores and boxes.

    Parameters
    ----------
    scores : ndarray (n_anchors, n_classes)
        Sigmoid class scores.
    boxes : ndarray (n_anchors, 4)
        Relative ``x1, y1, x2, y2`` of each anchor's decoded box.
    score_threshold, nms_iou, max_detections, candidates
        Drop (anchor, class) pairs below ``score_threshold``; keep the ``candidates`` best;
        suppress, per class, boxes overlapping a better one by more than ``nms_iou``; keep
        the ``max_detections`` best.

    Returns
    -------
    dict
        ``labels`` (int64 class indices), ``scores`` (float32), ``boxes`` (float32, relative
        ``x, y, w, h``: top-left corner and size), best score first.
    """
    scores = np.asarray(scores, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    n_classes = scores.shape[1]
    flat = scores.ravel()
    chosen = np.flatnonzero(flat > score_threshold)
    if chosen.size > candidates:
        chosen = chosen[np.argsort(-flat[chosen], kind="stable")[:candidates]]
    anchor, label, score = chosen // n_classes, chosen % n_classes, flat[chosen]
    xyxy = boxes[anchor]
    sized = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    anchor, label, score, xyxy = anchor[sized], label[sized], score[sized], xyxy[sized]
    kept = [np.flatnonzero(label == c)[_nms(xyxy[label == c], score[label == c], nms_iou)]
            for c in np.unique(label)]
    keep = np.concatenate(kept) if kept else np.empty(0, dtype=np.int64)
    keep = keep[np.argsort(-score[keep], kind="stable")][:max_detections]
    xyxy = xyxy[keep]
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    return {"labels": label[keep].astype(np.int64), "scores": score[keep].astype(np.float32),
            "boxes": xywh.astype(np.float32).reshape(-1, 4)}


class EdgeDetector:
    """An exported box detector, loaded with its class names, ready to find defects.

    The file maps uint8 RGB images (N, H, W, 3) to per-anchor class scores (N, A, C) and
    relative boxes (N, A, 4); the score threshold, per-class NMS and the number of boxes
    kept are applied here with numpy, with the settings the export recorded.

    >>> model = EdgeDetector("casing-v4.onnx")
    >>> model.predict(["part_0001.png"])[0]["boxes"]
    [{'label': 'scratch', 'confidence': 0.91, 'x': 0.12, 'y': 0.4, 'w': 0.3, 'h': 0.05}]

    Parameters
    ----------
    path : str or path-like
        A detector written by ``wb.export`` (``.onnx``, or ``.pt`` / ``.ts``).
    providers : sequence of str, optional
        onnxruntime execution providers; the CPU by default.

    Attributes
    ----------
    classes, version, project, image_size, metadata
        As :class:`EdgePredictor` has them.
    decoding : dict
        ``score_threshold``, ``nms_iou``, ``max_detections``, ``candidates``.
    """

    def __init__(self, path: PathLike, *, providers: Sequence[str] | None = None) -> None:
        self.path, self._run, self.metadata = _open(path, providers)
        if _task(self.metadata) != "detection":
            raise ValueError(f"{str(self.path)!r} is a classifier, not a box detector; load it "
                             "with EdgePredictor.")
        self.classes: list[str] = list(self.metadata["classes"])
        self.version: str | None = self.metadata.get("version")
        self.project: str | None = self.metadata.get("project")
        self.image_size: int | None = self.metadata.get("image_size")
        self.decoding: dict[str, Any] = dict(self.metadata.get("decoding") or {})

    def __repr__(self) -> str:
        return (f"EdgeDetector({str(self.path)!r}, version={self.version!r}, "
                f"classes={self.classes!r})")

    def predict_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs for a batch of decoded images of one size: scores (N, A, C) and
        relative boxes ``x1, y1, x2, y2`` (N, A, 4), float32."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError("pixels must be a uint8 array of shape (n_images, H, W, 3), got "
                             f"{pixels.dtype} of shape {pixels.shape}.")
        scores, boxes = (np.asarray(a, dtype=np.float32)
                         for a in self._run(np.ascontiguousarray(pixels))[:2])
        if scores.shape[::2] != (len(pixels), len(self.classes)) or boxes.shape[-1] != 4:
            raise ValueError(f"{str(self.path)!r} returned shapes {scores.shape} and "
                             f"{boxes.shape} for {len(pixels)} images; its metadata lists "
                             f"{len(self.classes)} classes.")
        return scores, boxes

    def detect_pixels(self, pixels: np.ndarray, *, score_threshold: float | None = None
                      ) -> list[dict[str, np.ndarray]]:
        """Per image of the batch, :func:`postprocess_detections`' arrays."""
        settings = dict(self.decoding)
        if score_threshold is not None:
            settings["score_threshold"] = float(score_threshold)
        scores, boxes = self.predict_pixels(pixels)
        return [postprocess_detections(s, b, **settings) for s, b in zip(scores, boxes,
                                                                           strict=True)]

    def predict(self, paths: Sequence[PathLike], *, batch_size: int = 8,
                score_threshold: float | None = None) -> list[dict[str, Any]]:
        """Find boxes in image files.

        Returns
        -------
        list of dict, one per path, in order
            ``filepath`` and ``boxes``: a list (best first) of ``label``, ``confidence``
            and ``x, y, w, h`` (relative top-left corner and size).
        """
        if isinstance(paths, str | os.PathLike):
            raise TypeError("paths must be a list of image paths; for one image pass [path].")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        found: list[dict[str, np.ndarray]] = []
        batch: list[np.ndarray] = []
        for path in paths:
            pixels = read_rgb(path)
            if batch and (pixels.shape != batch[0].shape or len(batch) == batch_size):
                found += self.detect_pixels(np.stack(batch), score_threshold=score_threshold)
                batch = []
            batch.append(pixels)
        if batch:
            found += self.detect_pixels(np.stack(batch), score_threshold=score_threshold)
        return [{"filepath": str(path), "boxes": [
            {"label": self.classes[int(c)], "confidence": float(s),
             **dict(zip("xywh", map(float, box), strict=True))}
            for c, s, box in zip(result["labels"], result["scores"], result["boxes"],
                                 strict=True)]}
            for path, result in zip(paths, found, strict=True)]


def load_model(path: PathLike, *, providers: Sequence[str] | None = None
               ) -> EdgePredictor | EdgeDetector:
    """An :class:`EdgePredictor`, an :class:`EdgeDetector` or an anomaly model
    (``loupe_edge.anomaly.EdgeAnomaly``), as the file's metadata says."""
    opened = _open(path, providers)
    if _task(opened[2]) == "detection":
        return EdgeDetector(path, providers=providers)
    predictor = _predictor(opened)
    predictor.__init__(path, providers=providers)
    return predictor


def main(argv: Sequence[str] | None = None) -> int:
    """Print one JSON line per image; exit status 1 when an image could not be read."""
    parser = argparse.ArgumentParser(
        prog="loupe-edge predict",
        description="Label images with a model exported by Loupe (one JSON line per image).")
    parser.add_argument("model", help="an exported .onnx, .pt or .ts file")
    parser.add_argument("images", nargs="+", help="image files")
    args = parser.parse_args(argv)
    try:
        predictor = load_model(args.model)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status = 0
    for image in args.images:
        try:
            line = predictor.predict([image])[0]
        except ValueError as error:
            line, status = {"filepath": image, "error": str(error)}, 1
        print(json.dumps(line), flush=True)
    return status


__all__ = ["DETECTION_FORMAT_VERSION", "EXTRA_FILE", "FORMAT_VERSION", "METADATA_KEY",
           "NEWEST_FORMAT_VERSION",
           "EdgeDetector", "EdgePredictor", "load_model", "main", "postprocess_detections",
           "read_rgb"]

if __name__ == "__main__":
    sys.exit(main())
