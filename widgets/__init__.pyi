"""The public names of ``widgets``, imported on first use (``lazy_loader.attach_stub``).

This stub is the one list: type checkers and IDEs read it, and ``__init__.py`` builds
``__getattr__``, ``__dir__`` and ``__all__`` from it."""

from ._base.name_memory import RememberedName
from ._base.palette import label_colors
from ._base.review_queue import ReviewQueue
from .analyse.anomaly_map import AnomalyMap
from .analyse.box_confusion import BoxConfusionDrilldown
from .analyse.compare import ModelCompare
from .analyse.confusion import ConfusionDrilldown
from .analyse.embedding_map import EmbeddingMap
from .analyse.honest_numbers import HonestNumbers
from .analyse.slices import SlicePerformance
from .app import Workbench
from .improve.review_curve import ReviewCurve
from .label.agreement_review import AgreementReview
from .label.box_issue_queue import BoxIssueQueue
from .label.box_labeler import BoxLabeler
from .label.grid import LabelingGrid
from .label.issue_queue import IssueQueue
from .label.label_book import LabelBook
from .line.console import LineConsole
from .line.operating_point import OperatingPoint
from .monitor.drift_banner import DriftBanner
from .monitor.drift_monitor import DriftMonitor
from .overview import ProjectOverview

__all__ = [
    "AgreementReview",
    "AnomalyMap",
    "BoxConfusionDrilldown",
    "BoxIssueQueue",
    "BoxLabeler",
    "ConfusionDrilldown",
    "DriftBanner",
    "DriftMonitor",
    "EmbeddingMap",
    "HonestNumbers",
    "IssueQueue",
    "LabelBook",
    "LabelingGrid",
    "LineConsole",
    "ModelCompare",
    "OperatingPoint",
    "ProjectOverview",
    "RememberedName",
    "ReviewCurve",
    "ReviewQueue",
    "SlicePerformance",
    "Workbench",
    "label_colors",
]
