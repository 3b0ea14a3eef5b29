"""EmbeddingMap and LabelBook on a real project: the 2-D projection, the map's lasso and
clicks as plotly's front-end sends them, and the label book's edits in the store."""

from __future__ import annotations

import re

import numpy as np
import pytest

import workbench as wb
from widgets._base.palette import label_colors
from widgets.analyse.embedding_map import ISSUE, NO_ISSUE, NO_PREDICTION, EmbeddingMap
from widgets.label.label_book import LabelBook
from workbench.analyse.classification import held_out
from workbench.analyse.embedding_map import embedding_map
from workbench.improve.examples import suggest_examples
from workbench.metrics.projection import project_2d
from workbench.store.labelbook import (
    add_example,
    book_history,
    define_label,
    label_book,
    remove_example,
)


def blobs(n_per: int = 25, dims: int = 64, gap: float = 6.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centre = np.zeros(dims)
    centre[0] = gap
    vectors = np.vstack([rng.normal(0, 1, (n_per, dims)), rng.normal(centre, 1, (n_per, dims))])
    return vectors, np.repeat([0, 1], n_per)


def send(figure, event: str, points: list[tuple[int, int]]) -> None:
    """Deliver a plotly.js points event as the front-end does: (trace index, point index)."""
    figure._js2py_pointsCallback = {
        "event_type": event, "selector": None,
        "points": {"trace_indexes": [t for t, _ in points], "point_indexes": [i for _, i in points],
                   "xs": [0.0] * len(points), "ys": [0.0] * len(points)}}


def labels_now(p) -> dict[str, str | None]:
    return dict(zip(*p.dataset.values(["id", "ground_truth.label"]), strict=True))


# -- project_2d (pure) ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["auto", "tsne", "pca"])
def test_two_separated_blobs_stay_separated_in_2d(method):
    vectors, group = blobs()
    xy = project_2d(vectors, method=method, seed=0)
    assert xy.shape == (50, 2) and np.isfinite(xy).all()
    distances = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert (group[distances.argmin(axis=1)] == group).all()  # nearest neighbour: same blob
    centres = np.stack([xy[group == g].mean(axis=0) for g in (0, 1)])
    nearest = np.linalg.norm(xy[:, None] - centres[None], axis=-1).argmin(axis=1)
    assert (nearest == group).all()


def test_projection_is_deterministic_for_a_seed_and_cosine_ignores_scale():
    vectors, _ = blobs(n_per=20, dims=80)
    first = project_2d(vectors, seed=3)
    assert np.array_equal(first, project_2d(vectors, seed=3))
    scaled = vectors * np.linspace(1, 5, len(vectors))[:, None]
    assert np.allclose(project_2d(vectors, metric="cosine", seed=1),
                       project_2d(scaled, metric="cosine", seed=1))


def test_small_sets_use_pca_and_degenerate_input_maps_to_the_origin():
    vectors, _ = blobs(n_per=2, dims=10)
    assert project_2d(vectors[:3]).shape == (3, 2)  # auto: PCA below 5 samples
    assert np.allclose(project_2d(vectors[:3]), project_2d(vectors[:3], method="pca"))
    assert np.array_equal(project_2d(vectors[:1]), np.zeros((1, 2)))
    assert np.array_equal(project_2d(np.ones((8, 4))), np.zeros((8, 2)))  # identical rows
    one_feature = project_2d(np.arange(6.0)[:, None], method="pca")
    assert one_feature.shape == (6, 2) and not one_feature[:, 1].any()


@pytest.mark.parametrize(("vectors", "kwargs", "message"), [
    (np.zeros(5), {}, "shape (n_samples, n_features)"),
    (np.zeros((2, 3, 4)), {}, "shape (n_samples, n_features)"),
    (np.zeros((0, 4)), {}, "at least one row"),
    (np.array([["a", "b"], ["c", "d"]]), {}, "numeric"),
    (np.array([[0.0, 1.0], [np.nan, 1.0], [2.0, 2.0]]), {}, "rows [1] hold NaN"),
    (np.ones((6, 3)), {"method": "umap"}, "method must be one of 'auto', 'tsne', 'pca'"),
    (np.ones((6, 3)), {"metric": "manhattan"}, "metric must be"),
    (np.eye(3), {"method": "tsne"}, "t-SNE needs at least 5 samples"),
])
def test_bad_vectors_or_options_are_explained(vectors, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        project_2d(vectors, **kwargs)


# -- embedding_map (project wrapper) -------------------------------------------------------
def test_map_frame_has_one_finite_row_per_sample_and_a_second_call_reads_the_cache(widget_demo):
    p, _, _ = widget_demo
    frame = embedding_map(p)
    assert sorted(frame["sample_id"]) == sorted(p.dataset.values("id"))
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all()
    assert list(frame.columns[:9]) == ["sample_id", "filepath", "x", "y", "label", "predicted",
                                       "confidence", "correct", "is_issue"]
    assert set(p.slice_fields) <= set(frame.columns)
    assert frame["predicted"].isna().all() and not frame["is_issue"].any()
    assert frame.attrs["image_size"] == 128  # the newest version's embeddings: cached
    cached = list((p.folder / "maps").glob("*.npy"))
    assert cached
    # the second call reads the stored coordinates: planted values come back
    path = max(cached, key=lambda f: f.stat().st_mtime_ns)
    original = np.load(path)
    planted = np.arange(original.size, dtype=float).reshape(original.shape)
    np.save(path, planted)
    try:
        again = embedding_map(p)
        assert np.array_equal(again[["x", "y"]].to_numpy(), planted)
    finally:
        np.save(path, original)
    assert set((p.folder / "maps").glob("*.npy")) == set(cached)


def test_map_with_a_version_has_its_predictions_and_stored_issues(widget_demo):
    p, v1, _ = widget_demo
    issues = wb.label_issues(p, v1, tta=False, neighbours=False)
    frame = embedding_map(p, v1).set_index("sample_id")
    oof = v1.oof_predictions().set_index("sample_id")
    assert (frame.loc[oof.index, "predicted"] == oof["label"]).all()
    held = frame.loc[oof.index]
    labelled = held["label"].notna()
    assert (held.loc[labelled, "correct"].astype(bool)
            == (held.loc[labelled, "label"] == held.loc[labelled, "predicted"])).all()
    flagged = set(issues.loc[issues["is_issue"], "sample_id"])
    assert set(frame.index[frame["is_issue"]]) == flagged
    subset = list(frame.index[:5])[::-1]
    assert list(embedding_map(p, v1, sample_ids=subset)["sample_id"]) == subset


def test_map_bad_input(widget_demo):
    p, _, _ = widget_demo
    with pytest.raises(wb.ProjectError, match="no model version 'v99'"):
        embedding_map(p, "v99")
    with pytest.raises(wb.ProjectError, match="not samples of project"):
        embedding_map(p, sample_ids=["0" * 24])
    with pytest.raises(ValueError, match="method must be one of"):
        embedding_map(p, method="umap")


# -- EmbeddingMap (widget) -----------------------------------------------------------------
def test_map_widget_draws_one_trace_per_class_in_the_palette_colours(widget_demo):
    p, _, _ = widget_demo
    m = EmbeddingMap(p)
    colors = label_colors(p.classes)
    names = [trace.name for trace in m.figure.data]
    assert names == [c for c in p.classes if c in set(m.frame["label"])]
    assert [trace.marker.color for trace in m.figure.data] == [colors[n] for n in names]
    assert sum(len(trace.x) for trace in m.figure.data) == len(m.frame) == len(p)
    assert m.figure.layout.dragmode == "lasso"
    assert m.color_by.disabled  # prediction / issue need a version
    first = m.figure.data[0]
    assert first.customdata[0][0].endswith((".jpg", ".png"))  # hover: file name + label
    assert first.customdata[0][1] == first.name


def test_lasso_selection_puts_exactly_those_samples_into_the_grid(widget_demo):
    p, v1, _ = widget_demo
    m = EmbeddingMap(p, v1)
    picked = [(0, 0), (0, 2), (1, 1), (2, 0)]
    expected = [m.trace_ids[t][i] for t, i in picked]
    send(m.figure, "plotly_selected", picked)
    assert m.selected == expected
    assert m.grid.sample_ids == expected
    assert m.figure.data[0].selectedpoints == (0, 2)
    assert m.figure.data[3].selectedpoints == ()  # not picked: dimmed
    caption = m.grid.items[0]["caption"]
    assert caption.startswith("pred ")
    send(m.figure, "plotly_click", [(1, 3)])
    assert m.selected == m.grid.sample_ids == [m.trace_ids[1][3]]
    with pytest.raises(wb.ProjectError, match="not on the map"):
        m.select(["0" * 24])


def test_a_grid_edit_recolours_the_point(widget_demo):
    p, _, _ = widget_demo
    m = EmbeddingMap(p, annotator="map-test")
    names = [trace.name for trace in m.figure.data]
    sid = m.trace_ids[names.index("ok")][-1]
    m.select([sid])
    m.grid.assign("discoloration", [sid])
    assert labels_now(p)[sid] == "discoloration"
    names = [trace.name for trace in m.figure.data]
    assert sid in m.trace_ids[names.index("discoloration")]
    assert sid not in m.trace_ids[names.index("ok")]
    assert m.frame.set_index("sample_id").at[sid, "label"] == "discoloration"
    assert m.selected == [sid] and m.grid.sample_ids == [sid]


def test_colour_by_prediction_and_issue(widget_demo):
    p, v1, _ = widget_demo
    m = EmbeddingMap(p, v1)
    assert not m.color_by.disabled
    m.color_by.value = "prediction"
    names = [trace.name for trace in m.figure.data]
    assert set(names) <= {*p.classes, NO_PREDICTION}
    predicted = m.frame.set_index("sample_id")["predicted"]
    for trace, ids in zip(m.figure.data, m.trace_ids, strict=True):
        expected = None if trace.name == NO_PREDICTION else trace.name
        assert all(predicted[sid] == expected for sid in ids)
    m.color_by.value = "issue"
    assert {trace.name for trace in m.figure.data} <= {ISSUE, NO_ISSUE}
    assert sum(len(ids) for ids in m.trace_ids) == len(p)


def test_map_of_a_view_maps_only_its_samples(widget_demo):
    from fiftyone import ViewField as F

    p, _, _ = widget_demo
    view = p.dataset.match(F("lighting") == "dim")
    m = EmbeddingMap(view)
    assert sorted(m.frame["sample_id"]) == sorted(view.values("id"))
    outside = next(sid for sid in p.dataset.values("id") if sid not in set(view.values("id")))
    with pytest.raises(wb.ProjectError, match="not on the map"):
        m.select([outside])


# -- label book (core) ---------------------------------------------------------------------
def test_label_book_edits_persist_and_history_is_append_only(widget_demo):
    p, _, _ = widget_demo
    before = book_history(p)
    dents = [sid for sid, label in labels_now(p).items() if label == "dent"][:2]
    define_label(p, "dent", "  A smooth depression; reflections bend around it. ",
                 author="alice")
    add_example(p, "dent", dents[0], author="alice")
    add_example(p, "dent", dents[1], author="bob")
    add_example(p, "dent", dents[1], author="bob")  # already there: nothing recorded
    remove_example(p, "dent", dents[0], author="carol")
    define_label(p, "dent", "A smooth depression.", author="carol")

    reopened = wb.Project.open(p.name)
    row = label_book(reopened).set_index("label").loc["dent"]
    assert row["definition"] == "A smooth depression."
    assert row["examples"] == [dents[1]]
    assert row["updated_by"] == "carol"
    assert row["n_labelled"] == sum(1 for v in labels_now(p).values() if v == "dent")
    assert row["stale_examples"] == []
    frame = label_book(reopened)
    assert list(frame["label"]) == p.classes
    never = frame[frame["updated_at"].isna()]
    assert never["updated_by"].map(lambda who: who is None).all()

    after = book_history(reopened)
    earlier = after.iloc[:len(before)].to_dict("records")
    assert earlier == before.to_dict("records")  # earlier edits untouched
    ours = after.iloc[len(before):]
    assert ours[["field", "action", "value", "author"]].values.tolist() == [
        ["definition", "set", "A smooth depression; reflections bend around it.", "alice"],
        ["examples", "add", dents[0], "alice"],
        ["examples", "add", dents[1], "bob"],
        ["examples", "remove", dents[0], "carol"],
        ["definition", "set", "A smooth depression.", "carol"]]
    assert (ours["label"] == "dent").all() and ours["time"].is_monotonic_increasing


def test_label_book_refuses_bad_edits(widget_demo):
    p, _, _ = widget_demo
    labels = labels_now(p)
    pit = next(sid for sid, label in labels.items() if label == "pit_mark")
    n_before = len(book_history(p))
    with pytest.raises(wb.ProjectError, match="'crack' is not a class"):
        define_label(p, "crack", "no such class", author="alice")
    with pytest.raises(wb.ProjectError, match="author must be a non-empty name"):
        define_label(p, "pit_mark", "text", author=" ")
    with pytest.raises(wb.ProjectError, match="definition must be a string"):
        define_label(p, "pit_mark", None, author="alice")
    with pytest.raises(wb.ProjectError, match="not in project"):
        add_example(p, "pit_mark", "0" * 24, author="alice")
    with pytest.raises(wb.ProjectError, match=r"labelled 'pit_mark', not 'scratch'.*Relabel"):
        add_example(p, "scratch", pit, author="alice")
    with pytest.raises(wb.ProjectError, match="is not an example of 'pit_mark'"):
        remove_example(p, "pit_mark", "0" * 24, author="alice")
    assert len(book_history(p)) == n_before  # nothing was written


def test_suggested_examples_are_confident_correct_predictions_of_the_class(widget_demo):
    p, v1, _ = widget_demo
    suggested = suggest_examples(p, v1, "scratch", n=3)
    assert 1 <= len(suggested) <= 3
    held = held_out(p, v1).set_index("sample_id")
    rows = held.loc[suggested["sample_id"]]
    assert (rows["given"] == "scratch").all() and (rows["predicted"] == "scratch").all()
    assert suggested["confidence"].is_monotonic_decreasing
    best = held[(held["given"] == "scratch") & held["correct"]]["confidence"].max()
    assert suggested["confidence"].iloc[0] == pytest.approx(best)


# -- LabelBook (widget) --------------------------------------------------------------------
def test_label_book_widget_saves_adds_removes_and_suggests(widget_demo):
    p, _, _ = widget_demo
    book = LabelBook(p, author="dana", version="v1")
    assert list(book.cards) == p.classes
    card = book.cards["pit_mark"]
    assert label_colors(p.classes)["pit_mark"] in card.head.value

    card.definition.value = "Dark round pits, under 1 mm."
    assert card.save.button_style == "primary"  # unsaved
    card.save.click()
    assert card.save.button_style == ""
    row = label_book(wb.Project.open(p.name)).set_index("label").loc["pit_mark"]
    assert row["definition"] == "Dark round pits, under 1 mm." and row["updated_by"] == "dana"
    assert "last edited by dana" in card.edited.value

    labels = labels_now(p)
    pits = [sid for sid, label in labels.items() if label == "pit_mark"]
    other = next(sid for sid, label in labels.items() if label == "ok")
    already = set(row["examples"])
    fresh = [sid for sid in pits if sid not in already][:2]
    book.candidates = [*fresh, other]
    assert card.add_selected.description == "add selected (3)"
    card.add_selected.click()  # the ok image is refused, the two pit marks are added
    examples = label_book(p).set_index("label").at["pit_mark", "examples"]
    assert set(fresh) <= set(examples) and other not in examples
    assert "refused 1" in card.message.value
    shown = [cell.sample_id for cell in card.examples.children]
    assert shown == examples and set(fresh) <= set(book.selected)

    removed = next(c for c in card.examples.children if c.sample_id == fresh[0])
    removed.button.click()
    assert fresh[0] not in label_book(p).set_index("label").at["pit_mark", "examples"]
    assert [h for h in book_history(p).itertuples() if h.value == fresh[0]][-1].action == \
        "remove"

    card.suggest.click()
    suggested = book.suggestions["pit_mark"]
    assert suggested and not set(suggested) & set(label_book(p).set_index("label").at[
        "pit_mark", "examples"])
    card.suggestions.children[0].button.click()
    assert suggested[0] in label_book(p).set_index("label").at["pit_mark", "examples"]
    assert book.add_examples("pit_mark", []) == []


def test_label_book_widget_needs_an_author_and_suggest_needs_a_version(widget_demo):
    p, _, _ = widget_demo
    with pytest.raises(wb.ProjectError, match="author must be a non-empty name"):
        LabelBook(p, author="")
    book = LabelBook(p.name)
    assert book.cards["ok"].suggest is None
    with pytest.raises(wb.ProjectError, match="needs a model version"):
        book.suggest("ok")
    with pytest.raises(wb.ProjectError, match="not a class"):
        book.add_examples("crack", [])
