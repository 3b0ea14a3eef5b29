"""The line's image statistics (``loupe_edge.stats``): how unfamiliar one image is and when a
window of images has drifted, against a deployment's reference statistics."""

from __future__ import annotations

import numpy as np
import pytest
from loupe_edge.stats import (
    COMPARED,
    MIN_WINDOW,
    PROPERTIES,
    Familiarity,
    RollingDrift,
    gray_of,
    image_properties,
)
from PIL import Image


def _reference(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = np.column_stack([rng.normal(0.5, 0.05, n), rng.normal(0.2, 0.02, n),
                             rng.normal(0.01, 0.002, n), np.full(n, 128.0), np.full(n, 128.0)])
    return {"properties": table, "property_names": np.array(PROPERTIES)}


def _props(brightness: float, contrast: float = 0.2, sharpness: float = 0.01) -> dict:
    return {"brightness": brightness, "contrast": contrast, "sharpness": sharpness}


def test_a_typical_image_scores_mid_and_a_strange_one_near_one():
    familiar = Familiarity(_reference())
    rng = np.random.default_rng(3)  # new images like the training ones: scores spread evenly
    scores = [familiar.score(_props(rng.normal(0.5, 0.05), rng.normal(0.2, 0.02),
                                    rng.normal(0.01, 0.002))) for _ in range(300)]
    assert 0.4 < np.mean(scores) < 0.6 and np.mean(np.array(scores) > 0.9) < 0.2
    assert familiar.score(_props(0.5)) == 0.0  # the centre itself: as familiar as it gets
    assert familiar.score(_props(0.2)) == 1.0  # darker than every training image
    assert familiar.score(_props(0.55)) < familiar.score(_props(0.6)) < familiar.score(
        _props(0.7))


def test_a_window_drifts_only_once_enough_shifted_images_are_in():
    drift = RollingDrift(Familiarity(_reference()), window=100)
    for _ in range(MIN_WINDOW - 1):
        drift.add(_props(0.3))
    assert drift.statistic > 3 and not drift.drifted  # too few images to say
    drift.add(_props(0.3))
    assert drift.drifted and drift.moved()["brightness"] < -3
    calm = RollingDrift(Familiarity(_reference()), window=100)
    rng = np.random.default_rng(1)
    for value in rng.normal(0.5, 0.05, 80):
        calm.add(_props(float(value)))
    assert not calm.drifted and calm.statistic < 0.5


def test_without_a_reference_nothing_is_claimed():
    familiar = Familiarity({})
    assert np.isnan(familiar.score(_props(0.5)))
    drift = RollingDrift(familiar)
    for _ in range(50):
        drift.add(_props(0.1))
    assert np.isnan(drift.statistic) and not drift.drifted and drift.moved() == {}


def test_statistics_match_the_workbench_drift_checks(tmp_path):
    """The edge computes image statistics exactly as the reference was computed (Pillow's
    grey conversion, then :func:`image_properties`)."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = tmp_path / "part.png"
    Image.fromarray(pixels).save(path)
    with Image.open(path) as image:
        expected = image_properties(np.asarray(image.convert("L")))
    got = image_properties(gray_of(pixels))
    for name in COMPARED:
        assert got[name] == pytest.approx(expected[name], rel=1e-3, abs=1e-6)
    assert (got["width"], got["height"]) == (60.0, 40.0)
    with pytest.raises(ValueError, match="at least 3x3"):
        image_properties(np.zeros((2, 5)))
