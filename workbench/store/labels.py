"""Label history and the consensus rule: pure functions on lists of annotations.

An entry is a *vote* (``review=False``: one annotator's label, counted in a majority vote)
or a *review* (``review=True``: a final decision, e.g. accepting a suggested label; the
latest review wins over the votes). An entry whose label is ``None`` *withdraws* that
annotator's vote (or, as a review, the review decision in force): undo is an append too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

#: Tag of a sample whose annotators are tied (its consensus is the earlier one, kept).
DISPUTED_TAG = "disputed"


@dataclass(frozen=True)
class Annotation:
    """One label given by one annotator at one time (an entry of the append-only history)."""

    annotator: str
    label: str | None
    time: datetime
    review: bool = False

    def to_dict(self) -> dict:
        """The form stored in a sample's ``annotations`` list."""
        entry = {"annotator": self.annotator, "label": self.label, "time": self.time}
        if self.review:
            entry["review"] = True
        return entry


def now() -> datetime:
    """Current time in UTC, to the millisecond (the precision MongoDB keeps)."""
    stamp = datetime.now(UTC)
    return stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)


def latest_per_annotator(history: Iterable[Mapping]) -> dict[str, str]:
    """Map each annotator to the vote they gave last (history in the order it was written).

    Reviews are not votes; an annotator whose latest vote is a withdrawal (label ``None``)
    has no vote.
    """
    latest: dict[str, str | None] = {}
    for entry in history:
        if not entry.get("review"):
            latest[entry["annotator"]] = entry["label"]
    return {who: label for who, label in latest.items() if label is not None}


def latest_review(history: Iterable[Mapping]) -> Mapping | None:
    """The review decision in force (the latest review entry), or None.

    A review entry with label ``None`` withdraws the reviews before it.
    """
    last = None
    for entry in history:
        if entry.get("review"):
            last = entry
    return last if last is not None and last["label"] is not None else None


def consensus(history: Iterable[Mapping], previous: str | None = None) -> tuple[str | None, bool]:
    """Consensus label of one sample and whether it is disputed.

    The rule: the latest review decides when there is one (never disputed). Otherwise a
    majority vote over the latest vote of each annotator; on a tie the earlier consensus
    ``previous`` is kept when it is among the tied labels (otherwise the tied label given
    first) and the sample is disputed.

    Parameters
    ----------
    history : iterable of mappings with ``annotator``, ``label`` and optionally ``review``
        Every annotation of the sample, oldest first.
    previous : str or None
        The consensus before the newest annotations.

    Returns
    -------
    (label, disputed) : tuple of (str or None, bool)
        ``(None, False)`` when nobody has labelled the sample.
    """
    history = list(history)
    decision = latest_review(history)
    if decision is not None:
        return decision["label"], False
    votes = Counter(latest_per_annotator(history).values())
    if not votes:
        return None, False
    top = max(votes.values())
    tied = [label for label, count in votes.items() if count == top]
    if len(tied) == 1:
        return tied[0], False
    if previous in tied:
        return previous, True
    first_given = next(entry["label"] for entry in history
                       if not entry.get("review") and entry["label"] in tied)
    return first_given, True
