"""One figure per fact: the open review work is counted once (``wb.review_counts``) and the
review queues, the dataset card and the overview show that same number."""

from __future__ import annotations

import os

import pytest

import workbench as wb


@pytest.fixture(scope="module")
def counted():
    """A demo project of its own (its counts change in these tests) with a probe version."""
    from workbench.demo import create_demo_project

    p = create_demo_project(f"open-work-{os.getpid()}", n_per_class=8, seed=3,
                            overwrite=True)
    version = wb.train(p, mode="probe", folds=3, image_size=96, progress=False)
    yield p, version
    wb.delete_project(p.name)


def test_the_queues_hold_exactly_the_open_work_counted(counted):
    from widgets import AgreementReview, IssueQueue

    p, version = counted
    counts = wb.review_counts(p)
    issues, disagreements = IssueQueue(p, annotator="ow-a"), AgreementReview(p, annotator="ow-a")

    assert counts.version == version.name
    assert counts.label_issues == len(issues.cards) > 0
    assert counts.disagreements == len(disagreements.cards) > 0
    assert counts.label_issues_flagged >= counts.label_issues
    assert wb.ReviewCounts.from_frames(p, issues.found, disagreements.found).figures() == \
        counts.figures()
    words = counts.describe()
    assert f"flagged by {version.name} on the current labels" in words["label-issues"]
    assert "80%" in words["disagreements"]


def test_a_review_decision_lowers_the_open_count_everywhere(counted):
    from widgets import IssueQueue

    p, _ = counted
    before = wb.review_counts(p)
    queue = IssueQueue(p, annotator="ow-b")
    decided = queue.current["sample_id"]
    queue.accept()  # the first card, decided under ow-b
    after = wb.review_counts(p)

    # The decided card leaves; the issues are recomputed on the current labels, so a
    # decision can settle others too (the twin of an identical pair filed under two labels).
    assert after.label_issues <= before.label_issues - 1
    assert decided not in set(wb.open_label_issues(p)["sample_id"])
    assert after.label_issues_flagged <= before.label_issues_flagged + 1
    assert len(IssueQueue(p, annotator="ow-c").cards) == after.label_issues


def test_dataset_card_and_overview_show_the_counted_figures(counted):
    from widgets import ProjectOverview

    p, _ = counted
    counts = wb.review_counts(p)
    card = wb.datasheet(p, counts=counts)
    overview = ProjectOverview(p, counts=counts)

    words = counts.describe()
    assert f"| {words['label-issues']} | {counts.label_issues} |" in card
    assert f"| {words['disagreements']} | {counts.disagreements} |" in card
    assert "Label issues: not checked yet" not in card
    for fact, value in counts.figures().items():
        assert f'data-fact="{fact}" data-value="{value}"' in overview.header.value


def test_a_project_without_labels_or_versions_counts_zero_and_says_why(project):
    counts = wb.review_counts(project)
    assert (counts.label_issues, counts.disagreements, counts.disputed) == (None, 0, 0)
    assert "no version" in counts.describe()["label-issues"]
