"""Export and edge prediction: a real trained version, exported once per format, must give
the labels and probabilities of ``mv.predict`` through files that need no Loupe to run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import workbench as wb
from workbench.deploy.edge import EdgePredictor
from workbench.deploy.export import ExportError, export
from workbench.train.classification.network import Classifier

PARITY = 1e-4
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_version(demo_project):
    """A probe trained on the small demo project at 64 px."""
    return wb.train(demo_project, mode="probe", folds=2, image_size=64, seed=0)


@pytest.fixture(scope="module")
def image_paths(demo_project) -> list[str]:
    """Twenty demo images spread over every class folder."""
    paths = sorted(demo_project.to_pandas()["filepath"])
    return [paths[i] for i in np.linspace(0, len(paths) - 1, 20).astype(int)]


@pytest.fixture(scope="module")
def exports(model_version, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    return {"onnx": export(model_version, "onnx", folder / "model.onnx"),
            "torchscript": export(model_version, "torchscript", folder / "model.pt")}


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> list[str]:
    """Images unlike the training ones: 100×70 RGB, grey, grey with alpha, 33×200 RGB."""
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("odd")
    images = {"wide.png": Image.fromarray(rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)),
              "grey.png": Image.fromarray(rng.integers(0, 256, (90, 90), dtype=np.uint8), "L"),
              "grey_alpha.png": Image.fromarray(rng.integers(0, 256, (50, 80, 2),
                                                             dtype=np.uint8), "LA"),
              "tall.jpg": Image.fromarray(rng.integers(0, 256, (200, 33, 3), dtype=np.uint8))}
    paths = []
    for name, image in images.items():
        image.save(folder / name)
        paths.append(str(folder / name))
    return paths


def _tiny_classifier(member: nn.Module | None = None) -> Classifier:
    """A three-parameter network: mean colour → two logits. Fast to export."""
    linear = nn.Linear(3, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.8, -0.4, 0.2], [-0.6, 0.4, 0.1]]))
        linear.bias.zero_()
    member = member or nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)
    return Classifier([member], image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                      classes=["ok", "scratch"]).eval()


class _ShapeDependent(nn.Module):
    """Scales logits by the batch size read as a Python int: a trace freezes that number."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _tiny_classifier().members[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * int(x.shape[0])


# ---------------------------------------------------------------- parity with mv.predict


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_edge_predictions_match_model_version(fmt, model_version, exports, image_paths):
    expected = model_version.predict(image_paths, progress=False)
    predictor = EdgePredictor(exports[fmt])
    results = predictor.predict(image_paths)

    assert predictor.classes == list(model_version.classes)
    assert predictor.version == model_version.name
    assert predictor.project == model_version.project_name
    assert [r["filepath"] for r in results] == list(expected["filepath"])
    assert [r["label"] for r in results] == list(expected["label"])
    got = np.array([[r["probabilities"][c] for c in predictor.classes] for r in results])
    assert np.abs(got - expected[predictor.classes].to_numpy()).max() < PARITY
    confidence = np.array([r["confidence"] for r in results])
    assert np.abs(confidence - expected["confidence"].to_numpy()).max() < PARITY
    proba = predictor.predict_proba(image_paths, batch_size=3)
    assert proba.dtype == np.float32 and proba.shape == (20, len(predictor.classes))
    assert np.abs(proba - got).max() < PARITY


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_images_of_other_sizes_and_modes_agree_with_the_classifier(fmt, model_version, exports,
                                                                 odd_images):
    expected = model_version.classifier.predict_files(odd_images)
    got = EdgePredictor(exports[fmt]).predict_proba(odd_images)
    assert np.abs(got - expected).max() < PARITY


def test_metadata_travels_with_the_file(model_version, exports):
    meta = EdgePredictor(exports["onnx"]).metadata
    assert meta["format"] == "onnx"
    assert meta["image_size"] == 64
    assert meta["classes"] == list(model_version.classes)
    assert meta["config"] == json.loads(json.dumps(model_version.config, default=str))
    assert meta["created_at"].endswith("+00:00")


def test_export_leaves_only_the_file(exports):
    assert sorted(p.name for p in exports["onnx"].parent.iterdir()) == ["model.onnx", "model.pt"]


# ---------------------------------------------------------------- runs without Loupe


def _run_python(code: str, cwd: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_edge_predictor_imports_neither_torch_nor_fiftyone(exports, image_paths):
    report = _run_python(f"""
        import json, sys
        from workbench.deploy.edge import EdgePredictor
        labels = [r["label"] for r in EdgePredictor({str(exports["onnx"])!r}).predict(
            {image_paths[:3]!r})]
        print(json.dumps({{"labels": labels, "loaded": [m for m in ("torch", "fiftyone")
                                                        if m in sys.modules]}}))
    """, cwd=REPO)
    assert len(report["labels"]) == 3
    assert report["loaded"] == []


def test_edge_module_runs_copied_alone(exports, image_paths, tmp_path):
    predictor = REPO / "edge" / "loupe_edge" / "predictor.py"  # the module of loupe-edge
    (tmp_path / "edge.py").write_text(predictor.read_text())
    report = _run_python(f"""
        import json, sys
        from edge import EdgePredictor
        result = EdgePredictor({str(exports["onnx"])!r}).predict({image_paths[:2]!r})
        print(json.dumps({{"labels": [r["label"] for r in result],
                          "loaded": [m for m in ("torch", "fiftyone", "pandas", "workbench",
                                                 "loupe_edge") if m in sys.modules]}}))
    """, cwd=tmp_path)
    assert len(report["labels"]) == 2
    assert report["loaded"] == []


def test_command_line_prints_one_json_line_per_image(exports, image_paths, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    done = subprocess.run([sys.executable, "-m", "workbench.deploy.edge", str(exports["onnx"]),
                           image_paths[0], str(broken)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1
    assert lines[0]["filepath"] == image_paths[0] and lines[0]["label"] in lines[0][
        "probabilities"]
    assert lines[1]["filepath"] == str(broken) and "broken.png" in lines[1]["error"]


# ---------------------------------------------------------------- errors


def test_unknown_format_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"'onnx', 'torchscript'"):
        export(_tiny_classifier(), "tflite", tmp_path / "model.tflite")


def test_suffix_must_match_the_format(tmp_path):
    with pytest.raises(ValueError, match=r"\.pt or \.ts"):
        export(_tiny_classifier(), "torchscript", tmp_path / "model.onnx")


def test_export_rejects_what_is_not_a_model(tmp_path):
    with pytest.raises(TypeError, match="Classifier"):
        export(nn.Linear(3, 2), "onnx", tmp_path / "model.onnx")


def test_missing_model_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        EdgePredictor(missing)


def test_unknown_suffix_lists_the_known_ones(tmp_path):
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\.onnx.*\.pt.*\.ts"):
        EdgePredictor(tmp_path / "model.h5")


def test_onnx_file_without_loupe_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(nn.Linear(3, 2).eval(), (torch.zeros(1, 3),), path, dynamo=True,
                      verbose=False)
    with pytest.raises(ValueError, match="not a Loupe export"):
        EdgePredictor(path)


def test_corrupt_image_is_named(tmp_path):
    model = export(_tiny_classifier(), "torchscript", tmp_path / "tiny.pt")
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 30, 3), 128, dtype=np.uint8)).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    predictor = EdgePredictor(model)
    with pytest.raises(ValueError, match=r"corrupt\.jpg"):
        predictor.predict([good, corrupt])
    with pytest.raises(ValueError, match=r"absent\.png"):
        predictor.predict([tmp_path / "absent.png"])
    with pytest.raises(TypeError, match=r"\[path\]"):
        predictor.predict(str(good))


def test_tiny_export_round_trips_both_formats(tmp_path):
    classifier = _tiny_classifier()
    pixels = np.random.default_rng(3).integers(0, 256, (4, 40, 24, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = classifier(torch.from_numpy(pixels)).numpy()
    for name in ("tiny.onnx", "tiny.ts"):
        fmt = "onnx" if name.endswith(".onnx") else "torchscript"
        predictor = EdgePredictor(export(classifier, fmt, tmp_path / "deep" / name))
        assert predictor.version is None and predictor.classes == ["ok", "scratch"]
        assert np.abs(predictor.predict_pixels(pixels) - expected).max() < PARITY


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_trace_that_freezes_a_shape_is_caught_and_nothing_is_written(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(ExportError, match="disagrees with the model"):
        export(_tiny_classifier(_ShapeDependent()), "torchscript", target)
    assert list(tmp_path.iterdir()) == []


def test_workbench_version_is_recorded(tmp_path):
    path = export(_tiny_classifier(), "torchscript", tmp_path / "tiny.pt")
    assert EdgePredictor(path).metadata["loupe_version"] == wb.__version__
