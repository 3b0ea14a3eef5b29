"""Pure analyses: arrays and DataFrames in, DataFrames out; no FiftyOne, no disk.

The Project-level wrappers that read the store and write runs are in
:mod:`workbench.analyse.classification` and :mod:`workbench.analyse.data`.
"""

from workbench.metrics.advice import data_advice, learning_curve
from workbench.metrics.agreement import AgreementReport, annotator_agreement
from workbench.metrics.box_issues import box_issues, image_label_quality
from workbench.metrics.compare import OUTCOMES, compare_predictions, per_class_deltas
from workbench.metrics.confusion import class_report, confusion_cell, confusion_matrix
from workbench.metrics.datasheet import render_datasheet
from workbench.metrics.detection_metrics import (
    detection_confusion,
    detection_map,
    mean_ap,
    slice_map,
)
from workbench.metrics.duplicates import find_duplicates
from workbench.metrics.label_issues import (
    knn_probabilities,
    probe_probabilities,
    rank_label_issues,
)
from workbench.metrics.outliers import outlier_scores
from workbench.metrics.projection import project_2d
from workbench.metrics.slices import discover_slices, slice_report
from workbench.metrics.small_classes import small_class_notes
from workbench.metrics.stats import wilson_interval

__all__ = [
    "OUTCOMES",
    "AgreementReport",
    "annotator_agreement",
    "box_issues",
    "class_report",
    "compare_predictions",
    "confusion_cell",
    "confusion_matrix",
    "data_advice",
    "detection_confusion",
    "detection_map",
    "discover_slices",
    "find_duplicates",
    "image_label_quality",
    "knn_probabilities",
    "learning_curve",
    "mean_ap",
    "outlier_scores",
    "per_class_deltas",
    "probe_probabilities",
    "project_2d",
    "rank_label_issues",
    "render_datasheet",
    "slice_map",
    "slice_report",
    "small_class_notes",
    "wilson_interval",
]
