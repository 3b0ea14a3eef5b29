"""Loupe's notebook widgets: render what ``workbench`` computes, send edits back.

Every widget takes a Project, a project name or a FiftyOne view of one, writes label edits
through :meth:`workbench.Project.annotate` under a person's name, and exposes ``.selected``.
Imports are lazy, so ``from widgets import LabelingGrid`` loads only what the grid needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgreementReview": "widgets.agreement_review",
    "BoxConfusionDrilldown": "widgets.box_confusion",
    "BoxIssueQueue": "widgets.box_issue_queue",
    "BoxLabeler": "widgets.box_labeler",
    "ConfusionDrilldown": "widgets.confusion",
    "DriftMonitor": "widgets.drift_monitor",
    "EmbeddingMap": "widgets.embedding_map",
    "IssueQueue": "widgets.issue_queue",
    "LabelBook": "widgets.label_book",
    "LabelingGrid": "widgets.grid",
    "ModelCompare": "widgets.compare",
    "ProjectOverview": "widgets.overview",
    "ReviewCurve": "widgets.review_curve",
    "ReviewQueue": "widgets.review_queue",
    "SlicePerformance": "widgets.slices",
    "Workbench": "widgets.app",
    "label_colors": "widgets.palette",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
