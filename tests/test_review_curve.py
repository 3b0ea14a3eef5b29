"""Review efficiency curve: the pure simulation, the project wrapper on a demo with planted
noise (labels never written), and the ReviewCurve widget."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from workbench.improve.review_curve import ReviewCurve, review_curve
from workbench.metrics.review_sim import eval_split, simulate_review

NOISE = 0.1


# -- pure simulation (no database) -----------------------------------------------------
def _blobs(seed: int = 0, n_per_class: int = 30):
    """Three well separated Gaussian classes in 8-d, labels as strings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(3, 8))
    labels = np.repeat(["a", "b", "c"], n_per_class)
    x = np.concatenate([c + rng.normal(0, 1, size=(n_per_class, 8)) for c in centres])
    return x, labels


def test_eval_split_is_stratified_and_seeded():
    _, labels = _blobs()
    mask = eval_split(labels, share=0.3, seed=4)
    assert mask.dtype == bool and mask.sum() == 27
    assert all(mask[labels == c].sum() == 9 for c in "abc")
    assert (mask == eval_split(labels, share=0.3, seed=4)).all()
    assert (mask != eval_split(labels, share=0.3, seed=5)).any()


def test_simulate_review_perfect_order_recovers_the_gap():
    x, truth = _blobs()
    rng = np.random.default_rng(1)
    noisy = truth.copy()
    flipped = rng.choice(len(truth), 40, replace=False)  # heavy noise: the gap is large
    noisy[flipped] = [{"a": "b", "b": "c", "c": "a"}[t] for t in truth[flipped]]
    mask = eval_split(truth, share=0.3, seed=0)
    wrong = np.flatnonzero((noisy != truth) & ~mask)
    perfect = np.concatenate([wrong, np.flatnonzero((noisy == truth) & ~mask)])
    budget = len(wrong) / int((~mask).sum())

    frame = simulate_review(x, noisy, truth, eval_mask=mask,
                            orders={"perfect": perfect, "none": []}, budgets=(budget, 1.0))

    attrs = frame.attrs
    assert attrs["n_wrong_in_pool"] == len(wrong) and attrs["n_pool"] == 63
    assert attrs["clean_accuracy"] > attrs["noisy_accuracy"]
    rows = frame.set_index(["strategy", "budget"])
    assert rows.loc[("perfect", budget), "labels_fixed"] == len(wrong)
    assert rows.loc[("perfect", budget), "accuracy"] == attrs["clean_accuracy"]
    assert rows.loc[("perfect", budget), "recovered_share"] == 1.0
    assert rows.loc[("none", 1.0), "n_reviewed"] == 0  # an empty order reviews nothing
    assert rows.loc[("none", 1.0), "recovered_share"] == 0.0


def test_simulate_review_rejects_bad_input():
    x, truth = _blobs()
    mask = eval_split(truth, share=0.3, seed=0)
    good = {"features": x, "noisy": truth, "oracle": truth}
    with pytest.raises(ValueError, match="budgets"):
        simulate_review(**good, eval_mask=mask, orders={"r": [0]}, budgets=(0.0,))
    with pytest.raises(ValueError, match="oracle must have shape"):
        simulate_review(x, truth, truth[:-1], eval_mask=mask, orders={"r": [0]},
                        budgets=(0.1,))
    with pytest.raises(ValueError, match="outside"):
        simulate_review(**good, eval_mask=mask, orders={"r": [len(x)]}, budgets=(0.1,))
    with pytest.raises(ValueError, match="eval_mask marks"):
        simulate_review(**good, eval_mask=np.zeros(len(x), bool), orders={"r": [0]},
                        budgets=(0.1,))


# -- the project wrapper ---------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy_demo():
    """A demo project with 10 % of its labels changed to another class by a review, a
    3-fold probe, the labels before the flips (the oracle) and the flipped ids."""
    import workbench as wb
    from workbench.demo import create_demo_project

    p = create_demo_project(f"rc-{os.getpid()}", n_per_class=12, seed=1, overwrite=True)
    frame = p.to_pandas()
    original = dict(zip(frame["sample_id"], frame["label"], strict=True))
    rng = np.random.default_rng(1)
    flipped = [str(s) for s in rng.choice(frame["sample_id"], round(NOISE * len(frame)),
                                          replace=False)]
    for sid in flipped:
        wrong = str(rng.choice([c for c in p.classes if c != original[sid]]))
        p.annotate(sid, wrong, annotator="noise", review=True)
    mv = wb.train(p, mode="probe", folds=3, image_size=128, progress=False)
    yield p, mv, original, flipped
    wb.delete_project(p.name)


def _stored(p):
    from workbench.store import _db as store

    frame = p.to_pandas()
    lengths = {s: len(h) for s, h in store.histories(p.dataset, list(frame["sample_id"])).items()}
    return list(frame["label"]), lengths, list(p.analysis_runs()["key"])


@pytest.mark.slow
def test_review_curve_leaves_labels_untouched_and_loupe_beats_random(noisy_demo):
    p, mv, original, _ = noisy_demo
    before = _stored(p)

    curve = review_curve(p, mv, original, budgets=(0.1, 0.2), seeds=3)

    assert _stored(p) == before  # labels, histories and analysis runs
    assert any("no label" in note for note in curve.notes)
    frame = curve.to_frame()
    assert list(frame.columns) == ["strategy", "budget", "seed", "n_reviewed", "labels_fixed",
                                   "accuracy", "recovered_share"]
    assert len(frame) == 3 * 2 * 3
    assert list(curve.baselines.columns) == ["seed", "noisy_accuracy", "clean_accuracy",
                                             "n_pool", "n_eval", "n_wrong_in_pool"]
    assert (curve.baselines["n_pool"] + curve.baselines["n_eval"] == len(original)).all()
    fixed = frame[frame["budget"] >= 0.1].groupby("strategy")["labels_fixed"].mean()
    assert fixed["loupe"] > fixed["random"]  # Loupe's queue finds the planted flips
    summary = curve.summary()
    assert list(summary["strategy"].unique()) == ["loupe", "random", "low_confidence"]
    assert {"accuracy", "recovered_share", "labels_fixed"} <= set(summary.columns)
    figure = curve.plot()
    assert [t.name for t in figure.data] == ["loupe", "random", "low_confidence",
                                             "noisy labels", "clean labels"]


def test_oracle_equal_to_noisy_labels_recovers_nothing(noisy_demo):
    p, mv, _, flipped = noisy_demo
    current = dict(zip(*p.dataset.values(["id", "ground_truth.label"]), strict=True))

    curve = review_curve(p, mv, current, budgets=(0.1, 0.5),
                         strategies=("random", ("flips", flipped)), seeds=2)

    frame, base = curve.to_frame(), curve.baselines
    assert (base["noisy_accuracy"] == base["clean_accuracy"]).all()
    assert (base["n_wrong_in_pool"] == 0).all()
    assert (frame["labels_fixed"] == 0).all()
    noisy = frame["seed"].map(base.set_index("seed")["noisy_accuracy"])
    assert (frame["accuracy"] == noisy).all()
    assert frame["recovered_share"].isna().all()


def test_perfect_ranking_recovers_the_gap_at_the_noise_rate(noisy_demo):
    p, mv, original, flipped = noisy_demo
    first = review_curve(p, mv, original, budgets=(1.0,), strategies=[("perfect", flipped)],
                         seeds=2)
    base = first.baselines.set_index("seed")
    rates = {s: base.loc[s, "n_wrong_in_pool"] / base.loc[s, "n_pool"] for s in base.index
             if base.loc[s, "n_wrong_in_pool"]}
    assert rates  # some flips fall in the review pool

    curve = review_curve(p, mv, original, budgets=tuple(rates.values()),
                         strategies=[("perfect", flipped)], seeds=2)

    frame = curve.to_frame()
    for seed, rate in rates.items():
        row = frame[(frame["seed"] == seed) & np.isclose(frame["budget"], rate)].iloc[0]
        assert row["n_reviewed"] == row["labels_fixed"] == base.loc[seed, "n_wrong_in_pool"]
        assert row["accuracy"] == base.loc[seed, "clean_accuracy"]
        gap = base.loc[seed, "clean_accuracy"] - base.loc[seed, "noisy_accuracy"]
        if gap:  # (on 20 evaluation images, 6 flips may cost nothing in some splits)
            assert row["recovered_share"] == pytest.approx(1.0)
        else:
            assert math.isnan(row["recovered_share"])


def test_a_fixed_evaluation_set_is_used_for_every_seed(noisy_demo):
    p, mv, original, flipped = noisy_demo
    clean = [s for s in original if s not in set(flipped)]
    held = clean[::3]
    curve = review_curve(p, mv, original, budgets=(0.2,), strategies=("random",), seeds=2,
                         eval_samples=p.dataset.select(held))
    assert all(sorted(ids) == sorted(held) for ids in curve.eval_ids.values())
    assert (curve.baselines["n_eval"] == len(held)).all()
    assert (curve.baselines["n_pool"] == len(original) - len(held)).all()
    with pytest.raises(ValueError, match="not labelled real samples"):
        review_curve(p, mv, original, strategies=("random",), seeds=1,
                     eval_samples=[*held, "000000000000000000000000"])
    with pytest.raises(ValueError, match="some, but not all"):
        review_curve(p, mv, original, strategies=("random",), seeds=1,
                     eval_samples=list(original))


def test_oracle_field_and_bad_inputs(noisy_demo):
    p, mv, original, flipped = noisy_demo
    before = _stored(p)
    by_field = review_curve(p, mv, "demo_truth", budgets=(0.1,), strategies=("random",),
                            seeds=1)
    truth = dict(zip(*p.dataset.values(["id", "demo_truth"]), strict=True))
    by_dict = review_curve(p, mv, truth, budgets=(0.1,), strategies=("random",), seeds=1)
    assert by_field.to_frame().equals(by_dict.to_frame())

    some = next(iter(original))
    cases = [
        ({"oracle": {k: v for k, v in original.items() if k != some}}, "no label for 1"),
        ({"oracle": {**original, some: "rust"}}, "'rust'"),
        ({"oracle": {**original, "nope": "ok"}}, "not in project"),
        ({"oracle": "no_such_field"}, "oracle field 'no_such_field' does not exist"),
        ({"budgets": (0.0, 0.1)}, "budgets"),
        ({"budgets": (1.5,)}, "budgets"),
        ({"strategies": ("loupe", "smartest")}, "unknown strategy 'smartest'"),
        ({"strategies": [("mine", [*flipped, "nope"])]}, "strategy 'mine'.*not labelled"),
        ({"strategies": [("mine", [flipped[0], flipped[0]])]}, "more than once"),
        ({"seeds": 0}, "seeds"),
        ({"eval_share": 1.0}, "eval_share"),
    ]
    for change, message in cases:
        arguments = {"oracle": original, **change}
        with pytest.raises(ValueError, match=message):
            review_curve(p, mv, **arguments)
    assert _stored(p) == before


# -- widget ----------------------------------------------------------------------------
def test_review_curve_widget_runs_and_draws(noisy_demo):
    import plotly.graph_objects as go

    from widgets.improve.review_curve import ReviewCurve as Widget

    p, mv, original, flipped = noisy_demo
    widget = Widget(p, mv.name, original, budgets=(0.1, 0.2), seeds=1,
                    strategies=("random", ("flips", flipped)))
    assert isinstance(widget.figure, go.FigureWidget) and not widget.run_button.disabled
    assert len(widget.figure.data) == 0

    widget.run_button.click()

    assert isinstance(widget.curve, ReviewCurve)
    assert [t.name for t in widget.figure.data] == ["random", "flips", "noisy labels",
                                                    "clean labels"]
    assert "flips" in widget.table.value and "done" in widget.status.value
    shown = Widget(widget.curve)  # a computed result is drawn as is
    assert len(shown.figure.data) == 4 and shown.run_button.disabled
    assert Widget(p, mv.name, {"x": "ok"}).run() is None  # the error goes to the status line
    no_oracle = Widget(p.name, mv.name, None)
    assert no_oracle.oracle == "demo_truth" and not no_oracle.run_button.disabled
