"""Training a box detector: a detection project's labelled images in, a model version out.

>>> mv = wb.train(p, task="detection", model="retinanet")   # or train_detector(p)
>>> mv.metrics["map50"]                  # out-of-fold: no image scored by a model that saw it
>>> mv.oof_predictions().head()          # sample_id, label, confidence, x, y, w, h, fold
>>> p.dataset.first()["pred_v1"].detections

Every labelled image (one with a consensus box set, ``[]`` included: an image that shows no
defect is a valid negative) is held out by exactly one of ``folds`` RetinaNet models; their
boxes become ``pred_<version>`` on the samples (``fo.Detections``, each box with
``confidence`` and ``fold``) and the out-of-fold metrics. The model kept is then trained on
all labelled images for the same number of epochs.

Augmentation is a horizontal flip and a small brightness/contrast change: nothing that could
move a box out of view or change what a defect looks like.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.train._loop import CancelFlag, TrainingCancelled, batches, warmup_cosine
from workbench.train.backbones import DEFAULT_BACKBONE, _resolve
from workbench.train.classification.finetune import load_pixels
from workbench.train.detection.predict import BOX_COLUMNS, detect, detect_files, detection_frame
from workbench.train.detection.retinanet import (
    Detector,
    build_detector,
    check_image_size,
    freeze_batchnorm,
)
from workbench.train.versions import (
    DETECTION_FORMAT,
    ModelVersion,
    VersionFiles,
    VersionRecord,
    latest_version,
    release_name,
    reserve_name,
    write_detection_predictions,
    write_version,
)

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.store.project import Project

#: Optimiser steps of a final model when ``epochs`` is not given (:func:`default_epochs`).
DEFAULT_STEPS = 400
#: Fewest and most epochs :func:`default_epochs` chooses.
EPOCH_RANGE = (12, 30)


@dataclasses.dataclass(frozen=True)
class DetectionSettings:
    """Optimisation and decoding settings of a detector run (recorded in its config).

    ``lr`` is the learning rate of the feature pyramid and heads, ``backbone_lr`` of the
    pretrained backbone (whose layers at strides 2 and 4 stay frozen with
    ``freeze_early``, as do all its batch-norm statistics). ``jitter``: largest relative
    brightness and contrast change of the augmentation.
    """

    batch_size: int = 4
    lr: float = 2e-3
    backbone_lr: float = 6e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10
    grad_clip: float = 10.0
    freeze_early: bool = True
    jitter: float = 0.1
    fpn_channels: int = 64
    head_convs: int = 2
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 50


def train_detector(project: Project | str, *, backbone: str = DEFAULT_BACKBONE, folds: int = 3,
                   epochs: int | None = None, image_size: int | None = None, seed: int = 0,
                   view: fo.DatasetView | None = None, batch_size: int | None = None,
                   weights: Any = "default", settings: DetectionSettings | None = None,
                   group_by: str | None = None, group_copies: bool = True,
                   cancel: CancelFlag | None = None, progress: bool = True) -> ModelVersion:
    """Train a RetinaNet version of a detection project, with out-of-fold predictions.

    Parameters
    ----------
    project : Project or str
        A detection project (``Project.create(name, task="detection")``) or its name.
    backbone, weights
        As :func:`workbench.train.backbones.create_backbone` takes them; a CNN whose feature maps
        at strides 8, 16 and 32 feed the FPN.
    folds : int, default 3
        k >= 2 models, each holding out a k-th of the labelled images (split stratified by
        each image's rarest box class, images without boxes as one more group).
    group_by, group_copies
        As :func:`workbench.train` takes them: no fold splits a group or near-copies.
    epochs : int, optional
        Epochs of every fold model and of the final model. Default: enough for about
        :data:`DEFAULT_STEPS` optimiser steps of the final model, within 12–30 epochs
        (:func:`default_epochs`): 30 for 50 images, 12 from about 130 images on. A
        detector trained on a few dozen images needs the steps: on 50 NEU-DET images,
        12 epochs gave test mAP@0.5 0.037, 30 gave 0.105.
    image_size : int, optional
        Side of the square each image is resized to (a multiple of 32). Default: the
        labelled images' median longest side rounded up to a multiple of 32, within
        64–320 (128 for the demo's 128 px images, 224 for NEU-DET's 200 px ones): larger
        than the images costs time and, in our runs, accuracy.
    seed : int, default 0
        Folds, initialisation, augmentation and batch order; a CPU run is reproducible.
    view : fiftyone view of the project, optional
        Train on these samples only (still only the labelled ones).
    batch_size : int, optional
        Images per step (``settings.batch_size``, 8, by default).
    settings : DetectionSettings, optional
    cancel : object with ``is_set()``, optional
        Checked between batches: raises
        :class:`~workbench.train._loop.TrainingCancelled`.
    progress : bool, default True

    Returns
    -------
    ModelVersion
        ``task == "detection"``; ``metrics`` holds ``map50``, ``map50_95`` (also readable as
        ``mAP50``, ``mAP50_95``), ``per_class``
        (AP50, AP50_95, n_gt, n_pred), ``evaluated_on`` and ``n_evaluated``.
    """
    settings = settings or DetectionSettings()
    if batch_size is not None:
        settings = dataclasses.replace(settings, batch_size=batch_size)
    if image_size is None:
        image_size = native_image_size(project, view)
    _check_arguments(folds, 1 if epochs is None else epochs, image_size, seed, settings)
    _check_backbone(backbone, weights)
    try:
        return _DetectionRun(project, backbone=backbone, weights=weights, folds=folds,
                             epochs=epochs, image_size=image_size, seed=seed, view=view,
                             settings=settings, group_by=group_by, group_copies=group_copies,
                             cancel=cancel, progress=progress).run()
    except KeyboardInterrupt:
        raise TrainingCancelled("training interrupted; no version was written") from None


def default_epochs(n_images: int, batch_size: int) -> int:
    """Epochs giving about :data:`DEFAULT_STEPS` optimiser steps on ``n_images``, clipped to
    :data:`EPOCH_RANGE`."""
    steps = max(1, math.ceil(n_images / max(1, batch_size)))
    least, most = EPOCH_RANGE
    return int(min(most, max(least, math.ceil(DEFAULT_STEPS / steps))))


def native_image_size(project: Project | str, view: fo.DatasetView | None = None) -> int:
    """The labelled images' median longest side, rounded up to a multiple of 32, clipped to
    64–320 (256 when no image has a recorded size)."""
    from workbench.store.project import Project

    if view is None:
        view = (Project.open(project) if isinstance(project, str) else project).dataset
    widths, heights = view.exists("ground_truth").values(["metadata.width", "metadata.height"])
    sides = [max(w, h) for w, h in zip(widths, heights, strict=True) if w and h]
    if not sides:
        return 256
    return int(min(320, max(64, 32 * math.ceil(float(np.median(sides)) / 32))))


def _check_arguments(folds: object, epochs: object, image_size: object, seed: object,
                     settings: DetectionSettings) -> None:
    for name, value, least in (("folds", folds, 2), ("epochs", epochs, 1), ("seed", seed, 0),
                               ("batch_size", settings.batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")
    check_image_size(image_size)


def _check_backbone(backbone: str, weights: Any) -> None:
    """Unknown names and weights that would need a download fail before any image is read."""
    from workbench.train.backbones import _PACKAGED, BackboneUnavailableError, _download_message

    library, arch = _resolve(backbone)
    if weights == "default" and not (library == "timm" and arch in _PACKAGED):
        raise BackboneUnavailableError(_download_message(backbone, library, arch))


# -- training one network ------------------------------------------------------------------
def _early_parameters(body: nn.Module) -> list[nn.Parameter]:
    """Parameters of the backbone layers that run before its first stride-8 output."""
    side, early, done = 64, [], [False]

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if done[0] or not isinstance(output, torch.Tensor) or output.ndim != 4:
            return
        if side // output.shape[-1] >= 8:
            done[0] = True
        else:
            early.append(module)

    owners = [m for m in body.modules() if any(True for _ in m.parameters(recurse=False))]
    hooks = [m.register_forward_hook(hook) for m in owners]
    try:
        with torch.no_grad():
            was = body.training
            body.eval()(torch.zeros(1, 3, side, side))
            body.train(was)
    finally:
        for h in hooks:
            h.remove()
    return [p for m in early for p in m.parameters(recurse=False)]


def _augment(pixels: torch.Tensor, targets: list[dict[str, torch.Tensor]], size: int,
             jitter: float, generator: torch.Generator
             ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Random horizontal flip (boxes follow) and brightness/contrast change, per image."""
    x = pixels.to(torch.float32) / 255.0
    n = len(x)
    flip = torch.rand(n, generator=generator) < 0.5
    gain = 1 + (torch.rand(n, generator=generator) * 2 - 1) * jitter
    contrast = 1 + (torch.rand(n, generator=generator) * 2 - 1) * jitter
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast.view(n, 1, 1, 1) + mean) * gain.view(n, 1, 1, 1)
    out = []
    for target, flipped in zip(targets, flip.tolist(), strict=True):
        boxes = target["boxes"]
        if flipped and len(boxes):
            boxes = torch.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0],
                                 boxes[:, 3]], dim=1)
        out.append({"boxes": boxes, "labels": target["labels"]})
    return x.clamp(0.0, 1.0), out


def fit_detector(detector: Detector, pixels: torch.Tensor,
                 targets: Sequence[dict[str, torch.Tensor]], *, epochs: int, seed: int,
                 settings: DetectionSettings, cancel: CancelFlag | None = None,
                 desc: str = "detector", progress: bool = True) -> list[float]:
    """Train ``detector`` in place on uint8 images (n, 3, S, S) and their targets.

    Targets: per image ``boxes`` (k, 4) float pixel ``x1, y1, x2, y2`` at S and ``labels``
    (k,) int64; k = 0 for an image without defects. AdamW with a linear warm-up and a
    cosine schedule, gradient clipping, batch-norm statistics frozen. Returns the mean loss
    of every epoch.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    size = detector.image_size
    backbone = detector.net.backbone.body
    frozen = {id(p) for p in _early_parameters(backbone)} if settings.freeze_early else set()
    body_params = [p for p in backbone.parameters() if id(p) not in frozen]
    for p in backbone.parameters():
        p.requires_grad_(id(p) not in frozen)
    in_body = {id(p) for p in backbone.parameters()}
    rest = [p for p in detector.parameters() if id(p) not in in_body]
    optimizer = torch.optim.AdamW([{"params": body_params, "lr": settings.backbone_lr},
                                   {"params": rest, "lr": settings.lr}],
                                  weight_decay=settings.weight_decay)
    steps = math.ceil(len(pixels) / settings.batch_size)
    scheduler = warmup_cosine(optimizer, min(settings.warmup_steps, max(1, epochs * steps // 5)),
                          epochs * steps)
    mean, std = detector.mean, detector.std
    history = []
    bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=not progress, leave=False)
    try:
        for _ in range(epochs):
            detector.train()
            freeze_batchnorm(detector)
            order = torch.randperm(len(pixels), generator=generator)
            total = 0.0
            for batch in batches(len(pixels), settings.batch_size, order=order, cancel=cancel,
                                 cancelled="training cancelled; no version was written"):
                images, batch_targets = _augment(pixels[batch], [targets[i] for i in batch],
                                                 size, settings.jitter, generator)
                losses = detector.losses((images - mean) / std, batch_targets)
                loss = losses["classification"] + losses["bbox_regression"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(detector.parameters(), settings.grad_clip)
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * len(batch)
            history.append(total / len(pixels))
            bar.set_postfix(loss=f"{history[-1]:.3f}")
            bar.update(1)
    finally:
        bar.close()
        for p in detector.parameters():
            p.requires_grad_(True)
    detector.eval()
    return history


def evaluate_detections(gt: pd.DataFrame, pred: pd.DataFrame, sample_ids: Sequence[str],
                        classes: Sequence[str], evaluated_on: str) -> dict[str, Any]:
    """map50, map50_95 and per-class AP of predictions against ground truth (box frames)."""
    from workbench.metrics.detection_metrics import detection_map, mean_ap

    table = detection_map(gt[["sample_id", "label", "x", "y", "w", "h"]],
                          pred[["sample_id", *BOX_COLUMNS]], sample_ids=list(sample_ids),
                          classes=list(classes))
    means = mean_ap(table)

    def number(value: Any) -> float | None:
        return None if value is None or not np.isfinite(value) else float(value)

    return {"evaluated_on": evaluated_on, "n_evaluated": len(sample_ids),
            "n_boxes": len(gt), "n_predicted": len(pred),
            "map50": number(means["map50"]), "map50_95": number(means["map50_95"]),
            "per_class": {row.label: {"AP50": number(row.AP50), "AP50_95": number(row.AP50_95),
                                      "n_gt": int(row.n_gt), "n_pred": int(row.n_pred)}
                          for row in table.itertuples()}}


# -- one run ---------------------------------------------------------------------------------
class _DetectionRun:
    """One call of :func:`train_detector`: data, folds, fold models, final model, version."""

    def __init__(self, project: Project | str, **options: Any) -> None:
        self.__dict__.update(options)
        self.started = time.time()
        self.project = self._open(project)
        self._read()
        if self.epochs is None:
            self.epochs = default_epochs(len(self.ids), self.settings.batch_size)

    def _open(self, project: Project | str) -> Project:
        from workbench.store.project import Project

        if isinstance(project, str):
            project = Project.open(project)
        elif not isinstance(project, Project):
            raise TypeError(f"project must be a Project or a project name, got "
                            f"{type(project).__name__}.")
        if project.task != "detection":
            raise ValueError(f"project {project.name!r} is a {project.task} project; a "
                             "detector trains on a detection project (Project.create(name, "
                             "task='detection')).")
        if self.view is not None and getattr(self.view, "dataset_name", None) != project.name:
            raise ValueError(f"view must be a view of project {project.name!r}'s dataset.")
        return project

    def _read(self) -> None:
        from workbench.store._db import SYNTHETIC_TAG
        from workbench.store.eval_sets import exclude_held_back

        collection = self.project.dataset if self.view is None else self.view
        # the frozen evaluation and golden images are never trained on (the gate scores them)
        labelled = exclude_held_back(self.project, collection).exists("ground_truth")
        ids, paths, hashes, tags, labels, boxes = labelled.values(
            ["id", "filepath", "content_hash", "tags", "ground_truth.detections.label",
             "ground_truth.detections.bounding_box"])
        rows = []
        for sid, labs, bbs in zip(ids, labels, boxes, strict=True):
            for label, (x, y, w, h) in zip(labs or [], bbs or [], strict=True):
                rows.append((sid, label, x, y, w, h))
        self.gt = pd.DataFrame(rows, columns=["sample_id", "label", "x", "y", "w", "h"])
        name = self.project.name
        if len(ids) < self.folds:
            raise ValueError(f"folds={self.folds} needs at least {self.folds} labelled images; "
                             f"project {name!r} has {len(ids)}. Label more images with "
                             "p.annotate_boxes (an image without defects is labelled [] ).")
        if self.gt.empty:
            raise ValueError(f"the {len(ids)} labelled images of project {name!r} have no "
                             "boxes; a detector needs images with defects boxed.")
        present = set(self.gt["label"])
        self.classes = [c for c in self.project.classes if c in present]
        self.classes += sorted(present - set(self.classes))
        self.ids, self.paths, self.hashes = list(ids), list(paths), list(hashes)
        self.synthetic = np.array([SYNTHETIC_TAG in (t or []) for t in tags], dtype=bool)
        size = self.image_size
        by_id: dict[str, list[tuple]] = {}
        for row in self.gt.itertuples(index=False):
            by_id.setdefault(row.sample_id, []).append(row)
        self.targets = []
        for sid in self.ids:
            rows = by_id.get(sid, [])
            xyxy = [[r.x * size, r.y * size, (r.x + r.w) * size, (r.y + r.h) * size]
                    for r in rows]
            self.targets.append({
                "boxes": torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([self.classes.index(r.label) for r in rows],
                                       dtype=torch.int64)})
        self._plan()

    def _plan(self) -> None:
        """Folds (:meth:`_strata`) grouped by ``group_by`` and near-copies; training images
        that are near-copies of held-back ones are left out."""
        from workbench.train.embeddings import EmbeddingCache
        from workbench.train.groups import away_folds, grouping, plan_folds

        values, held = grouping(self.project, self.ids, self.group_by)
        vectors = None
        if self.group_copies:  # the default backbone's embeddings, whatever the detector's
            cache = EmbeddingCache(self.project.folder / "embeddings")
            vectors = cache.embed(self.paths, progress=self.progress).vectors
            if held["filepath"]:
                held["vectors"] = cache.embed(held["filepath"], progress=False).vectors
        samples = {"sample_id": self.ids, "filepath": self.paths, "content_hash": self.hashes,
                   "split": [""] * len(self.ids), "synthetic": list(self.synthetic)}
        plan = plan_folds(self.project.folder, samples, self._strata(), n_folds=self.folds,
                          seed=self.seed, vectors=vectors, group_values=values,
                          group_by=self.group_by, held_back=held, copies=self.group_copies,
                          embedding={"backbone": DEFAULT_BACKBONE, "image_size": 224},
                          progress=self.progress)
        keep = plan.keep
        if not keep.all():
            self.ids, self.paths, self.hashes, self.targets = (
                [v for v, kept in zip(column, keep, strict=True) if kept]
                for column in (self.ids, self.paths, self.hashes, self.targets))
            self.synthetic = self.synthetic[keep]
            self.gt = self.gt[self.gt["sample_id"].isin(set(self.ids))].reset_index(drop=True)
        self.fold, self.group, self.groups = plan.fold[keep], plan.group[keep], plan.summary
        self.away = away_folds(plan)[keep]

    def _strata(self) -> np.ndarray:
        """What the folds are stratified by: each image's rarest box class (images whose
        class is too rare to spread over the folds, and images without boxes, share one)."""
        counts = self.gt["label"].value_counts()
        rarest = {}
        for row in self.gt.itertuples(index=False):
            best = rarest.get(row.sample_id)
            if best is None or counts[row.label] < counts[best]:
                rarest[row.sample_id] = row.label
        real = np.flatnonzero(~self.synthetic)
        groups = pd.Series([rarest.get(self.ids[i], "") for i in real])
        small = groups.map(groups.value_counts()) < self.folds
        groups[small] = "\0mixed"
        if len(real) < self.folds:
            raise ValueError(f"folds={self.folds} needs at least {self.folds} real labelled "
                             f"images (synthetic ones are never held out); there are "
                             f"{len(real)}.")
        strata = np.full(len(self.ids), "\0mixed", dtype=object)
        if groups.value_counts().min() >= self.folds and groups.nunique() > 1:
            strata[real] = groups.to_numpy()
        return strata

    def _config(self) -> dict[str, Any]:
        view = None if self.view is None else [repr(s) for s in self.view._stages]
        return {"task": "detection", "model": "retinanet", "backbone": self.backbone,
                "weights": str(self.weights), "folds": self.folds, "epochs": self.epochs,
                "image_size": self.image_size, "seed": self.seed, "view": view,
                "group_by": self.group_by,
                **({} if self.group_copies else {"group_copies": False}),
                "detection": dataclasses.asdict(self.settings)}

    def _detector(self, seed: int) -> Detector:
        torch.manual_seed(seed)
        detector = build_detector(self.backbone, classes=self.classes,
                                  image_size=self.image_size, weights=self.weights,
                                  fpn_channels=self.settings.fpn_channels,
                                  head_convs=self.settings.head_convs)
        config = dataclasses.replace(detector.config,
                                     score_threshold=self.settings.score_threshold,
                                     nms_iou=self.settings.nms_iou,
                                     max_detections=self.settings.max_detections)
        detector.config = config
        return detector

    def _fit(self, rows: np.ndarray, seed: int, desc: str) -> tuple[Detector, list[float]]:
        detector = self._detector(seed)
        curve = fit_detector(detector, self.pixels[rows], [self.targets[i] for i in rows],
                             epochs=self.epochs, seed=seed, settings=self.settings,
                             cancel=self.cancel, desc=desc, progress=self.progress)
        return detector, curve

    def run(self) -> ModelVersion:
        self.pixels = load_pixels(self.paths, self.image_size, progress=self.progress)
        found: list[dict[str, np.ndarray] | None] = [None] * len(self.ids)
        curves = []
        for f in tqdm(range(self.folds), desc="folds", unit="fold", disable=not self.progress):
            held = np.flatnonzero(self.fold == f)
            detector, curve = self._fit(np.flatnonzero(self.away != f), self.seed * 1000 + f,
                                        f"fold {f + 1}/{self.folds}")
            curves.append(curve)
            for i, result in zip(held, detect(detector, self.pixels[held]), strict=True):
                found[i] = result
        final, final_curve = self._fit(np.arange(len(self.ids)), self.seed * 1000 + self.folds,
                                       "final model")
        held = np.flatnonzero(self.fold >= 0)
        predictions = detection_frame([found[i] for i in held], self.classes, "sample_id",
                                      [self.ids[i] for i in held])
        fold_of = dict(zip(self.ids, self.fold.tolist(), strict=True))
        predictions["fold"] = predictions["sample_id"].map(fold_of).astype(int)
        held_ids = [self.ids[i] for i in held]
        metrics = evaluate_detections(self.gt[self.gt["sample_id"].isin(held_ids)],
                                      predictions, held_ids, self.classes, "out-of-fold")
        return self._write(final, predictions, metrics, held_ids,
                           {"folds": curves, "final": final_curve})

    def _write(self, final: Detector, predictions: pd.DataFrame, metrics: dict[str, Any],
               held_ids: list[str], curves: dict[str, Any]) -> ModelVersion:
        snapshot = pd.DataFrame({"sample_id": self.ids, "filepath": self.paths,
                                 "content_hash": self.hashes,
                                 "n_boxes": [len(t["labels"]) for t in self.targets],
                                 "fold": self.fold, "group": self.group})
        folder = self.project.folder
        parent = latest_version(folder)
        name = reserve_name(folder)
        record = VersionRecord(
            name=name, project=self.project.name, task="detection", mode="retinanet",
            classes=self.classes, config={**self._config(), "groups": self.groups},
            metrics=metrics, parent=parent,
            extra={"model": "retinanet", "detector": final.config.to_dict(),
                   "n_samples": len(self.ids), "curves": curves, "torch": torch.__version__,
                   "duration_s": round(time.time() - self.started, 1)})
        try:
            write_detection_predictions(self.project.dataset, f"pred_{name}", predictions,
                                        held_ids, self.classes)
            version_folder = write_version(folder, name, VersionFiles(
                record=record, snapshot=snapshot, predictions=predictions,
                checkpoint={"format": DETECTION_FORMAT, "task": "detection",
                            "detector": final.config.to_dict(),
                            "state_dict": {k: v.detach().clone()
                                           for k, v in final.state_dict().items()}}))
        except BaseException:
            release_name(folder, name)
            raise
        version = ModelVersion.load(version_folder, self.project.name)
        version._detector = final.eval()
        return version


__all__ = ["DetectionSettings", "detect", "detect_files", "detection_frame", "evaluate_detections",
           "fit_detector", "train_detector"]
