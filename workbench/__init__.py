"""Loupe's headless core: projects, ingest, labels, training, analysis, export, the demo.

>>> import workbench as wb
>>> p = wb.Project.create("casing")
>>> report = p.import_folder("images/", layout="class_folders")
>>> mv = wb.train(p)                       # "v1": k-fold, out-of-fold predictions
>>> wb.label_issues(p, mv).head(10)      # the labels most likely wrong
>>> wb.export(mv, "onnx", "casing.onnx")   # for the line-side box: wb.EdgePredictor

Names are imported on first use, so ``from workbench.edge import EdgePredictor`` on an edge
box pulls in neither FiftyOne nor torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name -> module that defines it.
_EXPORTS = {
    **dict.fromkeys(("LoupeError", "DatabaseUnavailableError", "UnsafePathError"),
                    "workbench.errors"),
    "ImportReport": "workbench.ingest",
    "Project": "workbench.project",
    "ProjectError": "workbench.project",
    "delete_project": "workbench.project",
    "list_projects": "workbench.project",
    "ModelVersion": "workbench.versions",
    "TrainingCancelled": "workbench.training",
    "RunInProgressError": "workbench.run_lock",
    "UnusableStateWarning": "workbench.finetune",
    "train": "workbench.training",
    "export": "workbench.exporter",
    "EdgePredictor": "workbench.edge",
    "EdgeDetector": "workbench.edge",
    "detect_exported": "workbench.exporter",
    **dict.fromkeys(("train_detector", "DetectionSettings"), "workbench.detection_training"),
    **dict.fromkeys(("confusion", "confusion_samples", "class_report", "slice_report",
                     "discover_slices", "label_issues", "data_advice"),
                    "workbench.model_analysis"),
    **dict.fromkeys(("agreement", "near_duplicates", "outliers", "datasheet"),
                    "workbench.data_analysis"),
    **dict.fromkeys(("compare", "class_deltas"), "workbench.model_compare"),
    "embedding_map": "workbench.maps",
    **dict.fromkeys(("drift", "DriftReport", "drift_history", "load_check"),
                    "workbench.monitoring"),
    **dict.fromkeys(("synthesize", "synthetic_recipes", "SynthesisReport", "improve_class",
                     "Improvement", "veto_synthetic"),
                    "workbench.targeted"),
    **dict.fromkeys(("review_curve", "ReviewCurve"), "workbench.review_budget"),
    **dict.fromkeys(("detection_report", "DetectionReport"), "workbench.detection_report"),
    **dict.fromkeys(("suggest_labels", "next_to_label", "LabelSuggestion"),
                    "workbench.selection"),
    **dict.fromkeys(("label_book", "define_label", "add_example", "remove_example",
                     "book_history", "suggest_examples"), "workbench.labelbook"),
}
# A public function never shares its module's name: ``import workbench.x`` binds the
# module as ``workbench.x``, which would hide a function ``x`` served lazily from here.

if TYPE_CHECKING:
    from workbench import demo
    from workbench.data_analysis import agreement, datasheet, near_duplicates, outliers
    from workbench.edge import EdgePredictor
    from workbench.errors import DatabaseUnavailableError, LoupeError, UnsafePathError
    from workbench.exporter import export
    from workbench.finetune import UnusableStateWarning
    from workbench.ingest import ImportReport
    from workbench.model_analysis import (
        class_report,
        confusion,
        confusion_samples,
        data_advice,
        discover_slices,
        label_issues,
        slice_report,
    )
    from workbench.model_compare import class_deltas, compare
    from workbench.monitoring import DriftReport, drift, drift_history, load_check
    from workbench.project import Project, ProjectError, delete_project, list_projects
    from workbench.review_budget import ReviewCurve, review_curve
    from workbench.run_lock import RunInProgressError
    from workbench.selection import LabelSuggestion, next_to_label, suggest_labels
    from workbench.targeted import (
        Improvement,
        SynthesisReport,
        improve_class,
        synthesize,
        synthetic_recipes,
        veto_synthetic,
    )
    from workbench.training import TrainingCancelled, train
    from workbench.versions import ModelVersion


def __getattr__(name: str) -> Any:
    if name == "demo":
        return importlib.import_module("workbench.demo")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "demo"])


__all__ = [
    "DatabaseUnavailableError",
    "DetectionReport",
    "DetectionSettings",
    "DriftReport",
    "EdgeDetector",
    "EdgePredictor",
    "ImportReport",
    "Improvement",
    "LabelSuggestion",
    "LoupeError",
    "ModelVersion",
    "Project",
    "ProjectError",
    "ReviewCurve",
    "RunInProgressError",
    "SynthesisReport",
    "TrainingCancelled",
    "UnsafePathError",
    "UnusableStateWarning",
    "add_example",
    "agreement",
    "book_history",
    "class_deltas",
    "class_report",
    "compare",
    "confusion",
    "confusion_samples",
    "data_advice",
    "datasheet",
    "define_label",
    "delete_project",
    "demo",
    "detect_exported",
    "detection_report",
    "discover_slices",
    "drift",
    "drift_history",
    "embedding_map",
    "export",
    "improve_class",
    "label_book",
    "label_issues",
    "list_projects",
    "load_check",
    "near_duplicates",
    "next_to_label",
    "outliers",
    "remove_example",
    "review_curve",
    "slice_report",
    "suggest_examples",
    "suggest_labels",
    "synthesize",
    "synthetic_recipes",
    "train",
    "train_detector",
    "veto_synthetic",
]
__version__ = "0.1.0"
