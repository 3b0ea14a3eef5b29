"""``AgreementReview``: resolve the images the annotators disagree on, one at a time.

Cards come from :func:`workbench.agreement`: the images whose agreement (share of
annotators giving the majority label) is below ``threshold``, least agreement first, each
annotator's latest label side by side. The suggestion is the agreement consensus; the
given label is the project's current consensus. Any decision is stored as a review, which
sets the label; a resolved image leaves the queue on the next
:meth:`~widgets._base.review_queue.ReviewQueue.refresh`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import workbench as wb
from widgets._base.review_queue import ReviewQueue
from workbench.keywords import renamed

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


class AgreementReview(ReviewQueue):
    """Resolve annotator disagreements with the keyboard.

    Parameters
    ----------
    source : Project, str or FiftyOne view
        The project, its name, or a view of it (only its samples are queued).
    annotator : str, optional
        The name every decision is stored under. Without it the
        widget shows everything and refuses to write (no decision under a made-up name).
    threshold : float, default 0.8
        Images whose agreement is below it are queued.
    version : ModelVersion or str, optional
        With a version, its out-of-fold probabilities join the vote (CROWDLAB decides the
        consensus); without one the majority does.
    image_size, thumb_size, strip_size : int
        See :class:`~widgets._base.review_queue.ReviewQueue`.

    Attributes
    ----------
    report : workbench.metrics.agreement.AgreementReport
        The agreement report the queue was built from (per annotator, per class, alpha).
    """

    @renamed(mv="version")
    def __init__(self, source: Any, *, annotator: str | None = None, threshold: float = 0.8,
                 version: ModelVersion | str | None = None, image_size: int = 256,
                 thumb_size: int = 64, strip_size: int = 8) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
                or not 0 < threshold <= 1:
            raise ValueError(f"AgreementReview: threshold must be a number in (0, 1], got "
                             f"{threshold!r}")
        self.threshold = float(threshold)
        self._version_arg = version
        super().__init__(source, annotator=annotator, image_size=image_size,
                         thumb_size=thumb_size, strip_size=strip_size)
        self.add_class("loupe-agreement-review")

    def _load_cards(self) -> list[dict]:
        rows = wb.open_disagreements(self.project, self._version_arg, threshold=self.threshold)
        self.found = rows  # as wb.review_counts counts them
        frame = self.project.to_pandas().set_index("sample_id")
        self.title = (f"Annotator disagreements (agreement < {self.threshold:g}) — "
                      f"{self.project.name}")
        cards = []
        for row in rows.itertuples(index=False):
            agree = sum(label == row.consensus for label in row.labels)
            cards.append({
                "sample_id": row.sample_id, "filepath": frame.at[row.sample_id, "filepath"],
                "given": frame.at[row.sample_id, "label"], "suggested": row.consensus,
                "probability": row.consensus_quality, "probability_name": "consensus quality",
                "score": row.agreement, "score_name": "agreement",
                "reason": f"{agree} of {row.n_annotators} annotators gave {row.consensus}",
                "annotators": [{"annotator": who, "label": label}
                               for who, label in zip(row.annotators, row.labels, strict=True)],
            })
        return cards
