"""Comparing a retrain on a new batch: ``wb.compare(..., on="either")`` judges both versions
on every labelled image either saw, never with a prediction from a model that trained on
the image."""

from __future__ import annotations

import pandas as pd
import pytest

import workbench as wb
from workbench.analyse.compare import unseen_predictions


@pytest.fixture(scope="module")
def retrained():
    """v1 trained without the last 12 images (the "new batch"); v2 on everything."""
    from workbench.demo import create_demo_project

    p = create_demo_project("compare-on", n_per_class=8, seed=3, overwrite=True)
    ids = p.dataset.values("id")
    batch = ids[-12:]
    settings = {"mode": "probe", "folds": 3, "image_size": 64, "progress": False}
    v1 = wb.train(p, view=p.dataset.exclude(batch), **settings)
    v2 = wb.train(p, **settings)
    yield p, v1, v2, batch
    wb.delete_project(p.name)


def test_both_compares_only_what_both_held_out(retrained):
    p, v1, v2, batch = retrained
    both = wb.compare(p, v1, v2)
    assert not set(batch) & set(both["sample_id"])  # v1 never held the batch out


def test_either_adds_the_new_batch_with_fresh_predictions_of_the_older_version(retrained):
    p, v1, v2, batch = retrained
    both = wb.compare(p, v1, v2)
    either = wb.compare(p, v1, v2, on="either")
    labelled = p.to_pandas().dropna(subset=["label"])
    assert set(either["sample_id"]) == set(labelled["sample_id"])
    assert len(either) > len(both) and set(batch) <= set(either["sample_id"])
    # v1's verdicts on the batch are its fresh predictions of those files
    paths = labelled.set_index("sample_id").loc[batch, "filepath"].tolist()
    fresh = v1.predict(paths, progress=False)
    shown = either.set_index("sample_id").loc[batch]
    assert list(shown["predicted_a"]) == list(fresh["label"])
    # v2 trained on the batch: its verdicts there are out-of-fold
    sources = unseen_predictions(p, v2, batch)["source"]
    assert set(sources) == {"out-of-fold"}
    assert set(unseen_predictions(p, v1, batch)["source"]) == {"unseen"}


def test_a_chosen_batch_and_bad_input(retrained):
    p, v1, v2, batch = retrained
    chosen = wb.compare(p, v1, v2, on=batch)
    assert list(chosen["sample_id"]) == list(batch)
    pd.testing.assert_frame_equal(
        chosen.reset_index(drop=True),
        wb.compare(p, v1, v2, on="either").set_index("sample_id").loc[batch]
        .reset_index().reindex(columns=chosen.columns))
    with pytest.raises(wb.ProjectError, match="on='most'"):
        wb.compare(p, v1, v2, on="most")
    with pytest.raises(wb.ProjectError, match="not labelled samples"):
        wb.compare(p, v1, v2, on=["not-an-id"])
