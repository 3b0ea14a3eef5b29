"""The consensus rule: majority of each annotator's latest label; ties keep the old one."""

from workbench.store.labels import consensus


def h(*pairs):
    return [{"annotator": a, "label": lab} for a, lab in pairs]


def test_no_history_means_no_label():
    assert consensus([]) == (None, False)


def test_majority_of_latest_label_per_annotator():
    history = h(("alice", "dent"), ("bob", "dent"), ("carol", "scratch"))
    assert consensus(history) == ("dent", False)


def test_only_the_latest_label_of_an_annotator_counts():
    history = h(("alice", "dent"), ("bob", "scratch"), ("alice", "scratch"))
    assert consensus(history, previous="dent") == ("scratch", False)


def test_tie_keeps_earlier_consensus_and_disputes():
    history = h(("alice", "dent"), ("bob", "scratch"))
    assert consensus(history, previous="scratch") == ("scratch", True)
    assert consensus(history, previous="dent") == ("dent", True)


def test_tie_without_earlier_consensus_takes_first_given():
    history = h(("bob", "scratch"), ("alice", "dent"))
    assert consensus(history) == ("scratch", True)


def test_latest_review_overrides_the_votes_and_is_never_disputed():
    history = h(("alice", "dent"), ("bob", "dent"))
    history.append({"annotator": "inspector", "label": "scratch", "review": True})
    assert consensus(history, previous="dent") == ("scratch", False)
    history += h(("carol", "dent"))  # later votes do not undo a review
    assert consensus(history, previous="scratch") == ("scratch", False)


def test_withdrawals_remove_a_vote_or_a_review():
    history = h(("alice", "dent"), ("bob", "scratch"), ("alice", "scratch"))
    history.append({"annotator": "alice", "label": None})  # alice's undo
    assert consensus(history, previous="scratch") == ("scratch", False)  # bob alone
    history.append({"annotator": "bob", "label": None})
    assert consensus(history) == (None, False)
    history += [{"annotator": "rev", "label": "ok", "review": True},
                {"annotator": "rev", "label": None, "review": True}]
    assert consensus(history) == (None, False)
