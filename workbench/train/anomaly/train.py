"""Train an anomaly version from normal images alone: ``wb.train(p, task="anomaly")``.

Every labelled normal image goes into the patch bank; labelled defects are never trained
on, only scored, and give the AUROC and average precision. Each normal image is scored
out-of-fold: by the bank *without* its own patches (one greedy coreset over all normals,
each kept patch remembering its image; a fold drops the patches of its images), which
is what the threshold is chosen from: the ``1 - false_reject_rate`` quantile of those
scores, said as such in ``metrics["threshold_basis"]``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from tqdm.auto import tqdm

from workbench.errors import LoupeError
from workbench.train.anomaly.model import ANOMALY, AnomalyModel, open_image
from workbench.train.anomaly.patchcore import (
    PatchBank,
    PatchFeatures,
    PatchSettings,
    greedy_coreset,
    patch_map,
)
from workbench.train.backbones import DEFAULT_BACKBONE, create_backbone
from workbench.train.groups import grouping, plan_folds
from workbench.train.versions import (
    ModelVersion,
    VersionFiles,
    VersionRecord,
    latest_version,
    release_name,
    reserve_name,
    write_version,
)

#: Fewest labelled normal images an anomaly version trains on.
MIN_NORMAL = 10
#: Shorter side, in pixels, each image is resized to (the other keeps the aspect ratio).
DEFAULT_WIDTH = 320
#: Share of the normal patches kept in the bank, and the most kept.
CORESET_FRACTION = 0.1
MOST_PATCHES = 20_000


class NotEnoughNormalImagesError(LoupeError, ValueError):
    """Fewer than :data:`MIN_NORMAL` labelled normal images."""


def train_anomaly(project: Any, *, normal: str | None = "ok",
                  backbone: str = DEFAULT_BACKBONE, weights: Any = "default",
                  image_size: int | None = None, folds: int | None = None, seed: int = 0,
                  view: Any = None, false_reject_rate: float = 0.01,
                  coreset: float = CORESET_FRACTION, group_by: str | None = None,
                  group_copies: bool = True, progress: bool = True) -> ModelVersion:
    """Learn what normal looks like from the labelled ``normal`` images of ``project``.

    Parameters
    ----------
    normal : str, default "ok"
        The good class; every other labelled class counts as a defect (scored, never
        trained on).
    image_size : int, default 320
        Shorter side each image is resized to; the longer one keeps the aspect ratio.
    folds : int, default 5
        Out-of-fold groups of the normal images (at most one per image).
    false_reject_rate : float, default 0.01
        The threshold is this quantile from the top of the out-of-fold normal scores.
    coreset : float, default 0.1
        Share of the normal patches kept (at most 20,000).
    group_by, group_copies
        As :func:`workbench.train` takes them: folds of the normal images never split a
        group or near-copies (found by content hash, thumbnail and mean patch feature).

    Raises
    ------
    NotEnoughNormalImagesError
        Fewer than 10 labelled normal images (the count is in the message).
    """
    from workbench.store import _db as store
    from workbench.store.eval_sets import exclude_held_back
    from workbench.store.project import Project

    started = time.time()
    project = Project.open(project) if isinstance(project, str) else project
    width = DEFAULT_WIDTH if image_size is None else image_size
    folds = 5 if folds is None else folds
    for name, value, least in (("image_size", width, 32), ("folds", folds, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if not 0 < false_reject_rate < 0.5:
        raise ValueError(f"false_reject_rate must be in (0, 0.5), e.g. 0.01, got "
                         f"{false_reject_rate!r}")
    if view is not None and getattr(view, "dataset_name", None) != project.name:
        raise ValueError(f"view must be a view of project {project.name!r}'s dataset.")
    samples = pd.DataFrame(store.labelled_samples(exclude_held_back(
        project, project.dataset if view is None else view)))
    samples = samples[~samples["synthetic"]].reset_index(drop=True) if len(samples) else samples
    present = sorted(set(samples["label"])) if len(samples) else []
    if normal not in present:
        raise ValueError(f"normal={normal!r} is not a labelled class of project "
                         f"{project.name!r} (labelled: {', '.join(present) or 'none'}); name "
                         "the class of good parts")
    is_normal = (samples["label"] == normal).to_numpy()
    if is_normal.sum() < MIN_NORMAL:
        raise NotEnoughNormalImagesError(
            f"an anomaly model needs at least {MIN_NORMAL} labelled {normal!r} images; "
            f"project {project.name!r} has {int(is_normal.sum())}. Label more good parts.")
    group_values, held_back = grouping(project, samples["sample_id"].tolist(), group_by)
    body, spec = create_backbone(backbone, weights=weights)
    if spec.weights_source == "random":
        raise ValueError("an anomaly model compares pretrained features; pass "
                         "weights='default' or a weights file, not random weights")
    settings = PatchSettings(image_size=width, mean=spec.mean, std=spec.std)
    features = PatchFeatures(body, settings.indices)
    paths = samples["filepath"].tolist()
    maps = [patch_map(features, open_image(path), settings)
            for path in tqdm(paths, desc="patch features", unit="image",
                             disable=not progress)]
    plan = plan_folds(project.folder, {k: samples[k].tolist() for k in samples.columns},
                      [normal] * len(samples),
                      n_folds=min(folds, int(is_normal.sum())), seed=seed,
                      vectors=np.stack([m.reshape(-1, m.shape[-1]).mean(axis=0) for m in maps]),
                      group_values=group_values, group_by=group_by, held_back=held_back,
                      copies=group_copies, embedding={"patch_features": backbone},
                      scored=is_normal, progress=progress)
    if not plan.keep.all():
        samples = samples[plan.keep].reset_index(drop=True)
        maps = [m for m, kept in zip(maps, plan.keep, strict=True) if kept]
        is_normal = is_normal[plan.keep]
    normals = np.flatnonzero(is_normal)
    vectors = np.concatenate([maps[i].reshape(-1, maps[i].shape[-1]) for i in normals])
    owner = np.concatenate([np.full(maps[i].shape[0] * maps[i].shape[1], i) for i in normals])
    where = np.concatenate([np.indices(maps[i].shape[:2]).reshape(2, -1).T for i in normals])
    kept = greedy_coreset(vectors, coreset, seed=seed, most=MOST_PATCHES)
    fold = np.where(is_normal, plan.fold[plan.keep], -1)  # defects: scored by the whole bank
    scores = np.zeros(len(samples), dtype=np.float32)
    for f in tqdm(range(int(fold.max()) + 1), desc="folds", unit="fold", disable=not progress):
        bank = PatchBank(vectors[kept[fold[owner[kept]] != f]])
        for i in np.flatnonzero(fold == f):
            scores[i] = bank.distances(maps[i]).max()
    oof = scores[normals]
    threshold = float(np.quantile(oof, 1 - false_reject_rate))
    model = AnomalyModel(features, PatchBank(vectors[kept]), settings, threshold=threshold,
                         normal=normal, source=np.column_stack([owner[kept], where[kept]]))
    defects = np.flatnonzero(~is_normal)
    for i in defects:
        scores[i] = model.bank.distances(maps[i]).max()
    metrics = _metrics(scores, is_normal, threshold, false_reject_rate)
    labels = model.labels(scores)
    predictions = pd.DataFrame({"sample_id": samples["sample_id"], "label": labels,
                                "confidence": model.confidence(scores),
                                "anomaly_score": scores, "fold": fold})
    snapshot = samples[["sample_id", "filepath", "content_hash", "label"]].copy()
    snapshot["fold"], snapshot["group"] = fold, plan.group[plan.keep]
    config = {"backbone": backbone, "weights": str(weights), "image_size": width,
              "folds": int(fold.max()) + 1, "seed": seed, "normal": normal,
              "false_reject_rate": false_reject_rate, "coreset": coreset,
              "feature_indices": list(settings.indices), "group_by": group_by,
              "groups": plan.summary, **({} if group_copies else {"group_copies": False}),
              "view": None if view is None else [repr(s) for s in view._stages]}
    name = reserve_name(project.folder)
    record = VersionRecord(
        name=name, project=project.name, task="anomaly", mode="patchcore",
        classes=[normal, ANOMALY], config=config, metrics=metrics,
        parent=latest_version(project.folder),
        extra={"spec": dataclasses.asdict(spec), "n_samples": len(samples),
               "n_patches": len(vectors), "bank_size": len(model.bank),
               "duration_s": round(time.time() - started, 1)})
    try:
        folder = write_version(project.folder, name, VersionFiles(
            record=record, checkpoint=model.checkpoint(), snapshot=snapshot,
            predictions=predictions))
    except BaseException:
        release_name(project.folder, name)
        raise
    version = ModelVersion.load(folder, project.name)
    version._anomaly = model
    return version


def _metrics(scores: np.ndarray, is_normal: np.ndarray, threshold: float,
             false_reject_rate: float) -> dict[str, Any]:
    """Out-of-fold normal score quantiles, the threshold and what it rests on; with
    labelled defects, image AUROC and average precision (defect = positive)."""
    normal = scores[is_normal]
    metrics: dict[str, Any] = {
        "evaluated_on": "out-of-fold", "n_evaluated": len(scores),
        "n_normal": int(is_normal.sum()), "n_defect": int((~is_normal).sum()),
        "normal_score_quantiles": {f"q{int(q * 100)}": float(np.quantile(normal, q))
                                   for q in (0.5, 0.9, 0.95, 0.99)} | {
                                       "max": float(normal.max())},
        "threshold": threshold,
        "threshold_basis": (f"the {100 * (1 - false_reject_rate):g}th percentile of "
                            f"{len(normal)} out-of-fold normal scores: about "
                            f"{100 * false_reject_rate:g} % of good parts rejected, and "
                            "nothing measured about defects"),
        "false_reject_rate": float((normal >= threshold).mean())}
    if (~is_normal).any():
        truth = (~is_normal).astype(int)
        metrics["auroc"] = float(roc_auc_score(truth, scores))
        metrics["average_precision"] = float(average_precision_score(truth, scores))
        metrics["escape_rate"] = float((scores[~is_normal] < threshold).mean())
        metrics["threshold_basis"] = metrics["threshold_basis"].replace(
            "nothing measured about defects",
            f"{metrics['escape_rate']:.0%} of the {int((~is_normal).sum())} labelled defects "
            "pass it")
    return metrics


__all__ = ["MIN_NORMAL", "NotEnoughNormalImagesError", "train_anomaly"]
