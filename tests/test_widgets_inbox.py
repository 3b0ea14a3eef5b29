"""DriftMonitor's inbox controls (pick a batch, check it, import it), its empty chart, the
label book without a selection source and the embedding map's title, on a real store."""

from __future__ import annotations

import os
from datetime import date

import pytest

import workbench as wb
from widgets import DriftMonitor, EmbeddingMap, LabelBook, LabelingGrid
from workbench.demo import create_demo_project, write_demo_inbox


@pytest.fixture(scope="module")
def line():
    """A small demo project with a quick probe version and one night batch in its inbox."""
    project = create_demo_project(f"inbox-widgets-{os.getpid()}", n_per_class=6, seed=4,
                                  overwrite=True)
    version = wb.train(project, mode="probe", folds=3, image_size=64, progress=False)
    write_demo_inbox(project, n=10, day=date(2026, 11, 26))
    yield project, version
    wb.delete_project(project.name)


def test_without_checks_the_chart_is_a_sentence_not_empty_axes(line):
    project, version = line
    assert project.drift_history().empty
    monitor = DriftMonitor(project, version)
    assert monitor.chart.layout.display == "none"
    assert monitor.empty_note.layout.display != "none"
    assert "No drift check yet — pick a batch from the inbox" in monitor.empty_note.value


def test_check_and_import_the_chosen_inbox_batch(line):
    project, version = line
    monitor = DriftMonitor(project, version, n_images=4, annotator="erin")
    labels = [label for label, _ in monitor.batch_picker.options]
    assert labels == [next(x for x in labels if x.startswith("night-2026-11-26 · 10 images"))]
    assert not monitor.run_button.disabled and not monitor.import_button.disabled
    before = len(project.drift_history())

    monitor.run_button.click()
    history = project.drift_history()
    assert len(history) == before + 1 and "night-2026-11-26" in history["batch"].iloc[-1]
    assert monitor.check.check_id == history["check_id"].iloc[-1]
    assert monitor.chart.layout.display != "none" and monitor.empty_note.layout.display == "none"
    assert monitor.detail.value.count("<img") == 4

    n_before, checks_before = len(project), len(project.drift_history())
    monitor.import_button.click()
    assert "10 image(s) added" in monitor.message.value and "0 rejected" in monitor.message.value
    assert len(project) == n_before + 10
    # The import checked the batch for drift too, stored it and shows it.
    history = project.drift_history()
    assert len(history) == checks_before + 1 and history["batch"].iloc[-1] == "night-2026-11-26"
    assert monitor.check.check_id == history["check_id"].iloc[-1]
    assert "Drift check against" in monitor.message.value
    tagged = project.dataset.match({"batch": "night-2026-11-26"})
    assert tagged.count() == 10 and set(tagged.values("ground_truth")) == {None}
    monitor.import_button.click()  # again: every image is already stored
    assert "0 image(s) added, 10 already stored" in monitor.message.value
    assert len(project) == n_before + 10


def test_import_without_a_name_is_refused_and_stores_nothing(line):
    project, version = line
    monitor = DriftMonitor(project, version)
    n_before = len(project)
    assert monitor.import_batch() is None
    assert "without a name" in monitor.message.value and len(project) == n_before


def test_an_empty_inbox_says_where_to_put_images(line, tmp_path):
    project, version = line
    inbox = project.folder / "inbox"
    inbox.rename(tmp_path / "moved")
    try:
        monitor = DriftMonitor(project, version, annotator="erin")
        assert monitor.batch_picker.options == ()
        assert monitor.run_button.disabled and monitor.import_button.disabled
        assert "The inbox is empty" in monitor.message.value and str(inbox) in \
            monitor.message.value
        assert monitor.check_batch() is None
    finally:
        (tmp_path / "moved").rename(inbox)
    monitor.refresh_inbox()
    assert len(monitor.batch_picker.options) == 1 and monitor.message.value == ""


def test_label_book_offers_add_selected_only_with_a_selection_source(line):
    project, version = line
    book = LabelBook(project, annotator="erin", version=version)
    card = book.cards["dent"]
    assert card.add_selected.layout.display == "none"
    assert "suggest" in card.empty_hint.value
    grid = LabelingGrid(project, annotator="erin")
    book.follow(grid)
    assert card.add_selected.layout.display != "none"
    assert card.add_selected.description == "add selected (0)"
    grid.selected = list(project.dataset.match({"demo_truth": "dent"}).values("id")[:2])
    assert card.add_selected.description == "add selected (2)"
    assert "add selected" in card.empty_hint.value


def test_embedding_map_names_the_projection_that_ran(line):
    project, version = line
    header = EmbeddingMap(project, version).header.value
    assert "t-SNE of the tf_efficientnet_lite0 embeddings" in header
    assert "(chosen automatically)" in header and "auto of" not in header
