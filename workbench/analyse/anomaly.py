"""Label issues of an anomaly version: "is this part really good?"

An anomaly version learns from the labelled good parts only, and scores each of them
out-of-fold (by the bank without its own patches). A good part that scores like a defect
is the first to look at again: a defect labelled ``ok`` by mistake, or a kind of normal the
bank has not seen often enough.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from workbench.analyse.classification import finish_issues
from workbench.store.project import Project, ProjectError


def anomaly_label_issues(project: Project, version: Any, *, write: bool = True
                         ) -> pd.DataFrame:
    """The labelled-normal images of ``version``'s project ranked by their out-of-fold
    anomaly score, highest first (the columns of ``wb.label_issues``; ``anomaly_score`` and
    ``threshold`` added). ``is_issue``: scored at or above the version's threshold."""
    normal = version.config["normal"]
    threshold = float(version.metrics["threshold"])
    scores = version.oof_predictions()
    scores = scores[scores["fold"] >= 0][["sample_id", "anomaly_score"]]
    current = project.to_pandas()[["sample_id", "filepath", "label"]]
    frame = scores.merge(current, on="sample_id", how="inner")
    frame = frame[frame["label"] == normal]
    if frame.empty:
        raise ProjectError(f"no image labelled {normal!r} now was scored out-of-fold by "
                           f"{version.name!r}; retrain on the current labels.")
    frame = frame.sort_values("anomaly_score", ascending=False, kind="stable")
    score = frame["anomaly_score"].to_numpy(dtype=float)
    ratio = score / max(threshold, 1e-12)
    flagged = score >= threshold
    result = pd.DataFrame({
        "sample_id": frame["sample_id"].to_numpy(), "filepath": frame["filepath"].to_numpy(),
        "given": normal, "suggested": np.where(flagged, "anomaly", normal),
        # 1 for the most ordinary part, 0 at twice the threshold and beyond
        "label_quality": np.clip(1 - ratio / 2, 0, 1), "is_issue": flagged,
        "rank": np.arange(1, len(frame) + 1),
        "suggested_probability": np.nan,
        "reason": [f"scores {r:.2f}x the threshold: unlike the other good parts; is it a "
                   "defect?" if f else f"scores {r:.2f}x the threshold"
                   for r, f in zip(ratio, flagged, strict=True)],
        "anomaly_score": score, "threshold": threshold})
    return finish_issues(project, version, result, write=write,
                         config={"version": version.name, "task": "anomaly"})


__all__ = ["anomaly_label_issues"]
