"""Error analysis of a detection version on its project: mAP, box confusion, box label issues.

Reads the project's *current* consensus boxes (``p.boxes()``) and the version's held-out
(out-of-fold) predictions, computes everything with the pure functions of
:mod:`workbench.metrics.detection_metrics`, and stores a per-image summary of the suspected
box errors as run ``box_issues_<version>`` so views can filter on it
(``F("box_issues_v2.n_issues") > 0``).

>>> rep = wb.detection_report(p, mv)
>>> rep.map50, rep.per_class                 # COCO AP per class
>>> rep.confusion                            # true × predicted, with "background"
>>> rep.issues.head(20)                      # the boxes most likely mislabelled
>>> print(rep.summary())
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.analyse.classification import class_order, resolve
from workbench.keywords import renamed
from workbench.metrics import detection_metrics as dm
from workbench.metrics.box_issues import box_issues, image_label_quality
from workbench.store import _db as store
from workbench.store.coerce import as_project
from workbench.store.project import Project, ProjectError

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

SLICE_COLUMNS = ["slice", "field", "value", "n_images", "n_gt", "map50", "map50_95", "gap",
                 "sample_ids"]


@dataclass
class DetectionReport:
    """What :func:`detection_report` found.

    Attributes
    ----------
    per_class : pd.DataFrame
        ``label, n_gt, n_pred, AP50, AP50_95`` (COCO); classes without ground truth have NaN
        AP and are left out of the means.
    map50, map50_95 : float
        Mean AP over the classes with ground truth, at IoU 0.5 and over 0.5:0.95.
    confusion : pd.DataFrame
        Box counts, true class (rows, plus "background": extra detections) × predicted class
        (columns, plus "background": missed boxes).
    issues : pd.DataFrame
        Suspected box label errors, worst first (:func:`~workbench.metrics.
        detection_metrics.box_issues`), with ``filepath``.
    slices : pd.DataFrame
        mAP per slice field value (:func:`~workbench.metrics.detection_metrics.slice_map`);
        empty when the project has no slice fields.
    config : dict
        Project, version, thresholds and counts the report was computed with.
    """

    per_class: pd.DataFrame
    map50: float
    map50_95: float
    confusion: pd.DataFrame
    issues: pd.DataFrame
    slices: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One paragraph: mAP, the weakest class, the main confusion, issues, worst slice."""
        c = self.config
        parts = [f"{c['version']} on project {c['project']!r}: mAP@0.5 {_fmt(self.map50)}, "
                 f"mAP@[.5:.95] {_fmt(self.map50_95)} over {c['n_images']} held-out images "
                 f"({c['n_gt']} given boxes, {c['n_pred']} predicted)."]
        scored = self.per_class[self.per_class["n_gt"] > 0].sort_values("AP50", kind="stable")
        if len(scored) > 1:
            worst = scored.iloc[0]
            parts.append(f"Weakest class: {worst['label']} (AP50 {_fmt(worst['AP50'])}, "
                         f"{_count(int(worst['n_gt']), 'box', 'boxes')}).")
        classes = [x for x in self.confusion.index if x != dm.BACKGROUND]
        missed = int(self.confusion[dm.BACKGROUND].sum())
        extra = int(self.confusion.loc[dm.BACKGROUND].sum())
        off = self.confusion.loc[classes, classes].to_numpy().copy()
        np.fill_diagonal(off, 0)
        text = (f"At confidence >= {c['score_threshold']:g} and IoU >= {c['iou']:g}, "
                f"{_count(missed, 'given box was', 'given boxes were')} missed and "
                f"{_count(extra, 'detection', 'detections')} had no given box")
        if off.size and off.max() > 0:
            t, p = np.unravel_index(off.argmax(), off.shape)
            text += (f"; most confused: {classes[t]} seen as {classes[p]} "
                     f"({_count(int(off[t, p]), 'box', 'boxes')})")
        parts.append(text + ".")
        if self.issues.empty:
            parts.append("No box looks mislabelled.")
        else:
            counts = self.issues["kind"].value_counts()
            kinds = ", ".join(f"{n} {k}" for k, n in counts.items())
            top = self.issues.iloc[0]
            errors = _count(len(self.issues), "suspected box label error",
                            "suspected box label errors")
            parts.append(f"{errors} ({kinds}); the worst: {top['kind']} on sample "
                         f"{top['sample_id']} (score {top['score']:.2f}).")
        if not self.slices.empty and pd.notna(self.slices["gap"].iloc[0]) \
                and self.slices["gap"].iloc[0] < 0:
            worst = self.slices.iloc[0]
            parts.append(f"Worst slice: {worst['slice']} (mAP50 {_fmt(worst['map50'])}, "
                         f"{worst['gap']:+.2f} vs all, {int(worst['n_images'])} images).")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-ready: NaN → None)."""
        return {"map50": _plain(self.map50), "map50_95": _plain(self.map50_95),
                "per_class": _records(self.per_class),
                "confusion": {str(t): {str(p): int(v) for p, v in row.items()}
                              for t, row in self.confusion.iterrows()},
                "issues": _records(self.issues), "slices": _records(self.slices),
                "config": dict(self.config)}

    def __repr__(self) -> str:
        return (f"DetectionReport({self.config.get('version')}: map50={_fmt(self.map50)}, "
                f"map50_95={_fmt(self.map50_95)}, {len(self.issues)} issues)")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): _plain(v) if not (v is None or (np.isscalar(v) and pd.isna(v))) else None
             for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _check(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            low <= float(value) <= high):
        raise ProjectError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}.")
    return float(value)


def evaluation_frames(project: Project, version: ModelVersion
                      ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The current consensus boxes and the version's held-out predictions, restricted to
    the images the version held out that are labelled now, and those image ids.

    Images labelled since training but never held out are left out: the version has no
    out-of-fold view of them.
    """
    samples = project.to_pandas()
    labelled = set(samples.loc[samples["n_boxes"].notna(), "sample_id"])
    snapshot = version.snapshot()
    held = snapshot.loc[snapshot["fold"] >= 0, "sample_id"]
    ids = [s for s in dict.fromkeys(held) if s in labelled]
    if not ids:
        raise ProjectError(f"no image held out by {version.name!r} is labelled in project "
                           f"{project.name!r} now; retrain on the current labels "
                           "(wb.train(p, task='detection')).")
    keep = set(ids)
    gt = project.boxes()
    gt = gt[gt["sample_id"].isin(keep)].reset_index(drop=True)
    pred = version.oof_predictions()
    pred = pred[pred["sample_id"].isin(keep)].reset_index(drop=True)
    return gt, pred, ids


@renamed(model_version="version")
def detection_report(project: Project | str, version: ModelVersion | str | None = None,
                     *, iou: float = 0.5, score_threshold: float = 0.3,
                     localisation_iou: float = 0.1, write: bool = True) -> DetectionReport:
    """How a detection version does on its project, and which boxes look mislabelled.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str, optional
        A detection version (default: the newest). Its out-of-fold predictions are compared
        with the project's current consensus boxes on the images it held out.
    iou : float, default 0.5
        IoU of a match for the confusion and the issues (mAP uses COCO's thresholds).
    score_threshold : float, default 0.3
        Predictions below this confidence are left out of the confusion and the issues
        (mAP uses every prediction).
    localisation_iou : float, default 0.1
        Below this IoU a prediction does not overlap a box at all (see ``box_issues``).
    write : bool, default True
        Store each evaluated image's issue summary as run ``box_issues_<version>``:
        ``n_issues``, ``top_kind`` (None without issues), ``max_score`` (0 without),
        ``kinds`` and ``image_quality`` (cleanlab's ObjectLab score, lower is worse).

    Returns
    -------
    DetectionReport

    Raises
    ------
    ProjectError
        When the project or the version is not a detection one, a threshold is out of
        range, or no held-out image is labelled.
    """
    project = as_project(project)
    if project.task != "detection":
        raise ProjectError(f"detection_report needs a detection project; {project.name!r} is "
                           f"a {project.task} project (use wb.confusion / wb.label_issues).")
    project, version = resolve(project, version)
    if version.task != "detection":
        raise ProjectError(f"model version {version.name!r} is a {version.task} model; train a "
                           "detector with wb.train(p, task='detection').")
    iou = _check("iou", iou, 0.05, 1.0)
    score_threshold = _check("score_threshold", score_threshold, 0.0, 1.0)
    localisation_iou = _check("localisation_iou", localisation_iou, 0.0, 1.0)
    if not 0 < localisation_iou < iou:
        raise ProjectError(f"localisation_iou must lie in (0, iou={iou:g}), got "
                           f"{localisation_iou!r}.")
    gt, pred, ids = evaluation_frames(project, version)
    classes = class_order(project, version)
    per_class = dm.detection_map(gt, pred, sample_ids=ids, classes=classes)
    confusion = dm.detection_confusion(gt, pred, sample_ids=ids, iou=iou,
                                       score_threshold=score_threshold, classes=classes)
    issues = box_issues(gt, pred, sample_ids=ids, iou=iou, score_threshold=score_threshold,
                           localisation_iou=localisation_iou)
    paths = dict(zip(*project.dataset.select(ids).values(["id", "filepath"]), strict=True))
    issues.insert(1, "filepath", issues["sample_id"].map(paths))
    fields = project.slice_fields
    if fields:
        table = project.to_pandas()[["sample_id", *fields]]
        slices = dm.slice_map(gt, pred, table[table["sample_id"].isin(set(ids))],
                              sample_ids=ids)
    else:
        slices = pd.DataFrame(columns=SLICE_COLUMNS)
    config = {"project": project.name, "version": version.name, "iou": iou,
              "score_threshold": score_threshold, "localisation_iou": localisation_iou,
              "n_images": len(ids), "n_gt": len(gt), "n_pred": len(pred),
              "classes": classes, "run_key": f"box_issues_{version.name}" if write else None}
    report = DetectionReport(per_class=per_class, map50=per_class.attrs["map50"],
                             map50_95=per_class.attrs["map50_95"], confusion=confusion,
                             issues=issues, slices=slices, config=config)
    if write:
        quality = image_label_quality(gt, pred, sample_ids=ids,
                                         low_probability_threshold=score_threshold,
                                         high_probability_threshold=score_threshold)
        store.write_run(project.dataset, config["run_key"],
                        _per_image(issues, ids, quality), method="box_issues",
                        config={k: config[k] for k in ("version", "iou", "score_threshold",
                                                       "localisation_iou")})
    return report


def _per_image(issues: pd.DataFrame, ids: list[str],
               quality: pd.Series) -> dict[str, dict[str, Any]]:
    """Per evaluated image: n_issues, top_kind, max_score, kinds, image_quality."""
    groups = dict(list(issues.groupby("sample_id", sort=False)))
    values = {}
    for sid in ids:
        part = groups.get(sid)
        has = part is not None and len(part) > 0
        values[sid] = {"n_issues": len(part) if has else 0,
                       "top_kind": str(part["kind"].iloc[0]) if has else None,
                       "max_score": float(part["score"].iloc[0]) if has else 0.0,
                       "kinds": sorted(set(part["kind"])) if has else [],
                       "image_quality": float(quality.get(sid, 1.0))}
    return values


__all__ = ["DetectionReport", "detection_report", "evaluation_frames"]
