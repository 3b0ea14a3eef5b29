"""Error analysis of a model version on its project: the Project-level wrappers.

Each function reads what it needs from the store and the version's files, calls a pure
function of :mod:`workbench.metrics`, and (for per-sample results) writes them back as a
run under a key such as ``label_issues_v2`` so widgets and FiftyOne's App can filter on
them. The model's view of each image is its held-out (out-of-fold or validation)
prediction; the label it is compared with is the project's *current* consensus, so a
relabel shows up without retraining.

>>> wb.confusion(p, mv)                      # true × predicted counts
>>> wb.slice_report(p, mv, by=["lighting"])  # accuracy per slice with Wilson 95 % CIs
>>> wb.label_issues(p, mv).head(20)          # the labels most likely wrong
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench import metrics as analysis
from workbench.metrics.neighbours import NeighbourIndex
from workbench.metrics.vectors import unit_rows
from workbench.store import _db as store
from workbench.store.coerce import as_version
from workbench.store.project import Project, ProjectError

#: Cosine distance under which two embeddings are the same image to the network.
IDENTICAL = 1e-4

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion


#: The project and version objects for names (kept for callers of earlier releases).
resolve = as_version


def held_out(project: Project | str, version: ModelVersion | str | None = None) -> pd.DataFrame:
    """The version's held-out predictions beside the samples' current labels.

    Returns
    -------
    pd.DataFrame
        One row per sample the version held out that is labelled now: ``sample_id``,
        ``filepath``, ``given`` (current consensus), ``predicted``, ``confidence``,
        ``correct``, ``fold``, one probability column per class of the version, and the
        project's slice fields.
    """
    project, version = resolve(project, version)
    predictions = version.oof_predictions().rename(columns={"label": "predicted"})
    if predictions.empty:
        raise ProjectError(f"model version {version.name!r} has no held-out predictions; "
                           "train with folds >= 2 (wb.train(p, folds=5)) or with a 'val' split.")
    current = project.to_pandas().drop(columns=["id", "tags"]).rename(columns={"label": "given"})
    frame = predictions.merge(current, on="sample_id", how="inner")
    frame = frame[frame["given"].notna()].reset_index(drop=True)
    frame["correct"] = frame["given"] == frame["predicted"]
    return frame


def class_order(project: Project, version: ModelVersion) -> list[str]:
    """The version's classes, then the project's classes it does not know (matrix order)."""
    return version.classes + [c for c in project.classes if c not in version.classes]


def confusion(project: Project | str, version: ModelVersion | str | None = None) -> pd.DataFrame:
    """True × predicted counts of the held-out predictions (every class, stable order)."""
    project, version = resolve(project, version)
    frame = held_out(project, version)
    return analysis.confusion_matrix(frame["given"], frame["predicted"],
                                     classes=class_order(project, version))


def confusion_samples(project: Project | str, version: ModelVersion | str | None = None, *,
                      true: str, pred: str) -> list[str]:
    """Sample ids in one cell of :func:`confusion`, most confident mistakes first."""
    project, version = resolve(project, version)
    frame = held_out(project, version)
    classes = class_order(project, version)
    for name, value in (("true", true), ("pred", pred)):
        if value not in classes:
            raise ProjectError(f"{name}={value!r} is not a class of {version.name!r} "
                               f"(classes: {', '.join(classes)}).")
    return list(analysis.confusion_cell(frame, true=true, pred=pred)["sample_id"])


def class_report(project: Project | str,
                 version: ModelVersion | str | None = None) -> pd.DataFrame:
    """Per class: precision, recall, f1, support, predicted count, most-confused-with."""
    project, version = resolve(project, version)
    frame = held_out(project, version)
    return analysis.class_report(frame["given"], frame["predicted"],
                                 classes=class_order(project, version))


def check_slice_fields(project: Project, fields: Sequence[str] | str | None) -> list[str]:
    """The slice fields asked for (all of the project's when None), checked.

    Raises
    ------
    ProjectError
        When the project has no slice fields, a field is unknown (naming the known ones), or
        a field is listed twice.
    """
    known = project.slice_fields
    fields = list(known if fields is None else ([fields] if isinstance(fields, str) else fields))
    if not fields:
        raise ProjectError(f"project {project.name!r} has no slice fields; import them with "
                           "p.import_folder(..., metadata_csv=...) or a CSV with extra columns.")
    missing = [f for f in fields if f not in known]
    if missing:
        raise ProjectError(f"slice field(s) {', '.join(map(repr, missing))} do not exist in "
                           f"project {project.name!r} (slice fields: "
                           f"{', '.join(known) or 'none'}).")
    if len(set(fields)) != len(fields):
        raise ProjectError(f"slice fields repeat: {fields}; list each once")
    return fields


def _slice_frame(project: Project, version: ModelVersion,
                 fields: Sequence[str] | None) -> tuple[pd.DataFrame, list[str]]:
    fields = check_slice_fields(project, fields)
    return held_out(project, version), fields


def slice_report(project: Project | str, version: ModelVersion | str | None = None, *,
                 by: Sequence[str] | str | None = None, confidence: float = 0.95,
                 min_size: int = 1) -> pd.DataFrame:
    """Accuracy per value of each slice field in ``by`` (default: all) and per pair of
    values, with Wilson intervals and the gap to the rest; worst first. Columns as
    :func:`workbench.metrics.slice_report`."""
    project, version = resolve(project, version)
    frame, fields = _slice_frame(project, version, by)
    return analysis.slice_report(frame, by=fields, confidence=confidence, min_size=min_size)


def discover_slices(project: Project | str, version: ModelVersion | str | None = None, *,
                    k: int = 5, fields: Sequence[str] | None = None, max_level: int = 3,
                    min_support: int | None = None) -> pd.DataFrame:
    """The ``k`` worst conjunctions of slice field values (SliceLine): slice, level, size,
    errors, error_rate, score, accuracy with its interval, gap to overall accuracy."""
    project, version = resolve(project, version)
    frame, fields = _slice_frame(project, version, fields)
    return analysis.discover_slices(frame, fields=fields, k=k, max_level=max_level,
                                    min_support=min_support)


def label_issues(project: Project | str, version: ModelVersion | str | None = None, *,
                 tta: bool = True, neighbours: bool = True, write: bool = True,
                 progress: bool = False) -> pd.DataFrame:
    """Every labelled sample the version held out, ranked by how likely its label is wrong.

    The evidence is the mean of out-of-fold probabilities: the version's own, a regularised
    probe on frozen embeddings averaged over each image and its mirror (``tta``), and a
    nearest-neighbour vote (``neighbours``); both extra estimates use the version's folds
    and backbone, from the project's embedding cache (the first call embeds; later calls
    read). Identical images with different labels are issues whatever the model says.
    Samples whose current label is a class the version does not know are left out. On an
    anomaly version: the labelled-normal images ranked by their out-of-fold anomaly score
    (:func:`workbench.analyse.anomaly.anomaly_label_issues`).

    Returns
    -------
    pd.DataFrame
        ``sample_id``, ``filepath``, ``given``, ``suggested``, ``label_quality`` (0–1, lower
        is worse), ``is_issue``, ``rank`` (1 = worst), ``suggested_probability``, ``reason``,
        ``n_annotators``, ``class_note`` (for a class with too few held-out images to judge
        its labels by the model, that in words, see :mod:`workbench.metrics.small_classes`;
        also ``attrs["class_notes"]``). Stored as run ``label_issues_<version>`` when ``write``.
    """
    project, version = resolve(project, version)
    if version.task == "anomaly":  # "is this part really good?": normals by their score
        from workbench.analyse.anomaly import anomaly_label_issues

        return anomaly_label_issues(project, version, write=write)
    if version.metrics.get("evaluated_on") != "out-of-fold":
        raise ProjectError(f"label issues need out-of-fold predictions; {version.name!r} was "
                           "validated on a split. Train with folds: wb.train(p, folds=5).")
    frame = held_out(project, version)
    classes = version.classes
    frame = frame[frame["given"].isin(classes)].reset_index(drop=True)
    if frame.empty:
        raise ProjectError(f"no labelled sample of project {project.name!r} was held out by "
                           f"{version.name!r}; retrain on the current labels.")
    estimates = [frame[classes].to_numpy(dtype=float)]
    labels = frame["given"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    folds = frame["fold"].to_numpy()
    vectors = _embed(project, version, frame["filepath"], progress=progress)
    if tta:
        mirrored = _embed(project, version, frame["filepath"], progress=progress, flip=True)
        estimates.append(analysis.probe_probabilities(vectors, labels, folds=folds,
                                                      n_classes=len(classes),
                                                      augmented=[mirrored]))
    index = NeighbourIndex(unit_rows(vectors))  # one index: the kNN vote, identical images
    if neighbours:
        estimates.append(analysis.knn_probabilities(vectors, labels, folds=folds,
                                                    n_classes=len(classes), index=index))
    conflicts = _identical_conflicts(project, frame, vectors, index)
    result = analysis.rank_label_issues(frame["sample_id"], frame["given"], estimates,
                                        classes=classes, conflicts=conflicts)
    extra = frame.set_index("sample_id")
    result.insert(1, "filepath", result["sample_id"].map(extra["filepath"]))
    notes = class_notes(frame["given"], frame["predicted"], classes)
    result["class_note"] = result["given"].map(notes).astype(object)
    result.attrs["class_notes"] = {c: n for c, n in notes.items() if n}
    return finish_issues(project, version, result, write=write,
                         config={"version": version.name, "tta": tta, "neighbours": neighbours})


def class_notes(given: pd.Series, predicted: pd.Series,
                classes: Sequence[str]) -> dict[str, str | None]:
    """Per class, the note of :func:`workbench.metrics.small_classes.small_class_notes` on
    held-out predictions (None for a class large enough to judge)."""
    notes = analysis.small_class_notes(
        list(classes), n=[int((given == c).sum()) for c in classes],
        correct=[int(((given == c) & (predicted == c)).sum()) for c in classes])
    return dict(zip(notes["class"], notes["note"], strict=True))


def finish_issues(project: Project, version: ModelVersion, result: pd.DataFrame, *,
                  write: bool, config: dict) -> pd.DataFrame:
    """Add ``n_annotators`` to ranked issues, note the version, and store them as run
    ``label_issues_<version>`` when ``write``."""
    annotators = store.histories(project.dataset, list(result["sample_id"]))
    result["n_annotators"] = [len({e["annotator"] for e in annotators[s]})
                              for s in result["sample_id"]]
    result.attrs["version"] = version.name
    if write:
        store.write_run(project.dataset, f"label_issues_{version.name}", {
            row.sample_id: {"given": row.given, "suggested": row.suggested,
                            "label_quality": float(row.label_quality),
                            "is_issue": bool(row.is_issue), "rank": int(row.rank),
                            "reason": row.reason}
            for row in result.itertuples(index=False)},
            method="label_issues", config=config)
    return result


def _embed(project: Project, version: ModelVersion, paths: Sequence[str], *, progress: bool,
           flip: bool = False) -> np.ndarray:
    from workbench.train.embeddings import EmbeddingCache

    config = version.config
    return EmbeddingCache(project.folder / "embeddings").embed(
        list(paths), backbone=config["backbone"], weights=config.get("weights", "default"),
        image_size=config["image_size"], progress=progress, flip=flip).vectors


def _identical_conflicts(project: Project, frame: pd.DataFrame, vectors: np.ndarray,
                         index: NeighbourIndex | None = None) -> dict[str, str]:
    """Samples with an identical image (same bytes or same embedding) labelled otherwise."""
    found = dict(zip(*store.values_of(project.dataset, frame["sample_id"], ["content_hash"]),
                     strict=True))
    hashes = [found.get(sid) for sid in frame["sample_id"]]
    pairs = analysis.find_duplicates(frame["sample_id"], vectors, hashes=hashes,
                                     labels=frame["given"], threshold=IDENTICAL,
                                     index=index)
    names = {sid: Path(path).name for sid, path in zip(frame["sample_id"], frame["filepath"],
                                                       strict=True)}
    conflicts: dict[str, str] = {}
    for row in pairs[(pairs["kind"] == "exact") & pairs["conflicting"]].itertuples():
        other, this = names.get(row.other_id, row.other_id), names.get(row.sample_id,
                                                                        row.sample_id)
        conflicts[row.sample_id] = f"identical to {other}, which is labelled {row.other_label}"
        conflicts[row.other_id] = f"identical to {this}, which is labelled {row.label}"
    return conflicts


def data_advice(project: Project | str, version: ModelVersion | str | None = None, *,
                target_recall: float = 0.95, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                progress: bool = False) -> pd.DataFrame:
    """Which class needs more data: per class the labelled count, the version's held-out
    recall, the recall expected at twice the data (a per-class learning curve from probe
    refits on subsamples of the frozen embeddings), and how many more to collect; ranked by
    expected gain. ``recall_low``/``recall_high`` bound the recall (95 %) and ``note`` says,
    for a class with too few held-out images, that its figures mean little; after
    :func:`workbench.image_issues`, ``poor_images`` counts its images with a quality issue
    (and the recommendation says to look at them first)."""
    project, version = resolve(project, version)
    frame = held_out(project, version)
    report = analysis.class_report(frame["given"], frame["predicted"], classes=version.classes)
    labelled = project.to_pandas()
    labelled = labelled[labelled["label"].isin(version.classes)]
    counts = labelled["label"].value_counts()
    too_few = [c for c in version.classes if counts.get(c, 0) < 2]
    if too_few:
        raise ProjectError(f"class(es) {', '.join(too_few)} have fewer than 2 labelled images; "
                           "label more of them (or drop the class) before asking for advice.")
    vectors = _embed(project, version, labelled["filepath"], progress=progress)
    curve = analysis.learning_curve(vectors, labelled["label"].to_numpy(),
                                    classes=version.classes, fractions=tuple(fractions))
    current = pd.DataFrame({"class": report["class"],
                            "n": [int(counts.get(c, 0)) for c in report["class"]],
                            "recall": report["recall"]})
    advice = analysis.data_advice(curve, current=current, target_recall=target_recall)
    advice = advice.merge(report[["class", "recall_low", "recall_high", "note"]], on="class",
                          how="left")
    if project.dataset.has_sample_field("image_issues"):  # wb.image_issues ran
        labels, flagged = project.dataset.values(["ground_truth.label", "image_issues.n_issues"])
        poor = pd.Series([lab for lab, n in zip(labels, flagged, strict=True) if n])
        advice["poor_images"] = advice["class"].map(poor.value_counts()).fillna(0).astype(int)
        advice.loc[advice["poor_images"] > 0, "recommendation"] += advice["poor_images"].map(
            lambda n: f" First look at its {n} image(s) with an image-quality issue "
                      "(grid filter 'image quality').")
    return advice


__all__ = ["class_report", "confusion", "confusion_samples", "data_advice",
           "discover_slices", "held_out", "label_issues", "resolve", "slice_report"]
