"""``IssueQueue``: the labels a model version finds most likely wrong, one at a time.

Cards come from :func:`workbench.label_issues` (worst first). Per card: the given label
(the current consensus), the suggested one with its probability, the label quality and
the reason, and each annotator's latest vote. Accept stores the suggestion, keep stores
the given label, a class key stores that class, each as a review decision; a decided
sample leaves the queue on the next :meth:`~widgets._base.review_queue.ReviewQueue.refresh`.

A detection project has its own queue,
:class:`~widgets.label.box_issue_queue.BoxIssueQueue` (one card per suspected box error,
with the boxes drawn); the :class:`~widgets.app.Workbench` picks by the project's task.
``IssueQueue(detection_project, ...)`` still opens one, with a ``FutureWarning``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import workbench as wb
from widgets._base.review_queue import ReviewQueue
from widgets._base.source import is_detection_source
from widgets.label.box_issue_queue import BoxIssueQueue
from workbench.keywords import renamed

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


class IssueQueue(ReviewQueue):
    """Review the label issues of a model version with the keyboard.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of it (only its samples are queued).
    version : ModelVersion or str, optional
        The version whose out-of-fold predictions judge the labels (default: the newest).
    annotator : str, optional
        The name every decision is stored under. Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    only_issues : bool, default True
        Queue only the samples flagged ``is_issue``; False queues every held-out labelled
        sample, worst first.
    image_size, thumb_size, strip_size : int
        See :class:`~widgets._base.review_queue.ReviewQueue`.

    Notes
    -----
    Samples that already have a review decision in force are not queued: a person has
    decided them. Computing the issues embeds the images once per backbone (cached).
    """

    def __new__(cls, source: Any = None, *args: Any, **kwargs: Any) -> Any:
        """A :class:`BoxIssueQueue` for a detection project (deprecated shortcut)."""
        if cls is IssueQueue and is_detection_source(source):
            warnings.warn("IssueQueue on a detection project: use BoxIssueQueue(p, version, "
                          "annotator=...) (this shortcut goes in a later release)",
                          FutureWarning, stacklevel=2)
            kwargs.pop("only_issues", None)
            return BoxIssueQueue(source, *args, **kwargs)  # not an IssueQueue: no 2nd init
        return super().__new__(cls)

    @renamed(mv="version")
    def __init__(self, source: Any, version: ModelVersion | str | None = None, *,
                 annotator: str | None = None, only_issues: bool = True, image_size: int = 256,
                 thumb_size: int = 64, strip_size: int = 8) -> None:
        self.only_issues = bool(only_issues)
        self._version_arg = version
        super().__init__(source, annotator=annotator, image_size=image_size,
                         thumb_size=thumb_size, strip_size=strip_size)
        self.add_class("loupe-issue-queue")

    def _load_cards(self) -> list[dict]:
        version = self._version_arg
        if version is None or isinstance(version, str):
            version = self.project.model(version)
        self.version = version
        self.heatmaps = version if version.task == "anomaly" else None  # key h: where
        frame = (wb.open_label_issues(self.project, version) if self.only_issues
                 else wb.label_issues(self.project, version).sort_values("rank", kind="stable"))
        self.found = frame  # the open issues, as wb.review_counts counts them
        noun = "label issues" if self.only_issues else "labels, worst first"
        self.title = f"{noun.capitalize()} of {version.name} — {self.project.name}"
        return [{"sample_id": row.sample_id, "filepath": row.filepath, "given": row.given,
                 "suggested": row.suggested, "probability": row.suggested_probability,
                 "probability_name": "model probability", "score": row.label_quality,
                 "score_name": "label quality", "reason": row.reason}
                for row in frame.itertuples(index=False)]

