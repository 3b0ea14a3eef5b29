"""Export a trained model to one file that runs without Loupe: ONNX or TorchScript.

Resizing and normalisation are part of the graph: the file takes uint8 RGB images of shape
(N, H, W, 3), any N, H and W, and returns class probabilities (N, n_classes). Class names,
image size, version and project travel inside the file as JSON metadata, so
:class:`workbench.edge.EdgePredictor` needs nothing but the file (and numpy, Pillow and
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
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from workbench.classifier import Classifier
from workbench.edge import EXTRA_FILE, FORMAT_VERSION, JIT_DEPRECATION, METADATA_KEY, EdgePredictor

ExportFormat = Literal["onnx", "torchscript"]

#: Largest max-abs difference in probabilities accepted between the file and the model.
TOLERANCE = 1e-3
#: ONNX opset: 18 is the first whose Resize has the ``antialias`` attribute.
OPSET = 18
#: Suffixes :class:`~workbench.edge.EdgePredictor` recognises, per format.
SUFFIXES: dict[str, tuple[str, ...]] = {"onnx": (".onnx",), "torchscript": (".pt", ".ts")}

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
#: Smallest image side the ONNX graph is declared for (smaller ones still run in onnxruntime).
_MIN_SIDE = 16
#: (batch, height, width) of the traced sample and of the check; they differ on purpose.
_SAMPLE_SHAPE = (2, 97, 131)
_CHECK_SHAPE = (3, 61, 45)


class ExportError(RuntimeError):
    """The model could not be exported, or the exported file disagrees with it."""


def _pixels(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Synthetic uint8 RGB images: smooth gradients plus noise, so resizing matters."""
    n, h, w = shape
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, h)[:, None, None] + np.linspace(0, 55, w)[None, :, None]
    noise = rng.integers(0, 60, size=(n, h, w, 3))
    return np.clip(ramp[None] * rng.uniform(0.3, 1.0, size=(n, 1, 1, 3)) + noise, 0,
                   255).astype(np.uint8)


def _write_onnx(module: Classifier, path: Path, metadata: dict[str, Any]) -> None:
    from torch.export import Dim

    shapes = {INPUT_NAME: {0: Dim("batch", min=1), 1: Dim("height", min=_MIN_SIDE),
                           2: Dim("width", min=_MIN_SIDE)}}
    sample = torch.from_numpy(_pixels(_SAMPLE_SHAPE, seed=0))
    program = torch.onnx.export(module, (sample,), dynamo=True, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                opset_version=OPSET, verbose=False, report=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.save(str(path), external_data=False)


def _write_torchscript(module: Classifier, path: Path, metadata: dict[str, Any]) -> None:
    sample = torch.from_numpy(_pixels(_SAMPLE_SHAPE, seed=0))
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, and still the only format
        # torch.jit.load reads without Loupe. Tracer warnings pass through: the check after
        # writing decides whether the trace holds for other sizes.
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
        with torch.no_grad():
            traced = torch.jit.trace(module, (sample,), check_trace=False)
        traced.save(str(path), _extra_files={EXTRA_FILE: json.dumps(metadata)})


_WRITERS: dict[str, Callable[[Classifier, Path, dict[str, Any]], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
}


def _metadata(model: object, classifier: Classifier, format: str) -> dict[str, Any]:
    import workbench

    config = getattr(model, "config", None)
    return {
        "format_version": FORMAT_VERSION,
        "format": format,
        "classes": list(classifier.classes),
        "image_size": int(classifier.image_size),
        "version": getattr(model, "name", None),
        "project": getattr(model, "project_name", None),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loupe_version": getattr(workbench, "__version__", None),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32",
                   "shape": ["batch", len(classifier.classes)]},
        "config": json.loads(json.dumps(config, default=str)) if config is not None else None,
    }


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


def export(model: object, format: ExportFormat, path: str | os.PathLike[str]) -> Path:
    """Write a model to one self-contained file for :class:`~workbench.edge.EdgePredictor`.

    Parameters
    ----------
    model : ModelVersion or Classifier
        A trained model version (anything with a ``.classifier``; its ``name``,
        ``project_name`` and ``config`` are recorded) or a bare
        :class:`~workbench.classifier.Classifier`. It is copied, never modified.
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
        ``model`` is neither a model version nor a Classifier.
    ExportError
        The exporter failed, or the written file disagrees with the model by more than
        :data:`TOLERANCE` on a check batch.
    """
    if format not in _WRITERS:
        raise ValueError(f"format={format!r} is not one of {list(_WRITERS)}.")
    classifier = getattr(model, "classifier", model)
    if not isinstance(classifier, Classifier):
        raise TypeError("model must be a model version (from wb.train) or a "
                        f"workbench.classifier.Classifier, got {type(model).__name__}.")
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUFFIXES[format]:
        raise ValueError(f"path {str(path)!r} must end in {' or '.join(SUFFIXES[format])} for "
                         f"format={format!r}: EdgePredictor picks its runtime by the suffix.")
    metadata = _metadata(model, classifier, format)
    module = copy.deepcopy(classifier).cpu().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, same suffix: os.replace is atomic and the check loads it like the target.
    partial = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")
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


__all__ = ["OPSET", "SUFFIXES", "TOLERANCE", "ExportError", "ExportFormat", "export"]
