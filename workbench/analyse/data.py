"""Analyses of a project's data itself: annotator agreement, duplicates, outliers, its card.

Project-level wrappers around :mod:`workbench.metrics`: they read labels, histories and
cached embeddings from the project, call the pure function, and store per-sample results
as runs (``agreement``, ``duplicates``, ``outliers``) that views can filter on.

>>> rep = wb.agreement(p)             # rep.samples / rep.annotators / rep.classes / rep.alpha
>>> wb.near_duplicates(p)             # pairs with distance, kind, group, conflicting labels
>>> wb.outliers(p).head()             # the most unusual images
>>> print(wb.datasheet(p))            # Markdown dataset card
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench import metrics as analysis
from workbench.analyse.classification import resolve
from workbench.store import _db as store
from workbench.store.coerce import as_project
from workbench.store.labels import latest_per_annotator
from workbench.store.project import Project, ProjectError
from workbench.train.backbones import DEFAULT_BACKBONE

if TYPE_CHECKING:
    from workbench.analyse.open_work import ReviewCounts
    from workbench.metrics.agreement import AgreementReport
    from workbench.train.versions import ModelVersion


def _open(project: Project | str) -> Project:
    return as_project(project)


def annotations(project: Project | str) -> pd.DataFrame:
    """The latest label of every annotator on every real sample: sample_id, annotator, label.

    Synthetic samples are left out: their label is the synthesis recipe's, not a person's.
    """
    project = _open(project)
    ids = project.dataset.match_tags(store.SYNTHETIC_TAG, bool=False).values("id")
    rows = [(sid, who, label)
            for sid, history in store.histories(project.dataset, ids).items()
            for who, label in latest_per_annotator(history).items()]
    return pd.DataFrame(rows, columns=["sample_id", "annotator", "label"])


def agreement(project: Project | str, version: ModelVersion | str | None = None, *,
              threshold: float = 0.8, write: bool = True) -> AgreementReport:
    """How well the annotators agree, per image, per annotator and per class.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str, optional
        With a version, its out-of-fold probabilities join the vote (CROWDLAB): consensus
        and annotator quality weigh each annotator by how often they agree with model and
        peers. Without one, consensus is the majority vote and quality is agreement with
        the other annotators.
    threshold : float, default 0.8
        Images whose agreement (share of annotators giving the majority label) is below it
        need review.
    write : bool
        Store the per-image results as run ``agreement``.

    Returns
    -------
    AgreementReport
        ``samples`` (least agreement first), ``annotators`` (best first), ``classes``,
        ``alpha`` (Krippendorff's, nominal), ``to_review()``.
    """
    project = _open(project)
    if not 0 < threshold <= 1:
        raise ProjectError(f"threshold must be in (0, 1], got {threshold!r}.")
    long = annotations(project)
    if long.empty:
        raise ProjectError(f"project {project.name!r} has no labels yet; import or annotate "
                           "images first.")
    classes = project.classes
    pred_probs = None
    if version is not None:  # classes added since training get probability 0
        project, version = resolve(project, version)
        pred_probs = (version.oof_predictions().set_index("sample_id")[version.classes]
                      .reindex(columns=classes, fill_value=0.0))
    report = analysis.annotator_agreement(long, classes=classes, pred_probs=pred_probs,
                                          threshold=threshold)
    if write:
        store.write_run(project.dataset, "agreement", {
            row.sample_id: {"agreement": float(row.agreement),
                            "consensus": row.consensus,
                            "consensus_quality": float(row.consensus_quality),
                            "n_annotators": int(row.n_annotators),
                            "needs_review": bool(row.needs_review)}
            for row in report.samples.itertuples(index=False)},
            method="agreement", config={"threshold": threshold,
                                        "version": getattr(version, "name", None)})
    return report


def _embeddings(project: Project, backbone: str, image_size: int,
                progress: bool) -> tuple[list[str], np.ndarray]:
    """Sample ids and their embeddings (from the project's cache)."""
    from workbench.train.embeddings import embed_project

    result = embed_project(project, backbone=backbone, image_size=image_size,
                           progress=progress)
    return list(result.sample_ids), result.vectors


def near_duplicates(project: Project | str, threshold: float | None = None, *,
                    backbone: str = DEFAULT_BACKBONE, image_size: int = 224,
                    write: bool = True, progress: bool = False) -> pd.DataFrame:
    """Pairs of images that are the same or nearly the same, from embedding similarity and
    equal content hashes.

    Returns
    -------
    pd.DataFrame
        ``sample_id``, ``other_id``, ``distance`` (cosine), ``kind`` (``exact`` or
        ``near``), ``group``, ``label``, ``other_label``, ``conflicting``, and both
        ``filepath`` columns; conflicting labels first. Stored as run ``duplicates`` (group,
        nearest duplicate, distance, conflicting) for every sample in a pair.
    """
    project = _open(project)
    ids, vectors = _embeddings(project, backbone, image_size, progress)
    view = project.dataset.select(ids, ordered=True)
    labels, hashes, paths = view.values(["ground_truth.label", "content_hash", "filepath"])
    pairs = analysis.find_duplicates(ids, vectors, hashes=hashes, labels=labels,
                                     threshold=threshold)
    where = dict(zip(ids, paths, strict=True))
    pairs["filepath"] = pairs["sample_id"].map(where)
    pairs["other_filepath"] = pairs["other_id"].map(where)
    if write:
        nearest: dict[str, dict] = {}
        for row in pairs.sort_values("distance").itertuples(index=False):
            for me, other in ((row.sample_id, row.other_id), (row.other_id, row.sample_id)):
                entry = nearest.setdefault(me, {"group": int(row.group), "nearest": other,
                                                "distance": float(row.distance),
                                                "kind": row.kind, "conflicting": False})
                entry["conflicting"] |= bool(row.conflicting)
        store.write_run(project.dataset, "duplicates", nearest, method="near_duplicates",
                        config={"threshold": threshold, "backbone": backbone,
                                "image_size": image_size})
    return pairs


def outliers(project: Project | str, *, k: int = 10, backbone: str = DEFAULT_BACKBONE,
             image_size: int = 224, write: bool = True, progress: bool = False) -> pd.DataFrame:
    """Out-of-distribution score of every image from its nearest neighbours' embeddings.

    Returns
    -------
    pd.DataFrame
        ``sample_id``, ``filepath``, ``label``, ``ood_score`` (mean cosine distance to the
        ``k`` nearest other images; higher is more unusual), ``outlier_score`` (0–1, lower
        is more atypical), ``is_outlier``, ``rank``; most unusual first. Stored as run
        ``outliers``.
    """
    project = _open(project)
    if len(project) < 3:
        raise ProjectError(f"project {project.name!r} has {len(project)} image(s); outliers "
                           "need at least 3.")
    ids, vectors = _embeddings(project, backbone, image_size, progress)
    scores = analysis.outlier_scores(ids, vectors, k=min(k, len(ids) - 1))
    view = project.dataset.select(ids, ordered=True)
    info = pd.DataFrame(dict(zip(["sample_id", "filepath", "label"], view.values(
        ["id", "filepath", "ground_truth.label"]), strict=True)))
    scores = scores.merge(info, on="sample_id", how="left")
    scores = scores[["sample_id", "filepath", "label",
                     *[c for c in scores.columns if c not in ("sample_id", "filepath",
                                                             "label")]]]
    if write:
        store.write_run(project.dataset, "outliers", {
            row.sample_id: {"ood_score": float(row.ood_score),
                            "outlier_score": float(row.outlier_score),
                            "is_outlier": bool(row.is_outlier), "rank": int(row.rank)}
            for row in scores.itertuples(index=False)},
            method="outliers", config={"k": k, "backbone": backbone, "image_size": image_size})
    return scores


def datasheet(project: Project | str, path: str | os.PathLike[str] | None = None, *,
              counts: ReviewCounts | None = None) -> str:
    """A Markdown dataset card of the project (Datasheets for Datasets sections), from what
    is stored: classes and counts, slices, sources, annotators and agreement, issues found
    by earlier runs, model versions. Written to ``path`` too when given.

    ``counts`` (:func:`workbench.review_counts`) replaces the stored runs' label-issue and
    agreement counts by the open review work as every dashboard shows it."""
    project = _open(project)
    frame = project.to_pandas()
    dataset = project.dataset
    labelled = frame[frame["label"].notna()]
    per_class = labelled["label"].value_counts()
    class_counts = pd.DataFrame({"class": project.classes,
                                 "n": [int(per_class.get(c, 0)) for c in project.classes]})
    slices = {f: frame[f].fillna("(missing)").value_counts().rename_axis("value")
              .reset_index(name="n") for f in project.slice_fields}
    classes = project.classes
    sources = pd.Series([_source(p, classes) for p in dataset.values("source_path")
                         if p]).value_counts().rename_axis("source").reset_index(name="n")
    widths, heights = dataset.values(["metadata.width", "metadata.height"])
    sizes = pd.Series(Counter(zip(widths, heights, strict=True)))
    image_sizes = pd.DataFrame([(w, h, n) for (w, h), n in sizes.items()],
                               columns=["width", "height", "n"]).sort_values("n",
                                                                            ascending=False)
    annotators_table, alpha = pd.DataFrame(), None
    long = annotations(project)
    if long["annotator"].nunique() >= 2:
        report = analysis.annotator_agreement(long, classes=project.classes)
        annotators_table = report.annotators[["annotator", "n_labels", "quality"]]
        alpha = report.alpha
    elif not long.empty:
        annotators_table = (long["annotator"].value_counts().rename_axis("annotator")
                            .reset_index(name="n_labels"))
    versions = project.models()
    facts = {"name": project.name, "created": dataset.created_at,
             "task": store.project_info(dataset).get("task", "classification"),
             "n_samples": len(frame), "n_labelled": len(labelled),
             "class_counts": class_counts, "slices": slices, "sources": sources,
             "annotators": annotators_table, "agreement_alpha": alpha,
             "issues": _issue_counts(dataset, counts), "image_sizes": image_sizes,
             "versions": versions.drop(columns=["metrics", "parent"], errors="ignore")}
    text = analysis.render_datasheet(facts)
    if path is not None:
        Path(path).write_text(text)
    return text


def _source(path: str, classes: list[str]) -> str:
    """The folder an image was imported from (a class-named folder counts as its parent's)."""
    folder = Path(path).parent
    return str(folder.parent if folder.name in classes else folder)


def _issue_counts(dataset: object, review: ReviewCounts | None = None) -> dict[str, int]:
    """Counts from the newest stored runs (label issues, duplicates, outliers, review), or
    the open review work of ``review`` in place of the label-issue and agreement runs."""
    runs = store.analysis_runs(dataset)
    counts: dict[str, int] = {}
    issue_keys = sorted((k for k in runs if k.startswith("label_issues_")),
                        key=lambda k: runs[k]["time"])
    if review is not None:
        words = review.describe()
        if review.label_issues is not None:
            counts[words["label-issues"]] = review.label_issues
        counts[words["disagreements"]] = review.disagreements
        counts[words["disputed"]] = review.disputed
    elif issue_keys:
        key = issue_keys[-1]
        counts[f"label issues ({key.removeprefix('label_issues_')})"] = int(
            dataset.count_values(f"{key}.is_issue").get(True, 0))
    if "duplicates" in runs:
        counts["images with a near-duplicate"] = int(dataset.exists("duplicates").count())
        counts["duplicates with conflicting labels"] = int(
            dataset.count_values("duplicates.conflicting").get(True, 0))
    if "outliers" in runs:
        counts["outliers"] = int(dataset.count_values("outliers.is_outlier").get(True, 0))
    if "image_issues" in runs:
        from fiftyone import ViewField as F

        counts["images with an image quality issue"] = int(
            dataset.match(F("image_issues.n_issues") > 0).count())
        for name, n in sorted(dataset.count_values("image_issues.issues").items(),
                              key=lambda item: str(item[0])):
            if name and n:
                counts[f"image quality: {str(name).replace('_', ' ')}"] = int(n)
        unreadable = runs["image_issues"].get("config", {}).get("n_unreadable")
        if unreadable:
            counts["unreadable images"] = int(unreadable)
    if "agreement" in runs and review is None:
        counts["images below the agreement threshold"] = int(
            dataset.count_values("agreement.needs_review").get(True, 0))
    return counts


__all__ = ["agreement", "annotations", "datasheet", "near_duplicates", "outliers"]
