"""IssueQueue and AgreementReview: what the store holds after the front-end's messages.

The messages are sent the way ``review.js`` sends them (``model.send``), through
ipywidgets' ``Widget._handle_custom_msg``. Each test decides under its own annotator name
and asserts only on the samples it decided (the ``widget_demo`` project is shared).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

import workbench as wb
from widgets._base import STATIC
from workbench import ProjectError
from workbench.store import _db as store
from workbench.store.labels import latest_per_annotator, latest_review

REVIEW_JS = STATIC / "review.js"


def _send(widget, **content) -> None:
    """Deliver a custom message as the front-end's ``model.send(content)`` does."""
    widget._handle_custom_msg(content, [])


def _label(project, sample_id: str) -> str | None:
    frame = project.to_pandas().set_index("sample_id")
    return frame.at[sample_id, "label"]


def _unreviewed(project, sample_ids) -> list[str]:
    histories = store.histories(project.dataset, list(sample_ids))
    return [sid for sid in sample_ids if latest_review(histories[sid]) is None]


def _assert_appended(before: pd.DataFrame, after: pd.DataFrame, n: int) -> pd.DataFrame:
    """``after`` is ``before`` plus ``n`` new rows (nothing rewritten); returns the new rows."""
    assert len(after) == len(before) + n
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)
    return after.iloc[len(before):].reset_index(drop=True)


# -- IssueQueue ------------------------------------------------------------------------
def test_issue_queue_shows_flagged_labels_worst_first(widget_demo):
    from widgets._base.palette import label_colors
    from widgets.label.issue_queue import IssueQueue

    p, v1, _ = widget_demo
    queue = IssueQueue(p, v1, annotator="rq-look")

    issues = wb.label_issues(p, v1, write=False)
    flagged = issues[issues["is_issue"]].sort_values("rank")
    expected = _unreviewed(p, list(flagged["sample_id"]))
    assert expected, "the demo's misfiled copies should be flagged"
    assert queue.sample_ids == expected
    assert queue.classes == p.classes and queue.colors == label_colors(p.classes)

    card, row = queue.current, flagged.set_index("sample_id").loc[expected[0]]
    assert (card["given"], card["suggested"]) == (row["given"], row["suggested"])
    assert card["probability"] == pytest.approx(row["suggested_probability"])
    assert card["score"] == pytest.approx(row["label_quality"])
    assert card["reason"] == row["reason"]
    votes = latest_per_annotator(store.histories(p.dataset, [card["sample_id"]])
                                 [card["sample_id"]])
    assert {a["annotator"]: a["label"] for a in card["annotators"]} == votes
    assert queue.selected == [expected[0]]
    assert queue.image.startswith("data:image/jpeg;base64,")
    assert [item["index"] for item in queue.strip] == list(range(1, min(len(expected), 9)))
    assert all(item["thumb"].startswith("data:image/jpeg;base64,") for item in queue.strip)
    assert (queue.decided, queue.error) == (0, "")
    synced = ("cards", "strip", "decisions", "classes", "colors", "selected", "index", "image")
    json.dumps({name: getattr(queue, name) for name in synced}, allow_nan=False)


def test_accept_stores_the_suggestion_as_a_review(widget_demo):
    from widgets.label.issue_queue import IssueQueue

    p, v1, _ = widget_demo
    queue = IssueQueue(p, v1, annotator="rq-accept", only_issues=False)
    edits = []
    queue.on_edit(lambda ids, label: edits.append((ids, label)))
    first, second = queue.cards[0], queue.cards[1]
    sid, suggested = first["sample_id"], first["suggested"]
    before = p.history(sid)

    _send(queue, type="decide", sample_id=sid, action="accept")

    new = _assert_appended(before, p.history(sid), 1)
    assert new.loc[0, ["annotator", "label", "review"]].tolist() == ["rq-accept", suggested,
                                                                     True]
    assert _label(p, sid) == suggested
    assert queue.error == ""
    assert queue.decisions == {sid: {"action": "accept", "label": suggested}}
    assert queue.decided == 1
    assert queue.index == 1 and queue.selected == [second["sample_id"]]
    assert edits == [([sid], suggested)]


def test_keep_stores_the_given_label_and_the_sample_leaves_the_queue(widget_demo):
    from widgets.label.issue_queue import IssueQueue

    p, v1, _ = widget_demo
    queue = IssueQueue(p, v1, annotator="rq-keep", only_issues=False)
    card = queue.cards[2]
    sid, given = card["sample_id"], card["given"]
    before = p.history(sid)

    _send(queue, type="decide", sample_id=sid, action="keep")

    new = _assert_appended(before, p.history(sid), 1)
    assert new.loc[0, ["annotator", "label", "review"]].tolist() == ["rq-keep", given, True]
    assert _label(p, sid) == given
    assert queue.decisions[sid] == {"action": "keep", "label": given}
    fresh = IssueQueue(p, v1, annotator="rq-keep", only_issues=False)
    assert sid not in fresh.sample_ids
    assert fresh.sample_ids == _unreviewed(p, queue.sample_ids)


def test_undo_restores_the_earlier_review_then_withdraws(widget_demo):
    from widgets.label.issue_queue import IssueQueue

    p, v1, _ = widget_demo
    queue = IssueQueue(p, v1, annotator="rq-twice", only_issues=False)
    card = queue.cards[0]
    sid, given = card["sample_id"], card["given"]
    other = next(c for c in p.classes if c not in (given, card["suggested"]))
    before = p.history(sid)

    _send(queue, type="decide", sample_id=sid, action="keep")
    _send(queue, type="move", index=0)
    _send(queue, type="decide", sample_id=sid, action="label", label=other)
    assert _label(p, sid) == other
    assert queue.decided == 1 and queue.decisions[sid]["label"] == other

    _send(queue, type="undo")  # back to the earlier review: given, re-appended
    assert _label(p, sid) == given
    assert queue.decisions == {sid: {"action": "keep", "label": given}}
    assert queue.index == 0 and queue.can_undo

    _send(queue, type="undo")  # back to no review: a withdrawal is appended
    assert _label(p, sid) == given
    assert queue.decisions == {} and queue.decided == 0 and not queue.can_undo

    new = _assert_appended(before, p.history(sid), 4)
    assert new[["annotator", "label", "review"]].values.tolist() == [
        ["rq-twice", given, True], ["rq-twice", other, True],
        ["rq-twice", given, True], ["rq-twice", None, True]]
    assert latest_review(store.histories(p.dataset, [sid])[sid]) is None
    assert sid in IssueQueue(p, v1, annotator="rq-twice", only_issues=False).sample_ids


def test_move_and_bad_messages_show_an_error_and_write_nothing(widget_demo):
    from widgets.label.issue_queue import IssueQueue

    p, v1, _ = widget_demo
    queue = IssueQueue(p, v1, annotator="rq-bad", only_issues=False)
    cards = queue.cards

    _send(queue, type="move", index=2)
    assert queue.index == 2 and queue.selected == [cards[2]["sample_id"]]
    assert queue.strip[0]["index"] == 3

    sid = cards[2]["sample_id"]
    before = p.history(sid)
    _send(queue, type="decide", sample_id=sid, action="label", label="nonsense")
    assert "nonsense" in queue.error and "classes" in queue.error
    _send(queue, type="decide", sample_id=sid, action="explode")
    assert "explode" in queue.error
    _send(queue, type="decide", sample_id="not-a-sample", action="keep")
    assert "not-a-sample" in queue.error
    _send(queue, type="move", index=len(cards))
    assert "index" in queue.error and queue.index == 2
    _send(queue, type="shout")
    assert "shout" in queue.error
    _send(queue, type="undo")
    assert queue.message == "nothing to undo"
    pd.testing.assert_frame_equal(p.history(sid), before)
    assert queue.decided == 0 and queue.decisions == {}

    with pytest.raises(ProjectError, match="nonsense"):
        queue.choose("nonsense")
    _send(queue, type="move", index=1)
    assert queue.error == "" and queue.index == 1


# -- AgreementReview -------------------------------------------------------------------
def test_agreement_review_queues_disagreements_with_each_vote(widget_demo):
    from widgets.label.agreement_review import AgreementReview

    p, _, _ = widget_demo
    review = AgreementReview(p, annotator="rq-agree", threshold=0.8)

    report = wb.agreement(p, threshold=0.8, write=False).to_review()
    expected = _unreviewed(p, list(report["sample_id"]))
    assert expected, "the demo's annotators disagree on some images"
    assert review.sample_ids == expected
    labels = p.to_pandas().set_index("sample_id")["label"]
    for card in review.cards:
        row = report.set_index("sample_id").loc[card["sample_id"]]
        assert card["suggested"] == row["consensus"]
        assert card["given"] == labels[card["sample_id"]]
        assert card["score"] == pytest.approx(row["agreement"]) and card["score"] < 0.8
        assert [(a["annotator"], a["label"]) for a in card["annotators"]] == list(
            zip(row["annotators"], row["labels"], strict=True))

    sid = review.cards[0]["sample_id"]
    _send(review, type="decide", sample_id=sid, action="accept")
    assert _label(p, sid) == review.cards[0]["suggested"]
    assert sid not in AgreementReview(p, annotator="rq-agree").sample_ids


def test_resolving_then_undo_restores_the_majority_label(widget_demo):
    from widgets.label.agreement_review import AgreementReview

    p, _, _ = widget_demo
    review = AgreementReview(p, annotator="rq-resolve")
    card = next(c for c in review.cards  # a clear majority, so the vote decides after undo
                if max(pd.Series([a["label"] for a in c["annotators"]]).value_counts()) * 2
                > len(c["annotators"]))
    sid = card["sample_id"]
    review.move(review.sample_ids.index(sid))
    majority = _label(p, sid)
    other = next(c for c in p.classes
                 if c not in {a["label"] for a in card["annotators"]} | {card["given"]})
    before = p.history(sid)

    _send(review, type="decide", sample_id=sid, action="label", label=other)
    assert _label(p, sid) == other
    assert review.decided == 1

    _send(review, type="undo")
    new = _assert_appended(before, p.history(sid), 2)
    assert new[["annotator", "label", "review"]].values.tolist() == [
        ["rq-resolve", other, True], ["rq-resolve", None, True]]
    assert _label(p, sid) == majority
    assert review.decided == 0 and review.selected == [sid]


def test_a_view_or_a_name_restricts_or_opens_the_queue(widget_demo):
    from widgets.label.agreement_review import AgreementReview

    p, _, _ = widget_demo
    everything = AgreementReview(p.name, annotator="rq-view")
    assert everything.project.name == p.name
    chosen = everything.sample_ids[:2]
    restricted = AgreementReview(p.dataset.select(chosen), annotator="rq-view")
    assert restricted.sample_ids == chosen


def test_bad_arguments_raise_naming_the_argument(widget_demo):
    from widgets.label.agreement_review import AgreementReview
    from widgets.label.issue_queue import IssueQueue

    p, v1, _ = widget_demo
    with pytest.raises(ProjectError, match="annotator"):
        AgreementReview(p, annotator=" ")
    with pytest.raises(ValueError, match="threshold"):
        AgreementReview(p, threshold=0)
    with pytest.raises(ValueError, match="image_size"):
        IssueQueue(p, v1, image_size=0)
    with pytest.raises(ProjectError, match="no model version"):
        IssueQueue(p, "v99")


# -- front-end module ------------------------------------------------------------------
def test_review_js_is_an_es_module_exporting_render():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; cannot check that review.js parses as an ES module")
    script = (f"const m = await import({REVIEW_JS.as_uri()!r});"
              "if (typeof m.default.render !== 'function') process.exit(3);")
    result = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_an_open_queue_marks_what_someone_else_decided_meanwhile(widget_demo):
    """Two inspectors on one queue: the page left open learns (on its next poll) that the
    other decided a card, and shows it on that card; its own decisions are never marked."""
    from widgets.label.issue_queue import IssueQueue

    p, v1, _ = widget_demo
    mine = IssueQueue(p, v1, annotator="rq-open-a", only_issues=False)
    theirs = IssueQueue(p, v1, annotator="rq-open-b", only_issues=False)
    first, second = mine.cards[0]["sample_id"], mine.cards[1]["sample_id"]
    assert mine.check_others() == {}
    mine.keep(sample_id=first)
    label = theirs.cards[[c["sample_id"] for c in theirs.cards].index(second)]["given"]
    theirs.keep(sample_id=second)
    _send(mine, type="poll")  # what review.js sends every few seconds
    assert mine.taken == {second: f"rq-open-b decided {label}"}
    assert "rq-open-b decided 1 card of this queue meanwhile" in mine.message
    mine.refresh()  # the decided cards leave the queue; nothing is marked any more
    assert second not in mine.sample_ids and mine.taken == {}
