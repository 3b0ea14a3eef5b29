"""One vocabulary across the public API (in the spirit of scikit-learn's common tests).

Every name in ``workbench.__all__`` and ``widgets.__all__`` is inspected: a model version
is ``version`` (or ``baseline`` beside it, or the earlier keyword ``model``), a project is
``project`` (``source`` for widgets, which also take views), persisting is ``write=``, and
every widget that writes names its ``annotator`` (no made-up default). Earlier keyword
names keep working through :func:`workbench.keywords.renamed`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pytest

import widgets
import workbench as wb
from workbench.keywords import renamed

#: Names the vocabulary replaced; only accepted as earlier keywords, never in a signature.
RETIRED = {"mv": "version", "model_version": "version", "base_version": "version",
           "a": "baseline", "b": "version", "p": "project", "store": "write",
           "persist": "write", "save": "write"}
#: What a parameter annotated as a model version may be called.
VERSION_NAMES = {"version", "baseline", "model"}
#: What a parameter annotated as a project may be called.
PROJECT_NAMES = {"project", "source"}
#: Widgets that only show (every other widget stores what a person decides).
READ_ONLY_WIDGETS = {"AnomalyMap", "DriftBanner", "HonestNumbers", "ProjectOverview",
                     "RememberedName", "ReviewCurve"}


def _signature(obj: Any) -> inspect.Signature | None:
    target = obj.__init__ if inspect.isclass(obj) else obj
    if not callable(target) or (inspect.isclass(obj) and issubclass(obj, BaseException)):
        return None
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def vocabulary_violations(named: Iterable[tuple[str, Any]]) -> list[str]:
    """What breaks the vocabulary among ``(name, object)`` pairs (empty: nothing)."""
    found = []
    for name, obj in named:
        signature = _signature(obj)
        if signature is None:
            continue
        for parameter in signature.parameters.values():
            if parameter.name == "self":
                continue
            where = f"{name}({parameter.name}=...)"
            annotation = str(parameter.annotation)
            if parameter.name in RETIRED:
                found.append(f"{where}: say {RETIRED[parameter.name]}=")
            if "ModelVersion" in annotation and parameter.name not in VERSION_NAMES:
                found.append(f"{where}: a model version is called version")
            if annotation.startswith("Project") and parameter.name not in PROJECT_NAMES:
                found.append(f"{where}: a project is called project")
            if parameter.name == "annotator" and parameter.default not in (None,
                                                                           inspect.Parameter.empty):
                found.append(f"{where}: annotator defaults to {parameter.default!r}, a name "
                             "nobody gave")
    return found


def _public(module: Any) -> list[tuple[str, Any]]:
    return [(f"{module.__name__}.{name}", getattr(module, name)) for name in module.__all__]


def test_the_public_api_speaks_one_vocabulary():
    assert vocabulary_violations(_public(wb) + _public(widgets)) == []


def test_the_vocabulary_check_catches_a_retired_name():
    def report(p, mv=None, *, store=True, annotator="alice"):
        """Four mistakes at once."""

    found = vocabulary_violations([("report", report)])
    assert [f.split(":")[0] for f in found] == ["report(p=...)", "report(mv=...)",
                                                "report(store=...)", "report(annotator=...)"]


@pytest.mark.parametrize("name", sorted(set(widgets.__all__) - READ_ONLY_WIDGETS
                                        - {"label_colors", "ReviewQueue"}))
def test_every_widget_that_writes_asks_for_the_annotator(name):
    parameters = _signature(getattr(widgets, name)).parameters
    assert "annotator" in parameters, f"{name} stores decisions but takes no annotator"
    assert parameters["annotator"].default is None or \
        parameters["annotator"].default is inspect.Parameter.empty


def test_earlier_keywords_still_work_and_both_names_at_once_is_an_error():
    @renamed(mv="version")
    def shown(project: str, version: str | None = None) -> str | None:
        return version

    assert shown("p", mv="v2") == shown("p", version="v2") == "v2"
    assert list(inspect.signature(shown).parameters) == ["project", "version"]
    with pytest.raises(TypeError, match="pass version= only"):
        shown("p", mv="v1", version="v2")


def test_renamed_keywords_are_accepted_across_the_api(widget_demo):
    p, v1, v2 = widget_demo
    by_new = wb.compare(p, baseline=v1, version=v2)
    by_old = wb.compare(p, a=v1, b=v2)
    pd.testing.assert_frame_equal(by_new, by_old)
    assert (by_new.attrs["a"], by_new.attrs["b"]) == (v1.name, v2.name)
    queue = widgets.IssueQueue(p, mv=v1.name, annotator="vocab")
    assert queue.version.name == v1.name


def test_frames_share_the_column_names(widget_demo):
    from workbench.analyse.classification import held_out

    p, v1, v2 = widget_demo
    predictions = held_out(p, v1)
    assert {"sample_id", "filepath", "given", "predicted", "confidence"} <= set(predictions)
    issues = wb.label_issues(p, v1, write=False)
    assert {"sample_id", "filepath", "given"} <= set(issues)
    compared = wb.compare(p, v1, v2)
    assert {"sample_id", "given"} <= set(compared)
    for frame in (predictions, issues, compared):
        assert "label" not in frame.columns, "a label column is given or predicted"


def test_a_widget_without_a_name_shows_but_does_not_write(widget_demo):
    p, v1, _ = widget_demo
    queue = widgets.IssueQueue(p, v1, only_issues=False)
    before = p.history(queue.cards[0]["sample_id"])
    with pytest.raises(wb.ProjectError, match="annotator='your name'"):
        queue.accept()
    assert p.history(queue.cards[0]["sample_id"]).equals(before)
    grid = widgets.LabelingGrid(p)
    with pytest.raises(wb.ProjectError, match="without a name"):
        grid.assign(p.classes[0], [queue.cards[0]["sample_id"]])
    assert p.history(queue.cards[0]["sample_id"]).equals(before)

