"""Workbench: the tabs, the shared pickers, and that edits in a tab reach the store."""

from __future__ import annotations

import pytest

import workbench as wb
from widgets import (
    AgreementReview,
    ConfusionDrilldown,
    DriftMonitor,
    EmbeddingMap,
    IssueQueue,
    LabelBook,
    LabelingGrid,
    ModelCompare,
    SlicePerformance,
    Workbench,
)
from widgets.app import TABS

EXPECTED = {"Label": LabelingGrid, "Confusion": ConfusionDrilldown,
            "Slices": SlicePerformance, "Issues": IssueQueue, "Agreement": AgreementReview,
            "Map": EmbeddingMap, "Compare": ModelCompare, "Label book": LabelBook,
            "Drift": DriftMonitor}


def test_every_tab_builds_on_the_demo_with_the_shared_version_and_name(widget_demo):
    p, v1, v2 = widget_demo
    app = Workbench(p, annotator="erin")
    assert app.version == v2.name and app.baseline == v1.name  # newest, compared to older
    assert list(TABS) == list(EXPECTED)
    assert list(app.tabs.titles) == list(EXPECTED)
    assert set(app.built) == {"Label"}  # lazily: only the open tab is built
    for title, kind in EXPECTED.items():
        widget = app.open_tab(title)
        assert isinstance(widget, kind), (title, widget)
        assert app.tabs.selected_index == list(EXPECTED).index(title)
    grid = app.open_tab("Label")
    sid = grid.sample_ids[0]
    grid.selected = [sid]
    target = next(c for c in p.classes if c != grid.items[0]["label"])
    grid._on_front_message(grid, {"type": "assign", "label": target, "ids": [sid]}, [])
    last = p.history(sid).iloc[-1]
    assert (last.annotator, last.label, last.review) == ("erin", target, True)
    assert app.selected == [sid]
    grid.undo()


def test_a_new_version_rebuilds_a_new_name_carries_over_and_tabs_explain_what_is_missing(
        widget_demo, project):
    p, v1, v2 = widget_demo
    app = Workbench(p, version=v1.name)
    assert app.annotator is None and app.memory.name == ""  # no made-up name
    app.open_tab("Confusion")
    first = app.built["Confusion"]
    with pytest.raises(wb.ProjectError, match="without a name"):
        first.grid.assign(p.classes[0], [first.grid.sample_ids[0]] if first.grid.sample_ids
                          else [p.dataset.first().id])
    app.annotator_box.value = "frank"  # typed (or filled in by the browser's memory)
    same = app.open_tab("Confusion")
    assert same is first and same.grid.annotator == "frank"  # the work on screen is kept
    assert app.memory.name == "frank"  # remembered for the next visit
    app.version_picker.value = v2.name
    rebuilt = app.open_tab("Confusion")
    assert rebuilt is not first and rebuilt.version.name == v2.name
    assert rebuilt.grid.annotator == "frank"
    empty = Workbench(project)  # no model version yet
    note = empty.open_tab("Confusion")
    assert "needs a model version" in note.value and "wb.train" in note.value
    assert "two model versions" in empty.open_tab("Compare").value
    with pytest.raises(wb.ProjectError, match="no model version 'v9'"):
        Workbench(p, version="v9")
    with pytest.raises(ValueError, match="no tab 'Nope'"):
        app.open_tab("Nope")
