"""The public names of ``workbench``, imported on first use (``lazy_loader.attach_stub``).

This stub is the one list: type checkers and IDEs read it, and ``__init__.py`` builds
``__getattr__``, ``__dir__`` and ``__all__`` from it."""

from . import demo
from .analyse.classification import (
    class_report,
    confusion,
    confusion_samples,
    data_advice,
    discover_slices,
    label_issues,
    slice_report,
)
from .analyse.compare import class_deltas, compare
from .analyse.data import agreement, datasheet, near_duplicates, outliers
from .analyse.detection import DetectionReport, detection_report
from .analyse.embedding_map import embedding_map
from .deploy.edge import EdgeDetector, EdgePredictor
from .deploy.export import detect_exported, export
from .errors import DatabaseUnavailableError, LoupeError, ProjectError, UnsafePathError
from .improve.examples import suggest_examples
from .improve.review_curve import ReviewCurve, review_curve
from .improve.selection import LabelSuggestion, next_to_label, suggest_labels
from .improve.synthesize import (
    Improvement,
    SynthesisReport,
    improve_class,
    synthesize,
    synthetic_recipes,
    veto_synthetic,
)
from .monitor.drift import DriftReport, drift, drift_history, load_check
from .store.coerce import as_project, as_version, require_task
from .store.ingest.scan import ImportReport
from .store.labelbook import add_example, book_history, define_label, label_book, remove_example
from .store.project import Project, delete_project, list_projects
from .train.classification.finetune import UnusableStateWarning
from .train.classification.train import TrainingCancelled, train
from .train.detection.train import DetectionSettings, train_detector
from .train.run_lock import RunInProgressError
from .train.versions import ModelVersion

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
    "as_project",
    "as_version",
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
    "require_task",
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
