"""A project's images as points on a 2-D map of their embeddings (the Project-level wrapper).

>>> frame = embedding_map(p, "v2")   # sample_id, filepath, x, y, label, predicted, …
>>> frame[frame.is_issue]            # where the suspected label issues lie

Embeddings come from the project's embedding cache
(:func:`workbench.train.embeddings.embed_project`),
with the backbone, weights and image size of the version, so a trained project maps without
running the network again. Without a version the newest version's settings are used when the
project has one (its training embedded every labelled image), else the defaults that
:func:`workbench.train.embeddings.embed_project`, ``wb.near_duplicates``, ``wb.outliers`` and
``wb.train`` share (:data:`~workbench.train.backbones.DEFAULT_BACKBONE` at 224 px). The 2-D
coordinates are cached as ``.npy`` files under ``project.folder / "maps"``, keyed by the
embeddings' content, method, metric and seed: a second call only re-reads (and re-hashes the
image files, as every embedding lookup does).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from workbench.analyse.classification import resolve
from workbench.metrics.projection import MIN_TSNE_SAMPLES, Method, project_2d
from workbench.store.coerce import as_project
from workbench.store.project import Project, ProjectError
from workbench.train.backbones import DEFAULT_BACKBONE

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

#: Image size of the embeddings used without any model version (embed_project's default).
DEFAULT_IMAGE_SIZE = 224
#: Distance the map preserves (as Loupe's duplicate and outlier checks measure it).
METRIC = "cosine"


def embedding_settings(project: Project,
                       version: ModelVersion | None = None) -> dict[str, Any]:
    """``backbone``, ``weights`` and ``image_size`` the map of ``version`` embeds with.

    The version's own; without one, the newest version's, or the defaults when the project
    has no version (see the module docstring).
    """
    if version is None:
        from workbench.train.versions import latest_version

        name = latest_version(project.folder)
        if name is None:
            return {"backbone": DEFAULT_BACKBONE, "weights": "default",
                    "image_size": DEFAULT_IMAGE_SIZE}
        version = project.model(name)
    config = version.config
    return {"backbone": config["backbone"], "weights": config.get("weights", "default"),
            "image_size": int(config["image_size"])}


def embedding_map(project: Project | str, version: ModelVersion | str | None = None, *,
                  method: Method = "auto", seed: int = 0,
                  sample_ids: Sequence[str] | None = None,
                  progress: bool = False) -> pd.DataFrame:
    """Every sample (or the given ones) placed on a 2-D map of its embedding.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str, optional
        Adds the version's held-out predictions and its stored label-issue flags, and picks
        the embeddings it was trained on.
    method : {"auto", "tsne", "pca"}, default "auto"
        As :func:`workbench.metrics.projection.project_2d` (cosine distance).
    seed : int, default 0
    sample_ids : sequence of str, optional
        Map only these samples, in this order (a view's ids); all samples by default.
    progress : bool, default False
        Show progress bars while images are hashed or embedded.

    Returns
    -------
    pd.DataFrame
        One row per sample: ``sample_id``, ``filepath``, ``x``, ``y``, ``label`` (current
        consensus, None when unlabelled), ``predicted`` and ``confidence`` (the version's
        held-out prediction; None / NaN without a version or for a sample it did not hold
        out), ``correct`` (nullable boolean: NA where there is no prediction or no label),
        ``is_issue`` (from the stored run ``label_issues_<version>``; False without one),
        then the project's slice fields. ``attrs`` records ``method`` (as asked),
        ``projection`` (what ran: ``"tsne"`` or ``"pca"``, also for ``"auto"``), ``seed``,
        ``version`` and the embedding settings.

    Raises
    ------
    ProjectError
        For an unknown version, unknown sample ids, or a project without samples.
    ValueError
        For an unknown ``method`` (from ``project_2d``).
    """
    project = as_project(project)
    if version is not None:
        project, version = resolve(project, version)
    frame = project.to_pandas()
    if sample_ids is not None:
        ids = list(dict.fromkeys(sample_ids))
        known_ids = set(frame["sample_id"])
        missing = [sid for sid in ids if sid not in known_ids]
        if missing:
            raise ProjectError(f"sample_ids: {', '.join(missing[:5])} are not samples of "
                               f"project {project.name!r}.")
        frame = frame.set_index("sample_id", drop=False).loc[ids].reset_index(drop=True)
    if frame.empty:
        raise ProjectError(f"project {project.name!r} has no samples to map; import images "
                           "first (p.import_folder(...)).")
    settings = embedding_settings(project, version)
    vectors = _vectors(project, list(frame["sample_id"]), settings, progress=progress)
    coords = _coordinates(project.folder / "maps", vectors, method=method, seed=seed)

    slices = [f for f in project.slice_fields if f in frame.columns]
    result = frame[["sample_id", "filepath"]].copy()
    result["x"], result["y"] = coords[:, 0], coords[:, 1]
    result["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
    predicted, confidence, issues = _version_columns(project, version, result["sample_id"])
    result["predicted"], result["confidence"] = predicted, confidence
    known = result["label"].notna() & result["predicted"].notna()
    correct = pd.Series(pd.NA, index=result.index, dtype="boolean")
    correct[known] = (result["label"] == result["predicted"])[known]
    result["correct"] = correct
    result["is_issue"] = issues
    for field in slices:
        result[field] = frame[field].to_numpy()
    result.attrs.update(method=method, projection=_projection(method, len(vectors)),
                        seed=seed, metric=METRIC,
                        version=getattr(version, "name", None), **settings)
    return result


def _projection(method: Method, n_samples: int) -> str:
    """The method that ran: ``auto`` is t-SNE, or PCA below :data:`MIN_TSNE_SAMPLES`."""
    if method != "auto":
        return method
    return "pca" if n_samples < MIN_TSNE_SAMPLES else "tsne"


def _vectors(project: Project, ids: list[str], settings: dict[str, Any], *,
             progress: bool) -> np.ndarray:
    from workbench.train.embeddings import embed_project

    view = project.dataset.select(ids, ordered=True)
    result = embed_project(project, view=view, progress=progress, **settings)
    if list(result.sample_ids) != ids:  # select() keeps the order; never trust it silently
        order = {sid: i for i, sid in enumerate(result.sample_ids)}
        return result.vectors[[order[sid] for sid in ids]]
    return result.vectors


def _coordinates(folder: Path, vectors: np.ndarray, *, method: Method,
                 seed: int) -> np.ndarray:
    """2-D coordinates of ``vectors``, from the cache when these exact vectors were mapped."""
    digest = hashlib.sha256()
    digest.update(repr((vectors.shape, str(vectors.dtype), method, METRIC, seed)).encode())
    digest.update(np.ascontiguousarray(vectors).tobytes())
    path = folder / f"{method}-{METRIC}-seed{seed}-{digest.hexdigest()[:20]}.npy"
    if path.is_file():
        coords = np.load(path, allow_pickle=False)
        if coords.shape == (len(vectors), 2) and np.isfinite(coords).all():
            return coords
    coords = project_2d(vectors, method=method, metric=METRIC, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with partial.open("wb") as file:
        np.save(file, coords, allow_pickle=False)
    partial.replace(path)
    return coords


def _version_columns(project: Project, version: ModelVersion | None,
                     ids: pd.Series) -> tuple[list, np.ndarray, np.ndarray]:
    n = len(ids)
    if version is None:
        return [None] * n, np.full(n, np.nan), np.zeros(n, dtype=bool)
    predictions = version.oof_predictions().set_index("sample_id")
    predicted = [predictions["label"].get(sid) for sid in ids]
    confidence = ids.map(predictions["confidence"]).to_numpy(dtype=float)
    issues = np.zeros(n, dtype=bool)
    field = f"label_issues_{version.name}"
    if project.dataset.has_sample_field(field):
        run_ids, flags = project.dataset.values(["id", f"{field}.is_issue"])
        flagged = {sid for sid, flag in zip(run_ids, flags, strict=True) if flag}
        issues = ids.isin(flagged).to_numpy()
    return predicted, confidence, issues


__all__ = ["DEFAULT_IMAGE_SIZE", "METRIC", "embedding_map", "embedding_settings"]
