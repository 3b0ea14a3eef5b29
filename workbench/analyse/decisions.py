"""Decisions by cost: calibrated probabilities and the operating point a line applies.

>>> cal = wb.calibrate(p, "v2")                 # temperature on out-of-fold predictions
>>> cal.ece_before, cal.ece_after; cal.plot()   # reliability diagram
>>> op = wb.operating_point(p, "v2", costs={"escape": 50, "false_reject": 1}, normal="ok",
...                         annotator="erin")
>>> op.threshold, op.expected                   # reject when P(not normal) >= threshold
>>> op.decide(mv.predict(paths))                # a `decision` column: accept / reject

Both are chosen from the version's out-of-fold predictions against the images' *current*
labels, and stored with the version: ``calibration.json`` (``mv.predict`` and exports apply
it from then on) and ``version.json``'s ``operating_point`` (which ``wb.promote`` copies
into ``deployment.json`` and ``loupe-edge`` applies), with every choice appended to
``operating_points.jsonl`` under the person's name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.analyse.classification import held_out
from workbench.metrics.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    reliability_table,
)
from workbench.metrics.costs import (
    PER,
    Costs,
    NotEnoughEvidenceError,
    best_threshold,
    check_evidence,
    cost_table,
)
from workbench.store.coerce import as_version
from workbench.store.eval_sets import current_labels
from workbench.store.project import Project, ProjectError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.train.versions import ModelVersion

#: Stored in the version's folder.
CALIBRATION_FILE = "calibration.json"
HISTORY_FILE = "operating_points.jsonl"


# -- calibration --------------------------------------------------------------------------------
@dataclass
class Calibration:
    """Temperature scaling of one version, fitted on its out-of-fold predictions."""

    version: str
    temperature: float
    ece_before: float
    ece_after: float
    log_loss_before: float
    log_loss_after: float
    n: int
    reliability_before: pd.DataFrame = field(repr=False)
    reliability_after: pd.DataFrame = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"method": "temperature", "temperature": self.temperature,
                "ece_before": self.ece_before, "ece_after": self.ece_after,
                "log_loss_before": self.log_loss_before, "log_loss_after": self.log_loss_after,
                "n": self.n, "fitted_on": "out-of-fold",
                "fitted_at": datetime.now(UTC).isoformat(timespec="seconds")}

    def plot(self) -> go.Figure:
        """Reliability diagram: accuracy against confidence, before and after."""
        import plotly.graph_objects as go

        figure = go.Figure()
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                                    line={"dash": "dot", "color": "#999"}))
        for name, table, colour in (
                (f"before (ECE {self.ece_before:.3f})", self.reliability_before, "#d62728"),
                (f"after, T = {self.temperature:.2f} (ECE {self.ece_after:.3f})",
                 self.reliability_after, "#1f77b4")):
            used = table[table["n"] > 0]
            figure.add_trace(go.Scatter(
                x=used["confidence"], y=used["accuracy"], mode="lines+markers", name=name,
                marker={"size": 4 + 16 * np.sqrt(used["n"] / max(1, used["n"].max())),
                        "color": colour},
                customdata=used["n"], hovertemplate="confidence %{x:.2f}<br>accuracy "
                "%{y:.2f}<br>%{customdata} images<extra></extra>"))
        figure.update_layout(title=f"{self.version}: reliability on {self.n} out-of-fold images",
                             xaxis_title="confidence (top class)", yaxis_title="accuracy",
                             xaxis_range=[0, 1], yaxis_range=[0, 1.02], height=420)
        return figure


def _labelled_oof(project: Project, version: ModelVersion) -> tuple[np.ndarray, np.ndarray]:
    """Raw out-of-fold probabilities and current labels (class indices) of a classifier."""
    frame = held_out(project, version)
    frame = frame[frame["given"].isin(version.classes)]
    index = {c: i for i, c in enumerate(version.classes)}
    return (frame[version.classes].to_numpy(np.float64),
            frame["given"].map(index).to_numpy(int))


def calibrate(project: Project | str, version: ModelVersion | str | None = None) -> Calibration:
    """Fit temperature scaling on the version's out-of-fold predictions and store it:
    ``mv.predict`` and ``wb.export`` return calibrated probabilities from then on."""
    project, version = as_version(project, version)
    if version.task != "classification":
        raise ProjectError(f"calibrate applies to classifiers; {version.name!r} is a "
                           f"{version.task} version (its operating point uses the box scores "
                           "as they are)")
    probs, labels = _labelled_oof(project, version)
    if len(labels) < 2:
        raise ProjectError(f"model version {version.name!r} has {len(labels)} labelled "
                           "held-out predictions; calibration needs out-of-fold predictions "
                           "(wb.train(p, folds=5))")
    temperature = fit_temperature(probs, labels)
    after = apply_temperature(probs, temperature)
    calibration = Calibration(
        version=version.name, temperature=round(temperature, 5),
        ece_before=expected_calibration_error(probs, labels),
        ece_after=expected_calibration_error(after, labels),
        log_loss_before=log_loss(probs, labels), log_loss_after=log_loss(after, labels),
        n=len(labels), reliability_before=reliability_table(probs, labels),
        reliability_after=reliability_table(after, labels))
    _write_json(version.folder / CALIBRATION_FILE, calibration.to_json())
    version.forget_network()
    return calibration


# -- the operating point ------------------------------------------------------------------------
@dataclass
class OperatingPoint:
    """Where a version's line rejects: ``P(not normal) >= threshold`` (a detector: its best
    box's confidence), chosen by the cost of each mistake.

    Attributes
    ----------
    threshold : float
    table : pd.DataFrame
        Over thresholds: ``escapes``, ``false_rejects`` and ``cost`` per 10,000 parts, each
        with a bootstrap 95 % interval (``_low``, ``_high``), and ``cost_smoothed``: the
        cost with every score spread by a kernel, whose least is ``best_threshold`` (on a
        few dozen images, the least *counted* cost sits right under the lowest defect seen
        and lets the next lower one escape).
    expected : dict
        The same at the chosen threshold, plus the escape and false-reject *rates*.
    """

    project: str
    version: str
    task: str
    normal: str | None
    costs: Costs
    defect_rate: float
    defect_rate_from: str
    threshold: float
    best_threshold: float
    table: pd.DataFrame = field(repr=False)
    expected: dict[str, float]
    n_normal: int
    n_defect: int
    temperature: float = 1.0
    chosen_by: str | None = None
    #: An anomaly version's own threshold t: its anomaly score s is put on 0-1 as
    #: s / (s + t), 0.5 at t (None for the other tasks).
    score_scale: float | None = None

    @property
    def score(self) -> str:
        return {"classification": "p_not_normal", "anomaly": "anomaly_score_share"}.get(
            self.task, "max_box_confidence")

    @property
    def score_words(self) -> str:
        """The score in words: ``P(not ok)``, "the best box's confidence", or an anomaly
        score's share ``s / (s + t)``."""
        if self.task == "anomaly":
            return f"s/(s+{self.score_scale:.3g}) of the anomaly score s"
        return f"P(not {self.normal})" if self.task == "classification" \
            else "the best box's confidence"

    @property
    def anomaly_score_threshold(self) -> float | None:
        """An anomaly version's chosen threshold as an anomaly score (None otherwise)."""
        if self.task != "anomaly" or self.score_scale is None:
            return None
        return float("inf") if self.threshold >= 1 else \
            self.score_scale * self.threshold / (1 - self.threshold)

    def to_json(self) -> dict[str, Any]:
        """What ``version.json`` and ``deployment.json`` keep (the edge applies it)."""
        return {"normal": self.normal, "threshold": round(self.threshold, 6),
                "score": self.score, "costs": self.costs.to_json(),
                "defect_rate": self.defect_rate, "defect_rate_from": self.defect_rate_from,
                "best_threshold": round(self.best_threshold, 6),
                "expected": {k: round(v, 4) for k, v in self.expected.items()},
                "n_normal": self.n_normal, "n_defect": self.n_defect,
                "temperature": self.temperature, "chosen_by": self.chosen_by,
                "chosen_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **({} if self.task != "anomaly" else {
                    "score_scale": self.score_scale,
                    "anomaly_score_threshold": self.anomaly_score_threshold})}

    def decide(self, predictions: pd.DataFrame) -> pd.DataFrame:
        """``predictions`` (from ``mv.predict``) with a ``decision`` column, accept or reject
        (a detector's frame: one row per image, its best box)."""
        frame = predictions.copy()
        if self.task == "classification":
            if self.normal not in frame.columns:
                raise ValueError(f"predictions have no {self.normal!r} probability column; "
                                 f"pass the frame mv.predict returns for {self.version}")
            score = 1.0 - frame[self.normal].to_numpy(np.float64)
        elif self.task == "anomaly":
            raw = frame["anomaly_score"].to_numpy(np.float64)
            score = raw / (raw + self.score_scale)
        else:
            key = "sample_id" if "sample_id" in frame.columns else "filepath"
            frame = (frame.sort_values("confidence", ascending=False)
                     .drop_duplicates(key).sort_index())
            score = frame["confidence"].fillna(0).to_numpy(np.float64)
        frame["decision"] = np.where(score >= self.threshold, "reject", "accept")
        return frame

    def plot(self) -> go.Figure:
        """Expected cost per 10,000 parts over the threshold, its 95 % band, the escapes and
        false rejects, and the chosen point."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        t = self.table
        figure = make_subplots(specs=[[{"secondary_y": True}]])
        figure.add_trace(go.Scatter(x=t["threshold"], y=t["cost_high"], mode="lines",
                                    line={"width": 0}, showlegend=False, hoverinfo="skip"))
        figure.add_trace(go.Scatter(x=t["threshold"], y=t["cost_low"], mode="lines",
                                    line={"width": 0}, fill="tonexty",
                                    fillcolor="rgba(31,119,180,0.15)", name="cost, 95 %"))
        figure.add_trace(go.Scatter(x=t["threshold"], y=t["cost"], mode="lines",
                                    name="expected cost", line={"color": "#1f77b4", "width": 3}))
        figure.add_trace(go.Scatter(x=t["threshold"], y=t["cost_smoothed"], mode="lines",
                                    name="smoothed cost (chooses the point)",
                                    line={"color": "#1f77b4", "width": 1.5, "dash": "dot"}))
        for column, colour, label in (("escapes", "#d62728", "escapes"),
                                      ("false_rejects", "#ff7f0e", "false rejects")):
            figure.add_trace(go.Scatter(x=t["threshold"], y=t[column], mode="lines", name=label,
                                        line={"color": colour, "dash": "dash"}),
                             secondary_y=True)
        e = self.expected
        figure.add_trace(go.Scatter(
            x=[self.threshold], y=[e["cost"]], mode="markers", name="chosen point",
            marker={"size": 14, "color": "#2ca02c", "symbol": "diamond"},
            hovertemplate=(f"threshold {self.threshold:.3f}<br>cost {e['cost']:.0f}<br>"
                           f"escapes {e['escapes']:.1f}<br>false rejects "
                           f"{e['false_rejects']:.0f}<extra></extra>")))
        figure.update_layout(
            title=(f"{self.version}: reject when {self.score_words} ≥ {self.threshold:.3f} — "
                   f"{e['escapes']:.0f} escapes, {e['false_rejects']:.0f} false rejects per "
                   f"{PER:,} parts"), height=440, legend={"orientation": "h", "y": -0.2})
        figure.update_xaxes(title_text=f"threshold on {self.score_words}", range=[0, 1])
        figure.update_yaxes(title_text=f"cost per {PER:,} parts", secondary_y=False)
        figure.update_yaxes(title_text=f"mistakes per {PER:,} parts", secondary_y=True)
        return figure

    def summary(self) -> str:
        """One line for a person: the threshold and what it costs."""
        e = self.expected
        return (f"reject when {self.score_words} ≥ {self.threshold:.3f}: {e['escapes']:.0f} "
                f"[{e['escapes_low']:.0f}–{e['escapes_high']:.0f}] escapes and "
                f"{e['false_rejects']:.0f} [{e['false_rejects_low']:.0f}–"
                f"{e['false_rejects_high']:.0f}] false rejects per {PER:,} parts, cost "
                f"{e['cost']:.0f} [{e['cost_low']:.0f}–{e['cost_high']:.0f}]"
                + ("" if self.anomaly_score_threshold is None else
                   f" (anomaly score ≥ {self.anomaly_score_threshold:.4g})"))


def _scores(project: Project, version: ModelVersion, normal: str | None
            ) -> tuple[np.ndarray, np.ndarray, float, str | None, list[str]]:
    """Defect score and current class of every labelled held-out image; the temperature;
    the normal class; the defect classes."""
    if version.task == "classification":
        if normal not in version.classes:
            raise ProjectError(f"normal={normal!r} is not a class of {version.name!r} "
                               f"(classes: {', '.join(version.classes)}); name the good one")
        try:
            frame = held_out(project, version)
        except ProjectError as error:
            raise ProjectError(f"{error} The operating point is chosen from out-of-fold "
                               "predictions only.") from None
        frame = frame[frame["given"].isin(version.classes)]
        temperature = version.temperature
        probs = apply_temperature(frame[version.classes].to_numpy(np.float64), temperature)
        scores = 1.0 - probs[:, version.classes.index(normal)]
        defects = [c for c in version.classes if c != normal]
        return scores, frame["given"].to_numpy(str), temperature, normal, defects
    if version.task == "anomaly":
        return _anomaly_scores(project, version)
    snapshot = version.snapshot()
    held = snapshot[snapshot["fold"] >= 0]["sample_id"].tolist()
    if not held:
        raise ProjectError(f"model version {version.name!r} has no held-out images; the "
                           "operating point is chosen from out-of-fold predictions only: "
                           "train with folds >= 2")
    labels = current_labels(project, held)
    held = [sid for sid in held if labels.get(sid) is not None]
    best = version.oof_predictions().groupby("sample_id")["confidence"].max()
    scores = np.array([float(best.get(sid, 0.0)) for sid in held])
    given = np.array(["defect" if labels[sid] else "no defect" for sid in held])
    return scores, given, 1.0, "no defect", ["defect"]


def _anomaly_scores(project: Project, version: ModelVersion
                    ) -> tuple[np.ndarray, np.ndarray, float, str, list[str]]:
    """An anomaly version's held-out scores (normals out-of-fold, defects never trained on)
    on 0-1 as ``s / (s + t)``, with the images' current classes."""
    normal = version.config["normal"]
    scale = float(version.metrics["threshold"])
    frame = version.oof_predictions()[["sample_id", "anomaly_score"]]
    labels = current_labels(project, frame["sample_id"].tolist())
    frame = frame[[labels.get(s) is not None for s in frame["sample_id"]]]
    given = np.array([labels[s] for s in frame["sample_id"]], dtype=str)
    raw = frame["anomaly_score"].to_numpy(np.float64)
    defects = sorted(set(given) - {normal}) or ["anomaly"]
    return raw / (raw + scale), given, 1.0, normal, defects


def operating_point(project: Project | str, version: ModelVersion | str | None = None, *,
                    costs: Mapping[str, Any], normal: str | None = "ok",
                    defect_rate: float | None = None, threshold: float | None = None,
                    annotator: str | None = None, write: bool = True, n_boot: int = 1000,
                    seed: int = 0) -> OperatingPoint:
    """Choose where to reject by the cost of each mistake, from out-of-fold predictions.

    Parameters
    ----------
    costs : dict
        ``{"escape": 50, "false_reject": 1}``; ``escape`` may be per defect class
        (``{"pit_mark": 100, "scratch": 20}``). Positive numbers, in any one unit.
    normal : str
        The good class (a classifier's); detection versions treat images without boxes
        as normal.
    defect_rate : float, optional
        The line's share of defective parts, in (0, 1), when it differs from the labels'.
    threshold : float, optional
        Apply this threshold instead of the least-cost one (a person moving the point).
    annotator : str, optional
        Who chose; with ``write`` the point is stored with the version (the next
        ``wb.promote`` takes it to the line) and appended to its history.

    Raises
    ------
    NotEnoughEvidenceError
        Fewer than 8 normal or 8 defective labelled held-out images (the counts and the
        images an interval of a stated width needs are in the message).
    """
    project, version = as_version(project, version)
    if defect_rate is not None and not (isinstance(defect_rate, int | float)
                                        and 0 < float(defect_rate) < 1):
        raise ValueError(f"defect_rate must be the line's share of defective parts, strictly "
                         f"between 0 and 1 (e.g. 0.02), got {defect_rate!r}")
    if threshold is not None and not 0 <= float(threshold) <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if write and annotator is not None and (not isinstance(annotator, str)
                                           or not annotator.strip()):
        raise ValueError(f"annotator must be the name of the person choosing, got {annotator!r}")
    if version.task == "detection":
        normal = "no defect"
        if isinstance(costs, Mapping) and isinstance(costs.get("escape"), Mapping):
            raise ValueError('costs["escape"] per class applies to classifiers; give a '
                             "detection version one escape cost (its score is the image's "
                             "best box)")
    scores, given, temperature, normal, defects = _scores(project, version, normal)
    parsed = Costs.parse(costs, defects)
    n_normal = int((given == normal).sum())
    if n_normal == len(given) and len(given):
        raise NotEnoughEvidenceError(
            f"every one of the {len(given)} images {version.name!r} held out is labelled "
            f"{normal!r} now: with no defect there is no escape to count. Label defective "
            "parts (or start from good parts only with an anomaly model).")
    check_evidence(n_normal, len(given) - n_normal,
                   what=f"out-of-fold predictions of {version.name!r}")
    table = cost_table(scores, given, normal=normal, costs=parsed, defect_rate=defect_rate,
                       n_boot=n_boot, seed=seed)
    best = best_threshold(table, "cost_smoothed")  # least cost with the scores spread
    chosen = best if threshold is None else float(threshold)
    if threshold is not None:
        extra = cost_table(scores, given, normal=normal, costs=parsed, defect_rate=defect_rate,
                           thresholds=[chosen], n_boot=n_boot, seed=seed)
        table = (pd.concat([table, extra]).drop_duplicates("threshold")
                 .sort_values("threshold").reset_index(drop=True))
    row = table[np.isclose(table["threshold"], chosen)].iloc[0]
    rate = float(defect_rate) if defect_rate is not None else (len(given) - n_normal) / len(given)
    expected = {k: float(row[k]) for k in table.columns if k != "threshold"}
    expected["escape_rate"] = expected["escapes"] / PER
    expected["false_reject_rate"] = expected["false_rejects"] / PER
    point = OperatingPoint(
        project=project.name, version=version.name, task=version.task, normal=normal,
        costs=parsed, defect_rate=round(rate, 6),
        defect_rate_from="given" if defect_rate is not None else "labels",
        threshold=chosen, best_threshold=best, table=table, expected=expected,
        n_normal=n_normal, n_defect=len(given) - n_normal, temperature=temperature,
        chosen_by=annotator,
        score_scale=float(version.metrics["threshold"]) if version.task == "anomaly" else None)
    if write:
        record_point(version, point)
    return point


def record_point(version: ModelVersion, point: OperatingPoint) -> None:
    """Store ``point`` in ``version.json`` and append it to the version's history."""
    entry = point.to_json()
    path = version.folder / "version.json"
    record = json.loads(path.read_text())
    record["operating_point"] = entry
    _write_json(path, record)
    version.record["operating_point"] = entry
    with (version.folder / HISTORY_FILE).open("a") as log:
        log.write(json.dumps(entry) + "\n")


def operating_point_history(project: Project | str,
                            version: ModelVersion | str | None = None) -> pd.DataFrame:
    """Every operating point chosen for the version: who, when, threshold, costs."""
    _, version = as_version(project, version)
    path = version.folder / HISTORY_FILE
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []
    return pd.DataFrame(rows, columns=["chosen_at", "chosen_by", "threshold", "normal",
                                       "costs", "defect_rate", "expected"]
                        if not rows else None)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, default=str))
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    partial.replace(path)


__all__ = ["Calibration", "NotEnoughEvidenceError", "OperatingPoint", "calibrate",
           "operating_point", "operating_point_history"]
