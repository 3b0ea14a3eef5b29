"""Learning curves, data advice and the datasheet: planted hard class, exact power laws."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from workbench.metrics.advice import data_advice, learning_curve
from workbench.metrics.datasheet import alpha_reading, render_datasheet

CLASSES = ["crack", "dent", "scratch", "stain", "rust", "ok"]
HARD, NEIGHBOUR = "dent", "crack"


def _clusters(seed: int = 0, d: int = 40, n_easy: int = 60, n_hard: int = 40):
    """Well-separated Gaussian clusters, except 'dent' sits 2.5 sd from 'crack'."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), d))
    centres *= 8 / np.linalg.norm(centres, axis=1, keepdims=True)
    direction = rng.normal(size=d)
    centres[1] = centres[0] + 2.5 * direction / np.linalg.norm(direction)
    counts = [n_hard if name == HARD else n_easy for name in CLASSES]
    x = np.concatenate([c + rng.normal(size=(k, d)) for c, k in zip(centres, counts, strict=True)])
    return x.astype(np.float32), np.repeat(CLASSES, counts)


@pytest.fixture(scope="module")
def planted():
    x, y = _clusters()
    curve = learning_curve(x, y, classes=CLASSES)
    full = curve[curve["fraction"] == 1.0]
    counts = pd.Series(y).value_counts()
    current = pd.DataFrame({"class": full["class"].to_numpy(),
                            "n": counts[full["class"]].to_numpy(),
                            "recall": full["recall"].to_numpy()})
    return x, y, curve, current


def _power_curve(a: float, b: float, name: str = "dent") -> pd.DataFrame:
    n = np.array([25.0, 50.0, 75.0, 100.0])
    return pd.DataFrame({"fraction": n / 100, "class": name, "n_train": n,
                         "recall": 1 - a * n ** -b})


# --- learning_curve ------------------------------------------------------------------------

def test_learning_curve_is_a_long_frame_per_fraction_and_class(planted):
    curve = planted[2]
    assert list(curve.columns) == ["fraction", "class", "n_train", "recall"]
    assert len(curve) == 4 * len(CLASSES)
    assert curve["class"].tolist()[: len(CLASSES)] == CLASSES
    full = curve[curve["fraction"] == 1.0].set_index("class")["n_train"]
    assert full["crack"] == pytest.approx(60 * 4 / 5)
    quarter = curve[curve["fraction"] == 0.25].set_index("class")["n_train"]
    assert quarter["dent"] == pytest.approx(32 * 0.25, abs=0.5)
    assert curve["recall"].between(0, 1).all()


def test_hard_class_has_the_lowest_recall_and_it_rises_with_data(planted):
    _, _, curve, _ = planted
    table = curve.pivot(index="fraction", columns="class", values="recall")
    hard = table[HARD].to_numpy()
    assert (table.drop(columns=HARD).min(axis=1) > table[HARD]).all()
    assert hard[-1] - hard[0] >= 0.15
    assert np.all(np.diff(hard) > -0.05)
    easy = table.drop(columns=[HARD, NEIGHBOUR])
    assert (easy.to_numpy() == 1.0).all()


def test_learning_curve_is_reproducible_for_a_seed(planted):
    x, y, curve, _ = planted
    pd.testing.assert_frame_equal(learning_curve(x, y, classes=CLASSES), curve)


def test_learning_curve_rejects_a_class_with_fewer_than_two_samples():
    x, y = _clusters()
    keep = (y != "rust") | (np.arange(len(y)) == np.flatnonzero(y == "rust")[0])
    with pytest.raises(ValueError, match=r"'rust' has 1 sample.*label more"):
        learning_curve(x[keep], y[keep], classes=CLASSES)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"labels": ["dent"] * 5}, "labels: expected"),
     ({"classes": ["crack"]}, r"labels: expected names in classes.*dent"),
     ({"fractions": (0.0, 0.5)}, "fractions"),
     ({"folds": 1}, "folds"),
     ({"c": 0.0}, "c: expected|c > 0")],
)
def test_learning_curve_rejects_bad_input(change, match):
    x, y = _clusters()
    kwargs = {"labels": y, "classes": CLASSES, **change}
    with pytest.raises(ValueError, match=match):
        learning_curve(x, **kwargs)


# --- data_advice ---------------------------------------------------------------------------

def test_data_advice_ranks_the_hard_class_first(planted):
    _, _, curve, current = planted
    advice = data_advice(curve, current=current)
    assert list(advice.columns) == ["class", "n", "recall", "recall_at_2x", "gain", "collect",
                                    "capped", "recommendation", "slope"]
    top = advice.iloc[0]
    assert top["class"] == HARD
    assert top["gain"] > 0 and top["collect"] > 0 and top["slope"] > 0
    assert top["recommendation"].startswith(f"collect ~{top['collect']} more '{HARD}'")
    easy = advice.set_index("class").loc["scratch"]
    assert easy["recall"] == 1.0 and easy["collect"] == 0 and easy["gain"] == 0
    assert easy["recommendation"] == "enough data: recall 1.00"
    assert advice["gain"].is_monotonic_decreasing


@pytest.mark.parametrize("b", [0.3, 0.7, 1.2])
def test_power_law_fit_recovers_the_exponent(b):
    current = pd.DataFrame({"class": ["dent"], "n": [100], "recall": [0.8]})
    # error 0.1 at n = 100, above the 0.5 / n clip at every point
    row = data_advice(_power_curve(0.1 * 100.0**b, b), current=current).iloc[0]
    assert row["slope"] == pytest.approx(b, abs=0.1)
    assert row["recall_at_2x"] == pytest.approx(1 - 0.2 * 2.0 ** -b, abs=0.02)


def test_collect_follows_the_fitted_law():
    # error = 5 / n (b = 1): from recall 0.8 at n = 100, error halves to 0.1 at n = 200.
    current = pd.DataFrame({"class": ["dent"], "n": [100], "recall": [0.8]})
    row = data_advice(_power_curve(5.0, 1.0), current=current, target_recall=0.9).iloc[0]
    assert row["collect"] == 100 and not row["capped"]
    assert row["recall_at_2x"] == pytest.approx(0.9)
    assert row["recommendation"] == "collect ~100 more 'dent' (recall 0.80 → ~0.90 at 2×)"


def test_flat_curve_caps_collect_with_a_note():
    flat = _power_curve(0.3, 0.0)
    current = pd.DataFrame({"class": ["dent"], "n": [40], "recall": [0.7]})
    row = data_advice(flat, current=current).iloc[0]
    assert row["slope"] == 0 and row["gain"] == 0
    assert row["collect"] == 400 and row["capped"]
    assert "does not reach 0.95" in row["recommendation"]


@pytest.mark.parametrize("b", [1e-13, 5e-4])
def test_a_nearly_flat_curve_is_capped_not_an_overflow(b):
    """A flat curve's least-squares slope is rounding noise (5e-17 on a real project), and a
    tiny real slope asks for more data than a float holds: both are the cap."""
    current = pd.DataFrame({"class": ["dent"], "n": [24], "recall": [0.9]})
    row = data_advice(_power_curve(0.1, b), current=current).iloc[0]
    assert row["collect"] == 240 and row["capped"]
    assert row["slope"] == (0 if b < 1e-9 else pytest.approx(b, rel=0.1))


@pytest.mark.parametrize(
    ("curve_drop", "current", "match"),
    [("n_train", None, r"curve: expected columns.*n_train"),
     (None, pd.DataFrame({"class": ["dent"], "recall": [0.5]}), r"current: .*missing \['n'\]"),
     (None, pd.DataFrame({"class": ["bent"], "n": [3], "recall": [0.5]}), r"\['bent'\]"),
     (None, pd.DataFrame({"class": ["dent"], "n": [3], "recall": [1.5]}), "recall in")],
)
def test_data_advice_rejects_bad_input(curve_drop, current, match):
    curve = _power_curve(0.5, 0.5)
    if curve_drop:
        curve = curve.drop(columns=curve_drop)
    if current is None:
        current = pd.DataFrame({"class": ["dent"], "n": [3], "recall": [0.5]})
    with pytest.raises(ValueError, match=match):
        data_advice(curve, current=current)


# --- render_datasheet ----------------------------------------------------------------------

SECTIONS = ["# Datasheet: ", "## Motivation", "## Composition", "## Collection process",
            "## Labelling", "## Known issues", "## Uses & models", "## Maintenance"]


def _facts(**change):
    facts = {
        "name": "steel|plates", "created": dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC),
        "task": "surface defect classification", "n_samples": 130, "n_labelled": 120,
        "class_counts": pd.DataFrame({"class": ["crack", "dent"], "n": [80, 40]}),
        "slices": {"line": pd.DataFrame({"value": ["A", "B|2"], "n": [70, 60]})},
        "sources": pd.DataFrame({"source": ["/data/batch1"], "n": [130]}),
        "annotators": pd.DataFrame({"annotator": ["ana", "bo"], "n_labels": [120, 60],
                                    "quality": [0.95, 0.81]}),
        "agreement_alpha": 0.72,
        "issues": {"label issues (v1)": 7, "outliers": 5},
        "versions": pd.DataFrame({"name": ["v1"], "mode": ["probe"], "backbone": ["lite0"],
                                  "accuracy": [0.9583], "macro_f1": [0.95],
                                  "created": ["2025-03-02"], "config": ["{...}"]}),
        "image_sizes": pd.DataFrame({"width": [200], "height": [200], "n": [130]}),
        "generated": dt.date(2025, 3, 4),
    }
    facts.update(change)
    return {k: v for k, v in facts.items() if v is not ...}


def test_datasheet_has_every_section_and_the_facts():
    text = render_datasheet(_facts())
    positions = [text.index(header) for header in SECTIONS]
    assert positions == sorted(positions)
    assert "| crack | 80 | 66.7% |" in text and "| dent | 40 | 33.3% |" in text
    assert "(largest / smallest class):** 2.00" in text
    assert "130, of which 120 labelled and 10 unlabelled" in text
    assert "| B\\|2 | 60 |" in text and "steel\\|plates" in text
    assert "0.720, tentative (0.667–0.8)" in text
    assert "| ana | 120 | 0.950 |" in text
    assert "| label issues (v1) | 7 |" in text
    assert "wb.near_duplicates(project)" in text and "wb.label_issues" not in text
    assert "| v1 | probe | lite0 | 0.958 | 0.950 | 2025-03-02 |" in text and "config" not in text
    assert "Generated by Loupe on 2025-03-04" in text
    assert "2025-03-01 09:30 UTC" in text


def test_datasheet_says_not_recorded_for_missing_optional_keys():
    facts = {"name": "bare", "n_samples": 10,
             "class_counts": pd.DataFrame({"class": ["a", "b"], "n": [4, 0]}),
             "annotators": pd.DataFrame(), "versions": pd.DataFrame(), "issues": {}}
    text = render_datasheet(facts)
    for header in SECTIONS:
        assert header in text
    assert text.count("_Not recorded._") >= 6
    assert "undefined, no labelled images of b" in text
    assert "No issue checks recorded." in text and "wb.label_issues(project)" in text
    assert "wb.train(project)" in text


@pytest.mark.parametrize(("alpha", "word"), [(0.9, "reliable"), (0.8, "reliable"),
                                             (0.7, "tentative"), (0.5, "unreliable")])
def test_alpha_reading_thresholds(alpha, word):
    assert alpha_reading(alpha).startswith(word)


@pytest.mark.parametrize("key", ["name", "n_samples", "class_counts"])
def test_datasheet_requires_its_key_facts(key):
    with pytest.raises(ValueError, match=key):
        render_datasheet(_facts(**{key: ...}))


@pytest.mark.parametrize(
    ("change", "match"),
    [({"class_counts": pd.DataFrame({"label": ["a"], "n": [1]})}, r"class_counts.*\['class'\]"),
     ({"sources": pd.DataFrame({"folder": ["x"], "n": [1]})}, r"sources.*\['source'\]"),
     ({"slices": {"line": pd.DataFrame({"v": ["A"]})}}, r"slices.*line"),
     ({"issues": [7]}, "issues"), ({"n_samples": "many"}, "n_samples")],
)
def test_datasheet_rejects_malformed_facts(change, match):
    with pytest.raises(ValueError, match=match):
        render_datasheet(_facts(**change))
