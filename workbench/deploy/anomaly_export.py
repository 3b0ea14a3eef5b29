"""Export an anomaly version (``task="anomaly"``): backbone, patch features and the normal
patch bank in one graph, read by ``loupe_edge.anomaly.EdgeAnomaly``.

The graph takes one image already resized with its aspect ratio kept (uint8, (1, H, W, 3);
the line-side predictor resizes with Pillow as the workbench does) and returns each patch's
distance to its nearest kept normal patch, (1, h, w). The nearest patch is found with the
expanded squared distance and its distance then computed directly from the difference, so
scores agree with the workbench's exact search to about 1e-6 relative.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loupe_edge.anomaly import ANOMALY_FORMAT_VERSION, SMOOTHING_PX, STRIDE, EdgeAnomaly
from PIL import Image
from torch import nn

from workbench.deploy.export import (
    EXTRA_FILE,
    INPUT_NAME,
    JIT_DEPRECATION,
    METADATA_KEY,
    OPSET,
    ExportError,
    _loupe_version,
    _pixels,
    _sample_images,
)

#: Most normal patches an exported bank may hold: each image's patches are compared with
#: all of them on the line PC (20,000 patches of 432 values: 35 MB in the file).
MAX_EXPORT_PATCHES = 20_000
#: Largest relative difference in scores accepted between the file and the version.
SCORE_TOLERANCE = 1e-4


class AnomalyGraph(nn.Module):
    """uint8 (1, H, W, 3) image -> (1, h, w) distances to the nearest normal patch."""

    def __init__(self, features: nn.Module, bank: np.ndarray, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__()
        self.features = features.eval()
        vectors = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
        self.register_buffer("bank", vectors)
        self.register_buffer("bank_squared", (vectors * vectors).sum(1))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        maps = self.features((x - self.mean) / self.std)
        n, c, h, w = maps.shape
        patches = maps.permute(0, 2, 3, 1).reshape(-1, c)
        squared = ((patches * patches).sum(1, keepdim=True) - 2 * patches @ self.bank.T
                   + self.bank_squared[None])
        nearest = self.bank[squared.argmin(1)]
        distances = (patches - nearest).pow(2).sum(1).sqrt()
        return distances.reshape(n, h, w)


#: The traced sample: (batch, height, width), sides multiples of the stride as every
#: resized image's are (the backbone's "same" padding is then the same for all of them).
_SAMPLE_SHAPE = (1, 3 * STRIDE, 5 * STRIDE)


def _write_onnx(graph: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """Traced ONNX (opset :data:`OPSET`) with dynamic height and width. torch.export's
    symbolic shapes take tens of minutes on the backbone's padding arithmetic; a trace at a
    stride multiple holds for every stride multiple, and the check after writing proves it
    on other sizes."""
    import warnings

    sample = torch.from_numpy(_pixels(_SAMPLE_SHAPE, seed=0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(graph, (sample,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=["patch_distances"], opset_version=OPSET,
                          dynamic_axes={INPUT_NAME: {1: "height", 2: "width"},
                                        "patch_distances": {1: "h", 2: "w"}})
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))


def _write_torchscript(graph: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    import warnings

    sample = torch.from_numpy(_pixels(_SAMPLE_SHAPE, seed=0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATION, category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # checked below
        traced = torch.jit.trace(graph, (sample,), check_trace=False)
    traced.save(str(path), _extra_files={EXTRA_FILE: json.dumps(metadata)})


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript}


def anomaly_metadata(version: object, model: Any, format: str) -> dict[str, Any]:
    """What travels in the file: the threshold, the normal class, the resizing and heatmap
    settings, the version and its configuration."""
    config = getattr(version, "config", None)
    return {
        "format_version": ANOMALY_FORMAT_VERSION, "format": format, "task": "anomaly",
        "model": "patchcore", "classes": [model.normal, "anomaly"], "normal": model.normal,
        "threshold": float(model.threshold), "image_size": int(model.settings.image_size),
        "stride": STRIDE, "smoothing_px": SMOOTHING_PX, "bank_size": len(model.bank),
        "version": getattr(version, "name", None),
        "project": getattr(version, "project_name", None),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loupe_version": _loupe_version(),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                  "resize": "shorter side to image_size, aspect kept, sides multiples of "
                            "stride (loupe_edge.anomaly.resize_keeping_aspect)"},
        "output": {"name": "patch_distances", "dtype": "float32",
                   "shape": ["batch", "h", "w"],
                   "meaning": "distance of each patch to the nearest normal patch; the image "
                              "score is the largest"},
        "config": json.loads(json.dumps(config, default=str)) if config is not None else None,
    }


def _check_images(version: object, limit: int = 2) -> list[Image.Image]:
    """Two synthetic images of different aspect ratios and up to ``limit`` of the version's
    own images."""
    synthetic = [_pixels((1, 61, 143), seed=1)[0], _pixels((1, 150, 70), seed=2)[0]]
    return [Image.fromarray(p) for p in synthetic + _sample_images(version, limit)]


def check_anomaly_export(model: Any, path: Path, images: list[Image.Image]) -> float:
    """Largest relative score difference between the file, loaded as the line loads it,
    and the version's own scoring."""
    try:
        edge = EdgeAnomaly(path)
    except Exception as error:
        raise ExportError(f"the exported anomaly model cannot be loaded "
                          f"({type(error).__name__}: {error}).") from error
    worst = 0.0
    for image in images:
        expected = model.distances(image)
        try:
            got = edge.patch_distances(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except Exception as error:
            raise ExportError(f"the exported anomaly model does not run on an image of "
                              f"{image.width}x{image.height} pixels ({type(error).__name__}: "
                              f"{error}).") from error
        if got.shape != expected.shape:
            return float("inf")
        scale = max(float(expected.max()), 1e-12)
        worst = max(worst, float(np.abs(got - expected).max()) / scale)
    return worst


def export_anomaly(version: object, format: str, path: Path, partial: Path) -> None:
    """Write ``version``'s anomaly model to ``partial`` and check it (``wb.export`` then
    moves it to ``path``)."""
    model = version.anomaly
    if len(model.bank) > MAX_EXPORT_PATCHES:
        fraction = MAX_EXPORT_PATCHES / len(model.bank) * version.config.get("coreset", 1.0)
        raise ExportError(
            f"version {getattr(version, 'name', '?')}'s memory bank holds {len(model.bank):,} "
            f"normal patches; an export holds at most {MAX_EXPORT_PATCHES:,} (each patch of "
            "each image is compared with all of them on the line PC). Coreset it down: "
            f"retrain with wb.train(project, task='anomaly', coreset={fraction:.3g}) or less.")
    graph = AnomalyGraph(model.features, model.bank.vectors, model.settings.mean,
                         model.settings.std).eval()
    metadata = anomaly_metadata(version, model, format)
    try:
        _WRITERS[format](graph, partial, metadata)
    except Exception as error:
        raise ExportError(f"{format} export of the anomaly model failed "
                          f"({type(error).__name__}: {error}).") from error
    difference = check_anomaly_export(model, partial, _check_images(version))
    if not difference <= SCORE_TOLERANCE:
        raise ExportError(
            f"the {format} anomaly model disagrees with the version: patch distances differ "
            f"by up to {difference:.2g} of the image's score (tolerance {SCORE_TOLERANCE:g}). "
            f"Nothing was written to {str(path)!r}; try the other format.")


__all__ = ["MAX_EXPORT_PATCHES", "SCORE_TOLERANCE", "AnomalyGraph", "anomaly_metadata",
           "check_anomaly_export", "export_anomaly"]
