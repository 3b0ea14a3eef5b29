"""Compare two model versions of a project, on the samples both held out or on more.

>>> frame = wb.compare(p, "v1", "v2")          # one row per sample, outcome better/worse/…
>>> wb.compare(p, "v1", "v2", on="either")      # every labelled sample either version saw
>>> wb.compare(p, "v1", "v2", on=night_ids)     # a chosen batch
>>> frame["outcome"].value_counts()
>>> wb.class_deltas(p, "v1", "v2")             # recall and F1 per class, and the change

The label each prediction is compared with is the project's *current* consensus, so a
relabel shows up in both versions without retraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from workbench.analyse.classification import held_out, resolve
from workbench.keywords import renamed
from workbench.metrics.compare import compare_predictions, per_class_deltas
from workbench.store.project import Project, ProjectError

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


def _versions(project: Project | str, a: ModelVersion | str,
              b: ModelVersion | str) -> tuple[Project, ModelVersion, ModelVersion]:
    for name, value in (("a", a), ("b", b)):
        if value is None:
            raise ProjectError(f"compare: {name} must name a model version (e.g. 'v1'), got "
                               "None; list them with p.models().")
    project, version_a = resolve(project, a)
    _, version_b = resolve(project, b)
    if version_a.name == version_b.name:
        raise ProjectError(f"compare: a and b are both {version_a.name!r}; pass two different "
                           f"versions of project {project.name!r} (e.g. a='v1', b='v2').")
    return project, version_a, version_b


#: What ``on=`` may name besides a list of sample ids.
ON = ("both", "either")


@renamed(a="baseline", b="version")
def compare(project: Project | str, baseline: ModelVersion | str,
            version: ModelVersion | str, *, on: str | Sequence[str] = "both") -> pd.DataFrame:
    """Per sample: the given label, both versions' predictions, the outcome.

    No prediction comes from a model that trained on the image: a version's prediction of a
    sample it trained on is its out-of-fold one, of a sample it never saw a fresh one.

    Parameters
    ----------
    project : Project or str
    baseline, version : ModelVersion or str
        The version compared from (``baseline``, e.g. the older one) and to (``version``).
    on : {"both", "either"} or sequence of str, default "both"
        ``"both"``: the samples both versions held out (out-of-fold predictions only).
        ``"either"``: every labelled sample either version trained on (a retrain on a new
        batch is judged on that batch too). A list of sample ids (or a view's ids): those
        labelled samples, e.g. a new batch.

    Returns
    -------
    pandas.DataFrame
        As :func:`workbench.metrics.compare.compare_predictions`: ``sample_id``, ``given``,
        ``predicted_a``, ``predicted_b``, ``confidence_a``, ``confidence_b``, ``outcome``
        (``better``, ``worse``, ``same_right``, ``same_wrong``). ``attrs`` holds ``a``
        (the baseline's name), ``b`` (the version's name) and ``classes`` (display order).

    Raises
    ------
    ProjectError
        For an unknown version, the same version twice, or a version without held-out
        predictions.
    """
    project, version_a, version_b = _versions(project, baseline, version)
    if isinstance(on, str) and on == "both":
        frame = compare_predictions(held_out(project, version_a),
                                    held_out(project, version_b))
    else:
        ids = _samples_on(project, version_a, version_b, on)
        frame = compare_predictions(unseen_predictions(project, version_a, ids),
                                    unseen_predictions(project, version_b, ids))
    frame.attrs.update(a=version_a.name, b=version_b.name, on=on if isinstance(on, str)
                       else "samples", classes=_classes(project, version_a, version_b))
    return frame


def _samples_on(project: Project, a: ModelVersion, b: ModelVersion,
                on: str | Sequence[str]) -> list[str]:
    """The labelled samples ``on`` names (see :func:`compare`)."""
    labelled = project.to_pandas()
    labelled = labelled[labelled["label"].notna()]
    if isinstance(on, str):
        if on != "either":
            raise ProjectError(f"compare: on={on!r} is not one of {', '.join(ON)} nor a list "
                               "of sample ids")
        seen = set(a.snapshot()["sample_id"]) | set(b.snapshot()["sample_id"])
        return [sid for sid in labelled["sample_id"] if sid in seen]
    wanted = list(on.values("id")) if hasattr(on, "values") and not isinstance(on, list) \
        else [str(sid) for sid in on]
    known = set(labelled["sample_id"])
    missing = [sid for sid in wanted if sid not in known]
    if missing:
        raise ProjectError(f"compare: {len(missing)} of the samples in on= are not labelled "
                           f"samples of project {project.name!r} (e.g. {missing[0]!r})")
    return list(dict.fromkeys(wanted))


def unseen_predictions(project: Project, version: ModelVersion,
                       sample_ids: Sequence[str]) -> pd.DataFrame:
    """The version's predictions of ``sample_ids`` from a model that never trained on each:
    out-of-fold where it trained on the sample, a fresh prediction where it never saw it.
    Columns ``sample_id``, ``given`` (current label), ``predicted``, ``confidence``,
    ``source`` (``"out-of-fold"`` or ``"unseen"``)."""
    current = project.to_pandas().set_index("sample_id")
    oof = held_out(project, version).set_index("sample_id")
    trained_on = set(version.snapshot()["sample_id"])
    rows = [{"sample_id": sid, "predicted": oof.at[sid, "predicted"],
             "confidence": float(oof.at[sid, "confidence"]), "source": "out-of-fold"}
            for sid in sample_ids if sid in oof.index]
    fresh = [sid for sid in sample_ids if sid not in oof.index and sid not in trained_on]
    if fresh:
        paths = [str(current.at[sid, "filepath"]) for sid in fresh]
        predicted = version.predict(paths, progress=False)
        rows += [{"sample_id": sid, "predicted": label, "confidence": float(confidence),
                  "source": "unseen"}
                 for sid, label, confidence in zip(fresh, predicted["label"],
                                                   predicted["confidence"], strict=True)]
    frame = pd.DataFrame(rows, columns=["sample_id", "predicted", "confidence", "source"])
    frame["given"] = frame["sample_id"].map(current["label"])
    order = {sid: i for i, sid in enumerate(sample_ids)}
    return frame.sort_values("sample_id", key=lambda c: c.map(order)).reset_index(drop=True)


@renamed(a="baseline", b="version")
def class_deltas(project: Project | str, baseline: ModelVersion | str,
                 version: ModelVersion | str) -> pd.DataFrame:
    """Recall and F1 per class under ``baseline`` (``_a``) and ``version`` (``_b``) and their
    change, on the samples both held out: ``class``, ``n``, ``recall_a``, ``recall_b``,
    ``recall_delta``, ``f1_a``, ``f1_b``, ``f1_delta`` (see
    :func:`workbench.metrics.compare.per_class_deltas`)."""
    frame = compare(project, baseline, version)
    return per_class_deltas(frame, classes=frame.attrs["classes"])


def _classes(project: Project, a: ModelVersion, b: ModelVersion) -> list[str]:
    """Version a's classes, then b's new ones, then the project's (stable display order)."""
    ordered = list(a.classes)
    for name in [*b.classes, *project.classes]:
        if name not in ordered:
            ordered.append(name)
    return ordered


__all__ = ["class_deltas", "compare"]
