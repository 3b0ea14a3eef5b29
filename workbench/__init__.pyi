"""The public names of ``workbench``, imported on first use (``lazy_loader.attach_stub``).

This stub is the one list: type checkers and IDEs read it, and ``__init__.py`` builds
``__getattr__``, ``__dir__`` and ``__all__`` from it."""

from . import demo, jobs
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
from .analyse.decisions import (
    Calibration,
    NotEnoughEvidenceError,
    OperatingPoint,
    calibrate,
    operating_point,
    operating_point_history,
)
from .analyse.detection import DetectionReport, detection_report
from .analyse.embedding_map import embedding_map
from .analyse.image_quality import UnreadableImagesWarning, image_issues
from .analyse.leaks import leaks
from .analyse.open_work import (
    ReviewCounts,
    open_disagreements,
    open_label_issues,
    review_counts,
)
from .analyse.shortcuts import shortcuts
from .deploy.deployments import (
    current_deployment,
    deployment_history,
    deployments,
    promote,
    rollback,
)
from .deploy.edge import EdgeDetector, EdgePredictor
from .deploy.export import detect_exported, export
from .deploy.gate import GateReport, gate
from .deploy.line_state import Deployment
from .errors import (
    DatabaseUnavailableError,
    DeploymentConflict,
    DeploymentConflictError,
    DeploymentError,
    GateFailed,
    GateFailedError,
    LoupeError,
    ProjectError,
    UnsafePathError,
)
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
from .line import LineStatus, changed_verdicts, line_status, line_timeline, retrain_arguments
from .line.intake import IntakeReport, import_batch
from .line.uploads import UploadRejectedError, save_uploads
from .monitor.drift import DriftReport, drift, drift_history, load_check
from .store.coerce import as_project, as_version, require_task
from .store.inbox import inbox_batch, inbox_batches
from .store.ingest.scan import ImportReport
from .store.labelbook import add_example, book_history, define_label, label_book, remove_example
from .store.project import Project, delete_project, list_projects
from .train.anomaly.train import NotEnoughNormalImagesError
from .train.classification.finetune import UnusableStateWarning
from .train.classification.train import TrainingCancelled, train
from .train.detection.train import DetectionSettings, train_detector
from .train.embeddings import embed
from .train.run_lock import RunInProgressError
from .train.versions import ModelVersion

__all__ = [
    "Calibration",
    "DatabaseUnavailableError",
    "Deployment",
    "DeploymentConflict",
    "DeploymentConflictError",
    "DeploymentError",
    "DetectionReport",
    "DetectionSettings",
    "DriftReport",
    "EdgeDetector",
    "EdgePredictor",
    "GateFailed",
    "GateFailedError",
    "GateReport",
    "ImportReport",
    "Improvement",
    "IntakeReport",
    "LabelSuggestion",
    "LineStatus",
    "LoupeError",
    "ModelVersion",
    "NotEnoughEvidenceError",
    "NotEnoughNormalImagesError",
    "OperatingPoint",
    "Project",
    "ProjectError",
    "ReviewCounts",
    "ReviewCurve",
    "RunInProgressError",
    "SynthesisReport",
    "TrainingCancelled",
    "UnreadableImagesWarning",
    "UnsafePathError",
    "UnusableStateWarning",
    "UploadRejectedError",
    "add_example",
    "agreement",
    "as_project",
    "as_version",
    "book_history",
    "calibrate",
    "changed_verdicts",
    "class_deltas",
    "class_report",
    "compare",
    "confusion",
    "confusion_samples",
    "current_deployment",
    "data_advice",
    "datasheet",
    "define_label",
    "delete_project",
    "demo",
    "deployment_history",
    "deployments",
    "detect_exported",
    "detection_report",
    "discover_slices",
    "drift",
    "drift_history",
    "embed",
    "embedding_map",
    "export",
    "gate",
    "image_issues",
    "import_batch",
    "improve_class",
    "inbox_batch",
    "inbox_batches",
    "jobs",
    "label_book",
    "label_issues",
    "leaks",
    "line_status",
    "line_timeline",
    "list_projects",
    "load_check",
    "near_duplicates",
    "next_to_label",
    "open_disagreements",
    "open_label_issues",
    "operating_point",
    "operating_point_history",
    "outliers",
    "promote",
    "remove_example",
    "require_task",
    "retrain_arguments",
    "review_counts",
    "review_curve",
    "rollback",
    "save_uploads",
    "shortcuts",
    "slice_report",
    "suggest_examples",
    "suggest_labels",
    "synthesize",
    "synthetic_recipes",
    "train",
    "train_detector",
    "veto_synthetic",
]
