"""What is left to review, counted one way for every page: open label issues, open
annotator disagreements and disputed images.

The review page's queues, the Workbench overview and the report's dataset card all show
these figures; they come from here, so the same fact has the same number everywhere, and
:meth:`ReviewCounts.describe` says what each number is computed on.

- **open label issues**: images :func:`~workbench.analyse.classification.label_issues`
  flags for a version, scored against the labels as they are now, with no review decision
  in force;
- **open disagreements**: images whose annotators agree less than the threshold (majority
  vote, :func:`~workbench.analyse.data.agreement`), with no review decision in force;
- **disputed**: images whose latest votes tie and that nobody has reviewed (the store's
  ``disputed`` tag).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from workbench.analyse.classification import label_issues
from workbench.analyse.data import agreement
from workbench.store.coerce import as_project
from workbench.store.labels import DISPUTED_TAG, latest_review

if TYPE_CHECKING:
    from workbench.store.project import Project
    from workbench.train.versions import ModelVersion

#: Agreement below which an image needs a review (as :func:`workbench.agreement`).
DEFAULT_THRESHOLD = 0.8


def _unreviewed(project: Project, frame: pd.DataFrame) -> pd.DataFrame:
    histories = project.histories(list(frame["sample_id"]))
    keep = [latest_review(histories.get(sid, [])) is None for sid in frame["sample_id"]]
    return frame[keep].reset_index(drop=True)


def open_label_issues(project: Project | str, version: ModelVersion | str | None = None
                      ) -> pd.DataFrame:
    """The label issues of ``version`` (newest when None) nobody has reviewed yet.

    Rows of :func:`workbench.label_issues` with ``is_issue``, worst first, without the
    samples that have a review decision in force; ``attrs["n_flagged"]`` counts every
    flagged sample, reviewed or not, and ``attrs["version"]`` names the version.
    """
    project = as_project(project)
    frame = label_issues(project, version, write=False)
    flagged = frame[frame["is_issue"]].sort_values("rank", kind="stable")
    result = _unreviewed(project, flagged)
    result.attrs.update(version=frame.attrs.get("version"), n_flagged=len(flagged))
    return result


def open_disagreements(project: Project | str, version: ModelVersion | str | None = None, *,
                       threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """Images whose annotators agree less than ``threshold`` and nobody has reviewed yet.

    Rows of ``workbench.agreement(project, version, threshold=...).to_review()`` (least
    agreement first) without the reviewed samples; ``attrs["n_flagged"]`` counts all
    below the threshold. Empty when the project has no labels yet.
    """
    project = as_project(project)
    labels = project.dataset.values("annotations.label")
    if not any(label is not None for votes in labels for label in votes or []):
        empty = pd.DataFrame(columns=["sample_id"])
        empty.attrs.update(n_flagged=0, threshold=threshold)
        return empty
    flagged = agreement(project, version, threshold=threshold, write=False).to_review()
    result = _unreviewed(project, flagged)
    result.attrs.update(n_flagged=len(flagged), threshold=threshold)
    return result


@dataclass(frozen=True)
class ReviewCounts:
    """The open review work of a project, and what each figure is computed on."""

    project: str
    #: Version whose label issues are counted (None: no version with out-of-fold scores).
    version: str | None
    label_issues: int | None
    label_issues_flagged: int | None
    disagreements: int
    disagreements_flagged: int
    disputed: int
    threshold: float
    as_of: datetime

    @classmethod
    def from_frames(cls, project: Project, issues: pd.DataFrame | None,
                    disagreements: pd.DataFrame, *, threshold: float = DEFAULT_THRESHOLD
                    ) -> ReviewCounts:
        """The counts of frames :func:`open_label_issues` (None: no version) and
        :func:`open_disagreements` returned, as a page that already holds them shows them."""
        return cls(project=project.name,
                   version=None if issues is None else issues.attrs.get("version"),
                   label_issues=None if issues is None else len(issues),
                   label_issues_flagged=None if issues is None else issues.attrs["n_flagged"],
                   disagreements=len(disagreements),
                   disagreements_flagged=int(disagreements.attrs.get("n_flagged") or 0),
                   disputed=int(project.dataset.match_tags(DISPUTED_TAG).count()),
                   threshold=threshold, as_of=datetime.now(UTC))

    def describe(self) -> dict[str, str]:
        """Fact name → the words that say what its number counts."""
        issues = ("no version with out-of-fold predictions yet" if self.version is None else
                  f"flagged by {self.version} on the current labels, not reviewed yet "
                  f"({self.label_issues_flagged} flagged in all)")
        return {
            "label-issues": f"open label issues: {issues}",
            "disagreements": (f"open disagreements: annotators agree below "
                              f"{self.threshold:.0%}, not reviewed yet "
                              f"({self.disagreements_flagged} below it in all)"),
            "disputed": "disputed: latest votes tie and nobody has reviewed the image",
        }

    def figures(self) -> dict[str, int | None]:
        """Fact name → its number (None when it cannot be computed yet)."""
        return {"label-issues": self.label_issues, "disagreements": self.disagreements,
                "disputed": self.disputed}


def review_counts(project: Project | str, version: ModelVersion | str | None = None, *,
                  threshold: float = DEFAULT_THRESHOLD) -> ReviewCounts:
    """Count the open review work of ``project`` now (see the module's definitions).

    ``version`` (newest when None) flags the label issues; disagreements are by majority
    vote, as the review page's queue shows them. Runs ``label_issues`` and ``agreement``
    (without storing them: counting never writes).
    """
    project = as_project(project)
    issues = None
    if not project.models().empty and project.task == "classification":
        chosen = project.model(version if isinstance(version, str) or version is None
                               else version.name)
        if chosen.metrics.get("evaluated_on") == "out-of-fold":
            issues = open_label_issues(project, chosen)
    return ReviewCounts.from_frames(project, issues,
                                    open_disagreements(project, threshold=threshold),
                                    threshold=threshold)


__all__ = ["ReviewCounts", "open_disagreements", "open_label_issues", "review_counts"]
