"""LabelingGrid driven as its front-end drives it: messages and synced traits, real store."""

from __future__ import annotations

import pytest

import workbench as wb
from widgets._base.palette import label_colors
from widgets.label.grid import UNLABELLED, LabelingGrid


def front(grid: LabelingGrid, **content) -> None:
    """Send a message the way grid.js does (``model.send``)."""
    grid._on_front_message(grid, content, [])


@pytest.fixture
def small_demo(request):
    from workbench.demo import create_demo_project

    name = "grid-" + request.node.name[:40].replace("_", "-")
    p = create_demo_project(name, n_per_class=4, seed=3, overwrite=True, duplicates=0,
                            progress=False)
    yield p
    wb.delete_project(name)


def stored(p, sid):
    return p.to_pandas().set_index("sample_id").label[sid]


def test_pages_cover_every_sample_once_with_thumbnails_and_class_colours(small_demo):
    grid = LabelingGrid(small_demo, page_size=6)
    assert grid.total == len(small_demo) == 20 and grid.page_count == 4
    seen = []
    for page in range(grid.page_count):
        front(grid, type="page", page=page)
        assert grid.page == page
        seen += [item["id"] for item in grid.items]
        assert all(item["src"].startswith("data:image/jpeg;base64,") for item in grid.items)
    assert sorted(seen) == sorted(small_demo.dataset.values("id"))
    assert grid.colors == label_colors(small_demo.classes)
    front(grid, type="page", page=99)  # clamped, not an error
    assert grid.page == 3


def test_keyboard_assign_reaches_the_store_with_the_annotator_and_undo_appends(small_demo):
    grid = LabelingGrid(small_demo, annotator="inspector-7")
    sid = next(item["id"] for item in grid.items if item["label"] == "ok")
    grid.selected = [sid]  # what a click does
    front(grid, type="assign", label="dent", ids=grid.selected)  # the key "3"
    assert stored(small_demo, sid) == "dent"
    assert next(i["label"] for i in grid.items if i["id"] == sid) == "dent"
    history = small_demo.history(sid)
    assert history.iloc[-1][["annotator", "label", "review"]].tolist() == ["inspector-7",
                                                                         "dent", True]
    front(grid, type="undo")
    assert stored(small_demo, sid) == "ok"
    assert next(i["label"] for i in grid.items if i["id"] == sid) == "ok"
    history = small_demo.history(sid)
    assert len(history) == 5  # 3 annotators + the edit + its withdrawal: nothing deleted
    assert history.label.tolist()[-2:] == ["dent", None]
    front(grid, type="undo")
    assert grid.message == "nothing to undo"


def test_undo_restores_the_previous_decision_of_several_edits(small_demo):
    grid = LabelingGrid(small_demo, annotator="undo-tester")
    ids = [item["id"] for item in grid.items[:3]]
    grid.assign("scratch", ids)
    grid.assign("pit_mark", ids[:2])
    grid.undo()
    labels = small_demo.to_pandas().set_index("sample_id").label
    assert [labels[s] for s in ids] == ["scratch"] * 3
    assert not small_demo.history(ids[0]).label.isna().any()  # restored by re-appending


def test_votes_mode_counts_in_the_majority(small_demo):
    grid = LabelingGrid(small_demo, annotator="dave", review=False)
    sid = grid.items[0]["id"]
    before = stored(small_demo, sid)
    other = next(c for c in small_demo.classes if c != before)
    grid.assign(other, [sid])
    assert stored(small_demo, sid) == before  # one vote against three
    assert small_demo.history(sid).iloc[-1][["annotator", "review"]].tolist() == ["dave", False]


def test_filters_by_label_slice_tag_and_unknown_filter_is_explained(small_demo):
    grid = LabelingGrid(small_demo, annotator="filter-tester")
    frame = small_demo.to_pandas()
    front_filters = {"label": "scratch", "lighting": "dim"}
    grid.filters = front_filters  # the selects in the page set this trait
    expected = frame[(frame.label == "scratch") & (frame.lighting == "dim")].sample_id
    assert sorted(grid.sample_ids) == sorted(expected)
    grid.filter(label=None, lighting=None)
    assert grid.total == len(frame)
    grid.assign("dent", [frame.sample_id[0]])
    grid.refresh()
    assert "dent" in grid.filter_options["label"]
    with pytest.raises(wb.ProjectError, match="unknown filter 'colour'"):
        grid.filter(colour="red")


def test_show_keeps_the_given_order_and_captions_and_a_view_restricts(small_demo):
    ids = list(reversed(small_demo.dataset.values("id")))[:5]
    grid = LabelingGrid(small_demo, sample_ids=ids, captions={ids[0]: "0.97 dent"})
    assert grid.sample_ids == ids
    assert grid.items[0]["caption"] == "0.97 dent"
    dim = small_demo.dataset.match({"lighting": "dim"})
    view_grid = LabelingGrid(dim)
    assert sorted(view_grid.sample_ids) == sorted(dim.values("id"))
    view_grid.show(small_demo.dataset.values("id"))  # ids outside the view are left out
    assert sorted(view_grid.sample_ids) == sorted(dim.values("id"))


def test_bad_input_gets_a_clear_error_and_nothing_is_written(small_demo):
    grid = LabelingGrid(small_demo)
    sid = grid.items[0]["id"]
    n = len(small_demo.history(sid))
    front(grid, type="assign", label="bogus", ids=[sid])
    assert "'bogus' is not a class" in grid.message
    front(grid, type="assign", label="dent", ids=[])
    assert "nothing selected" in grid.message
    assert len(small_demo.history(sid)) == n
    with pytest.raises(ValueError, match="page_size"):
        LabelingGrid(small_demo, page_size=0)
    with pytest.raises(wb.ProjectError, match="annotator"):
        LabelingGrid(small_demo, annotator=" ")
    with pytest.raises(wb.ProjectError, match="expected a Project"):
        LabelingGrid(42)


def test_unlabelled_samples_can_be_filtered(project, tmp_path):
    from PIL import Image

    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (i * 60, 10, 10)).save(folder / f"img_{i}.png")
    project.add_class("ok")
    project.import_folder(folder, layout="unlabeled", progress=False)
    grid = LabelingGrid(project, annotator="unlabelled-tester")
    assert grid.filter_options["label"] == [UNLABELLED]
    grid.filter(label=UNLABELLED)
    assert grid.total == 3
    grid.assign("ok", grid.sample_ids[:1])
    grid.refresh()
    assert grid.total == 2


def test_another_users_edit_shows_up_on_refresh(small_demo):
    grid = LabelingGrid(small_demo, annotator="alice")
    sid = grid.items[0]["id"]
    other = next(c for c in small_demo.classes if c != grid.items[0]["label"])
    wb.Project.open(small_demo.name).annotate(sid, other, annotator="bob-elsewhere",
                                              review=True)
    assert grid.items[0]["label"] != other  # not polled: the page shows what it last read
    front(grid, type="refresh")  # the refresh button
    assert grid.items[0]["label"] == other


def test_a_new_grid_offers_a_tag_added_since_the_last_grid(small_demo):
    """Filter options are remembered between grids (one scan of 100,000 samples is 0.3 s),
    but never past a change to the samples."""
    p = small_demo
    first = LabelingGrid(p, annotator="options-tester")
    assert "needs-photo" not in first.filter_options["tag"]
    sid = first.sample_ids[0]
    p.dataset.select(sid).tag_samples("needs-photo")
    assert "needs-photo" in LabelingGrid(p, annotator="options-tester").filter_options["tag"]


def test_a_new_kernel_opens_the_grid_from_the_remembered_options_until_a_sample_changes(
        small_demo, monkeypatch):
    """A dashboard's first grid in a fresh kernel does not scan 100,000 samples again
    (~0.45 s) when nothing changed since the last scan; it does after a relabel."""
    from workbench.store import pages

    p = small_demo
    first = LabelingGrid(p, annotator="options-tester").filter_options
    assert (p.folder / pages.OPTIONS_FILE).is_file()
    pages._OPTIONS.clear()  # a new kernel: nothing remembered in memory
    scans = []
    real_scan = pages._scan_options
    monkeypatch.setattr(pages, "_scan_options",
                        lambda *args: scans.append(1) or real_scan(*args))
    assert LabelingGrid(p, annotator="options-tester").filter_options == first
    assert scans == []  # read from the project folder
    sid, label = next((s, lab) for s, lab in zip(*p.dataset.values(["id", "ground_truth.label"]),
                                                 strict=True) if lab)
    other = next(c for c in p.classes if c != label)
    p.annotate(sid, other, annotator="options-tester")
    pages._OPTIONS.clear()
    LabelingGrid(p, annotator="options-tester")
    assert scans == [1]  # a sample changed: scanned again
    (p.folder / pages.OPTIONS_FILE).write_text("{not json")  # a damaged cache: one scan
    pages._OPTIONS.clear()
    grid = LabelingGrid(p, annotator="options-tester")
    assert scans == [1, 1] and other in grid.filter_options["label"]
