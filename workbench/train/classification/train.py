"""``train``: a project's labelled images in, a cross-validated model version out.

>>> mv = train(project)            # auto: probe vs fine-tune vs both, by 5-fold CV
>>> mv.metrics["accuracy"]         # out-of-fold: no image is scored by a model that saw it
>>> project.dataset.first()["pred_v1"].probabilities

Every labelled sample is held out by exactly one of ``folds`` models; those out-of-fold
probabilities become ``pred_<version>`` on the samples (what label-issue detection needs)
and the metrics. The model kept is then retrained on all labelled images.

Modes: ``probe`` fits a logistic-regression head on cached frozen embeddings (seconds);
``finetune`` starts from that head (linear probe, then fine-tune) and trains the whole
network with augmentation; its fold models, which only estimate the final model's accuracy,
train the upper stages on a tensor cache of the frozen lower stages, computed once and shared
by every fold (:mod:`workbench.train.classification.finetune`); ``auto``
cross-validates both and their average, keeps the best by out-of-fold accuracy (then log
loss), and records why, or keeps a probe without held-out mistakes and says what a
fine-tune would have cost.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import statistics
import time
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
)
from torch import nn
from tqdm.auto import tqdm

from workbench.store.safe_paths import inside, remove_inside
from workbench.train import distributed
from workbench.train.backbones import DEFAULT_BACKBONE, create_backbone
from workbench.train.classification.finetune import (
    CancelFlag,
    FinetuneSettings,
    TrainingCancelled,
    UnusableStateWarning,
    fit,
    load_pixels,
    split_body,
    trunk_features,
)
from workbench.train.classification.network import Classifier
from workbench.train.classification.probe import DEFAULT_C, fit_head, head_probabilities
from workbench.train.embeddings import EmbeddingCache
from workbench.train.groups import away_folds, grouping, plan_folds
from workbench.train.run_lock import RunInProgressError, acquire, release
from workbench.train.versions import (
    ModelVersion,
    VersionFiles,
    VersionRecord,
    checkpoint,
    latest_version,
    probability_frame,
    release_name,
    reserve_name,
    write_predictions,
    write_version,
)

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.store.project import Project

Mode = Literal["auto", "probe", "finetune"]
MODES = ("auto", "probe", "finetune")


def train(project: Project | str, backbone: str = DEFAULT_BACKBONE, mode: Mode = "auto",
          folds: int | None = None, epochs: int | None = None, image_size: int | None = None,
          seed: int = 0, view: fo.DatasetView | None = None, *, task: str | None = None,
          normal: str | None = None, group_by: str | None = None, group_copies: bool = True,
          model: str = "auto", weights: str | None = "default", resume: bool = False,
          settings: FinetuneSettings | Any | None = None, probe_c: float = DEFAULT_C,
          cancel: CancelFlag | None = None, progress: bool = True,
          device: str = "auto") -> ModelVersion | None:
    """Train a new model version of a project on its labelled images.

    Parameters
    ----------
    project : Project or str
        The project, or its name (what ``torchrun`` workers pass: only rank 0 opens it).
    backbone, weights
        As :func:`workbench.train.backbones.create_backbone` takes them.
    mode : {"auto", "probe", "finetune"}, default "auto"
        Classification only.
    folds : int, optional
        k >= 2: k-fold cross-validation, stratified by class; every class needs at least k
        labelled images. 1: train on the ``train`` split, validate on ``val``
        (classification only). By default 5, or fewer when the smallest class has fewer
        labelled images (down to 2; the version's ``config["folds_reason"]`` and the
        progress output say so). A detector: 3.
    epochs : int, default 15 (detection: 12–30, about 400 optimiser steps)
        Epochs of the final fine-tuned model. The fold models, which only estimate how it
        does on unseen images, train ``FinetuneSettings.fold_epochs`` (10, at most
        ``epochs``) on a feature cache of their 4 frozen lower stages (``fold_frozen_blocks``).
        Folds trained like the final model (``fold_frozen_blocks=None, fold_epochs=None``)
        stop early on their held-out images (``patience``) and the final model then trains
        their median best epoch. A detector trains every model for ``epochs``.
    image_size : int, default 224 (detection: the images' own size, see
        :func:`workbench.train.detection.train.train_detector`)
        Side of the square each image is resized to.
    seed : int, default 0
        Folds, initialisation, augmentation and batch order; a CPU run is reproducible.
    view : fiftyone view of the project, optional
        Train on these samples only (still only the labelled ones).
    task : {"classification", "detection", "anomaly"}, optional
        The project's own task by default; naming the other one is an error. A
        classification project may train ``"anomaly"``: a patch-feature memory bank of its
        ``normal`` images only (:func:`workbench.train.anomaly.train.train_anomaly`).
    normal : str, optional
        ``task="anomaly"`` only: the class of good parts (``"ok"`` by default).
    group_by : str, optional
        A slice or metadata field (a part, batch or serial id): images sharing a value stay
        in one fold. Near-copies (the same file, a re-encoding, a mirror, a small crop) are
        always kept together, and training images that are near-copies of the frozen
        evaluation or golden images are left out; ``version.config["groups"]`` says how
        groups were formed (:mod:`workbench.train.groups`). Every task takes it.
    group_copies : bool, default True
        ``False`` groups by ``group_by`` only: for measuring how optimistic ungrouped folds
        are (``bench/honest.py``), or when different parts that merely look alike chain
        into one group larger than a fold (the error says so).
    model : {"auto", "retinanet"}, default "auto"
        The detector architecture (``"auto"`` is RetinaNet); classification takes only
        ``"auto"`` (its choice is ``mode``). A detection run is
        :func:`workbench.train.detection.train.train_detector`.
    resume : bool, default False
        Go on from an interrupted or cancelled run with the same arguments and labels
        (classification only). Saved state is read as tensors and plain values only, never
        as code; a state file Loupe did not write is ignored with an
        :class:`~workbench.train.classification.finetune.UnusableStateWarning` and that part trains
        again.
    settings : FinetuneSettings or DetectionSettings, optional
        Learning rates, batch size, patience, label smoothing; a detector's
        :class:`~workbench.train.detection.train.DetectionSettings`.
    probe_c : float, default 1.0
        Inverse L2 strength of the probe's logistic regression.
    cancel : object with ``is_set()``, optional
        Checked between batches (a ``threading.Event`` a Stop button sets): raises
        :class:`TrainingCancelled`. Interrupting the kernel does the same.
    progress : bool, default True
        Progress bars; a fine-tune's shows the epochs of the whole run and the time left.
    device : str, default "auto"
        Where a fine-tune trains: ``"auto"`` is the GPU when torch sees one (``"cuda"``),
        else the CPU; or any torch device name. Nothing requires a GPU; the version records
        the device (``record["device"]``).

    Returns
    -------
    ModelVersion
        ``None`` on the other ranks of a ``torchrun`` job.

    Raises
    ------
    RunInProgressError
        Another process is training this project with the same settings and labels (a
        classification run holds a lock beside its saved state; the OS releases it when
        that process ends, however it ends).
    """
    distributed.setup()
    task = _resolve_task(project, task, model)
    if normal is not None and task != "anomaly":
        raise ValueError(f"normal={normal!r} applies to task='anomaly'; a {task} model learns "
                         "every labelled class.")
    if task == "anomaly":
        return _train_anomaly(project, backbone=backbone, weights=weights, mode=mode,
                              folds=folds, epochs=epochs, image_size=image_size, seed=seed,
                              view=view, normal=normal, resume=resume, settings=settings,
                              group_by=group_by, group_copies=group_copies,
                              progress=progress)
    if task == "detection":
        if distributed.active():
            raise ValueError("a detector trains in one process; run it without torchrun.")
        from workbench.train.detection.train import DetectionSettings, train_detector

        for name, value, default in (("mode", mode, "auto"), ("resume", resume, False)):
            if value != default:
                raise ValueError(f"{name}={value!r} applies to classification; a detector "
                                 "takes backbone, folds, epochs, image_size, seed, view, "
                                 "weights and settings (a DetectionSettings).")
        if settings is not None and not isinstance(settings, DetectionSettings):
            raise ValueError("a detector's settings are a workbench.train.detection.train."
                             f"DetectionSettings, got {type(settings).__name__}.")
        return train_detector(project, backbone=backbone, weights=weights, settings=settings,
                              folds=3 if folds is None else folds,
                              epochs=epochs,
                              image_size=image_size,
                              seed=seed, view=view, group_by=group_by,
                              group_copies=group_copies, cancel=cancel, progress=progress)
    epochs = DEFAULT_EPOCHS if epochs is None else epochs
    image_size = 224 if image_size is None else image_size
    _check_arguments(mode, DEFAULT_FOLDS if folds is None else folds, epochs, image_size, seed)
    settings = settings or FinetuneSettings()
    try:
        return _Run(project, backbone=backbone, weights=weights, mode=mode, folds=folds,
                    epochs=epochs, image_size=image_size, seed=seed, view=view,
                    resume=resume, settings=settings, probe_c=probe_c, cancel=cancel,
                    group_by=group_by, group_copies=group_copies, progress=progress,
                    device=resolve_device(device)).run()
    except KeyboardInterrupt:
        raise TrainingCancelled("training interrupted; finished epochs and folds are kept, "
                                "resume with train(..., resume=True)") from None


def _train_anomaly(project: Project | str, *, mode: str, epochs: int | None, resume: bool,
                   settings: Any, normal: str | None, **options: Any) -> ModelVersion:
    """``task="anomaly"``: :func:`workbench.train.anomaly.train.train_anomaly`."""
    if distributed.active():
        raise ValueError("an anomaly model trains in one process; run it without torchrun.")
    for name, value, default in (("mode", mode, "auto"), ("epochs", epochs, None),
                                 ("resume", resume, False), ("settings", settings, None)):
        if value != default:
            raise ValueError(f"{name}={value!r} does not apply to an anomaly model (nothing "
                             "is trained by gradient); it takes normal, backbone, weights, "
                             "folds, image_size, seed and view.")
    from workbench.train.anomaly.train import train_anomaly

    return train_anomaly(project, normal="ok" if normal is None else normal, **options)


TASKS = ("classification", "detection", "anomaly")
MODELS = {"classification": ("auto",), "detection": ("auto", "retinanet"),
          "anomaly": ("auto", "patchcore")}


def _resolve_task(project: Project | str, task: str | None, model: str) -> str:
    """The task to train: the project's, checked against ``task`` and ``model``."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {list(TASKS)}.")
    if model not in {*MODELS["detection"], *MODELS["anomaly"]}:
        raise ValueError(f"model={model!r} is not one of "
                         f"{sorted({*MODELS['detection'], *MODELS['anomaly']})}.")
    own = None
    if distributed.rank() == 0:
        from workbench.store.project import Project

        opened = Project.open(project) if isinstance(project, str) else project
        own = getattr(opened, "task", "classification") if isinstance(opened, Project) \
            else None
    own = distributed.broadcast(own)
    name = project if isinstance(project, str) else getattr(project, "name", project)
    if task == "anomaly" and own == "classification":
        if model not in MODELS["anomaly"]:
            raise ValueError(f"model={model!r}: an anomaly version is model='auto' (a "
                             "patch-feature memory bank, 'patchcore').")
        return task
    if task is not None and own is not None and task != own:
        raise ValueError(f"task={task!r}, but project {name!r} is a {own} project; train it "
                         f"with task={own!r} (or leave task out).")
    task = task or own or "classification"
    if model not in MODELS[task]:
        raise ValueError(f"model={model!r} is a detector; a {task} project trains with "
                         "model='auto' (and mode='auto', 'probe' or 'finetune').")
    return task


def _check_arguments(mode: object, folds: object, epochs: object, image_size: object,
                     seed: object) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {list(MODES)}.")
    for name, value, least in (("folds", folds, 1), ("epochs", epochs, 1),
                               ("image_size", image_size, 16), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")


def evaluate(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str],
             evaluated_on: str) -> dict[str, Any]:
    """Metrics of probabilities (n, n_classes) against integer labels (n,)."""
    predicted = probs.argmax(axis=1)
    ids = list(range(len(classes)))
    return {
        "evaluated_on": evaluated_on, "n_evaluated": len(labels),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=ids, average="macro",
                                   zero_division=0)),
        "log_loss": float(log_loss(labels, np.clip(probs, 1e-12, 1), labels=ids)),
        "per_class": classification_report(labels, predicted, labels=ids,
                                           target_names=list(classes), output_dict=True,
                                           zero_division=0),
        "confusion": confusion_matrix(labels, predicted, labels=ids).tolist(),
    }


#: Folds of the default cross-validation when every class has that many labelled images.
DEFAULT_FOLDS = 5
#: Most epochs of a classification fine-tune when ``train`` names none.
DEFAULT_EPOCHS = 15


def resolve_device(device: str) -> str:
    """``"auto"``: ``"cuda"`` when torch sees a GPU, else ``"cpu"``; other names checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device ({error}); use 'auto', "
                         "'cpu' or 'cuda'.") from None
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but torch sees no GPU on this machine; use "
                         "device='auto' (the GPU when there is one) or 'cpu'.")
    return device


def default_folds(counts: pd.Series, classes: list[str]) -> tuple[int, str | None]:
    """Folds for a run that names none: :data:`DEFAULT_FOLDS`, or as many as the smallest
    class has real labelled images (at least 2), with the reason in words when fewer."""
    smallest = min(classes, key=lambda c: int(counts.get(c, 0)))
    n = int(counts.get(smallest, 0))
    if n >= DEFAULT_FOLDS:
        return DEFAULT_FOLDS, None
    if n < 2:
        raise ValueError(
            f"class {smallest!r} has {n} real labelled image{'s' if n != 1 else ''}: a model "
            "that holds it out would never see that class, so nothing can score it. Label "
            "at least one more image of it (or remove it), then train again.")
    return n, (f"{n} folds instead of {DEFAULT_FOLDS}: {smallest!r} has only {n} labelled "
               "images (each image is still scored by a model that did not train on it). "
               f"Label {DEFAULT_FOLDS - n} more of {smallest!r} for {DEFAULT_FOLDS} folds.")


class _Run:
    """One call of :func:`train`: data, folds, candidates, final model, version."""

    def __init__(self, project: Project | str, **options: Any) -> None:
        self.__dict__.update(options)
        self.started = time.time()
        self.is_main = distributed.rank() == 0
        job = self._read_project(project) if self.is_main else None
        job = distributed.broadcast(job)
        self.project, self.project_name = (project if self.is_main else None), job["name"]
        self.folder, self.parent = Path(job["folder"]), job["parent"]
        self.samples, self.classes = job["samples"], job["classes"]
        self.folds, self.folds_reason = job["folds"], job["folds_reason"]
        self.group_values, self.held_back = job["group_values"], job["held_back"]
        self.y = np.array([self.classes.index(label) for label in self.samples["label"]])
        self.config = self._config()
        self.run_dir = self.folder / "models" / ".runs" / self._key()

    # -- inputs ------------------------------------------------------------------------
    def _read_project(self, project: Project | str) -> dict[str, Any]:
        from workbench.store import _db as store
        from workbench.store.project import Project

        if isinstance(project, str):
            project = Project.open(project)
        elif not isinstance(project, Project):
            raise TypeError(f"project must be a Project or a project name, got "
                            f"{type(project).__name__}.")
        if self.view is not None and getattr(self.view, "dataset_name", None) != project.name:
            raise ValueError(f"view must be a view of project {project.name!r}'s dataset.")
        from workbench.store.eval_sets import exclude_held_back

        # the frozen evaluation and golden images are never trained on (the gate scores them)
        samples = store.labelled_samples(exclude_held_back(
            project, project.dataset if self.view is None else self.view))
        real = [label for label, fake in zip(samples["label"], samples["synthetic"], strict=True)
                if not fake]
        counts = pd.Series(real, dtype=object).value_counts()
        present = set(samples["label"])
        classes = [c for c in project.classes if c in present]
        classes += sorted(present - set(classes))
        reason = None
        if self.folds is None:
            self.folds, reason = default_folds(counts, classes)
            if reason and self.progress:
                print(f"training {project.name!r}: {reason}", flush=True)
        self._check_counts(project.name, counts, classes, samples["split"])
        group_values, held_back = grouping(project, samples["sample_id"], self.group_by)
        return {"name": project.name, "folder": str(project.folder), "samples": samples,
                "classes": classes, "parent": latest_version(project.folder),
                "folds": self.folds, "folds_reason": reason, "group_values": group_values,
                "held_back": held_back}

    def _check_counts(self, name: str, counts: pd.Series, classes: list[str],
                      splits: list[str]) -> None:
        if len(classes) < 2:
            raise ValueError(f"project {name!r} has labelled images of {len(classes)} class(es) "
                             f"({', '.join(classes) or 'none'}); training needs at least 2.")
        if self.folds >= 2:
            few = {c: int(counts.get(c, 0)) for c in classes
                   if counts.get(c, 0) < self.folds}
            if few:
                listed = ", ".join(f"{c!r} has {n}" for c, n in few.items())
                raise ValueError(f"folds={self.folds} needs at least {self.folds} labelled "
                                 f"images per class: {listed} (synthetic ones do not "
                                 "count). Label more, or pass a smaller folds (1 uses the "
                                 "project's train/val split).")
        elif "val" not in splits or "train" not in splits:
            raise ValueError("folds=1 trains on the 'train' split and validates on 'val', but "
                             f"the labelled images of {name!r} are not in both splits; pass "
                             "folds >= 2.")

    def _plan_folds(self) -> None:
        """Folds grouped by ``group_by`` and near-copies (:mod:`workbench.train.groups`);
        training images that are near-copies of held-back ones are left out here."""
        plan = None
        if self.is_main:
            held = dict(self.held_back)
            if held["filepath"] and self.vectors is not None:
                held["vectors"] = EmbeddingCache(self.folder / "embeddings").embed(
                    held["filepath"], backbone=self.backbone, weights=self.weights,
                    image_size=self.image_size, progress=False).vectors
            plan = plan_folds(self.folder, self.samples, self.y,
                              n_folds=self.folds, seed=self.seed, vectors=self.vectors,
                              group_values=self.group_values, group_by=self.group_by,
                              held_back=held, copies=self.group_copies,
                              embedding={"backbone": self.backbone,
                                         "image_size": self.image_size},
                              progress=self.progress)
        plan = distributed.broadcast(plan)
        keep = plan.keep
        if not keep.all():
            self.samples = {k: [v for v, kept in zip(values, keep, strict=True) if kept]
                            for k, values in self.samples.items()}
            self.y = self.y[keep]
            if self.vectors is not None:
                self.vectors = self.vectors[keep]
            if self.progress and self.is_main:
                print(f"training {self.project_name!r}: left out {int((~keep).sum())} "
                      "image(s) that are near-copies of frozen evaluation or golden images",
                      flush=True)
        self.fold, self.away = plan.fold[keep], away_folds(plan)[keep]
        self.group, self.groups = plan.group[keep], plan.summary

    def _config(self) -> dict[str, Any]:
        view = None if self.view is None else [repr(s) for s in self.view._stages]
        return {"backbone": self.backbone, "weights": str(self.weights), "mode": self.mode,
                "folds": self.folds, "epochs": self.epochs, "image_size": self.image_size,
                "seed": self.seed, "view": view, "probe_c": self.probe_c,
                "group_by": self.group_by,
                **({} if self.group_copies else {"group_copies": False}),
                **({"folds_reason": self.folds_reason} if self.folds_reason else {}),
                "finetune": dataclasses.asdict(self.settings)}

    def _key(self) -> str:
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        for column in ("sample_id", "content_hash", "label"):
            digest.update("\n".join(map(str, self.samples[column])).encode())
        return digest.hexdigest()[:16]

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> ModelVersion | None:
        """The run, holding its lock: one process at a time trains one run key."""
        lock, refused = None, None
        if self.is_main:
            inside(self.folder, self.run_dir, what="training state folder")
            try:
                lock = acquire(self.run_dir.with_name(f"{self.run_dir.name}.lock"),
                               what=f"training project {self.project_name!r} with these "
                                    "settings and labels")
            except RunInProgressError as error:
                refused = str(error)
        refused = distributed.broadcast(refused)
        if refused is not None:
            raise RunInProgressError(refused)
        try:
            return self._locked_run()
        finally:
            if lock is not None:
                release(self.run_dir.with_name(f"{self.run_dir.name}.lock"), lock)

    def _locked_run(self) -> ModelVersion | None:
        if self.is_main:
            if not self.resume:
                remove_inside(self.folder, self.run_dir, what="training state folder")
            self.run_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        self._prepare_backbone()
        self._plan_folds()
        candidates: dict[str, np.ndarray] = {}
        held = self.fold >= 0
        evaluated_on = "out-of-fold" if self.folds >= 2 else "validation"
        if self.mode in ("probe", "auto"):
            candidates["probe"] = self._probe_oof()
        self.skipped = None
        if self.mode == "auto":
            probe = evaluate(candidates["probe"][held], self.y[held], self.classes,
                             evaluated_on)
            self.skipped = self._finetune_cannot_pay(probe)
        if self.mode == "finetune" or (self.mode == "auto" and self.skipped is None):
            started = time.perf_counter()
            candidates["finetune"] = self._finetune_oof()
            self.finetune_seconds = time.perf_counter() - started
        if self.mode == "auto" and self.skipped is None:
            candidates["ensemble"] = (candidates["probe"] + candidates["finetune"]) / 2
        scores = {name: evaluate(p[held], self.y[held], self.classes, evaluated_on)
                  for name, p in candidates.items()}
        chosen, selection = self._choose(scores)
        members = self._final_members(chosen)
        if not self.is_main:
            distributed.barrier()
            return None
        version = self._write(chosen, candidates[chosen], scores[chosen], selection, members)
        with contextlib.suppress(OSError):  # the version is written; leftovers go next time
            remove_inside(self.folder, self.run_dir, what="training state folder")
        distributed.barrier()
        return version

    def _prepare_backbone(self) -> None:
        with torch.random.fork_rng(devices=[]):  # a random body is the seed's, every time
            torch.manual_seed(self.seed)
            body, spec = create_backbone(self.backbone, weights=self.weights)
        self.spec, self.pretrained = spec, body.state_dict()
        if spec.weights_source == "random" and self.mode != "finetune":
            raise ValueError(f"mode={self.mode!r} needs pretrained weights (a probe on a "
                             "random network learns nothing); pass weights='default' or a "
                             "file, or mode='finetune'.")
        vectors = None
        if self.is_main and spec.weights_source != "random":
            vectors = EmbeddingCache(self.folder / "embeddings").embed(
                self.samples["filepath"], backbone=self.backbone, weights=self.weights,
                image_size=self.image_size, progress=self.progress).vectors
        self.vectors = distributed.broadcast(vectors)
        self.pixels: torch.Tensor | None = None

    def _body(self) -> nn.Module:
        body, _ = create_backbone(self.backbone, weights=None)
        body.load_state_dict(self.pretrained)
        return body

    def _head(self, rows: np.ndarray, seed: int) -> nn.Linear:
        """A probe head fitted on ``rows`` (random from ``seed`` without pretrained
        features)."""
        if self.vectors is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return nn.Linear(self.spec.num_features, len(self.classes))
        return fit_head(self.vectors[rows], self.y[rows], len(self.classes), c=self.probe_c)

    def _member(self, head: nn.Linear) -> nn.Sequential:
        """The pretrained body with a copy of ``head``."""
        return nn.Sequential(self._body(), copy.deepcopy(head))

    def _probe_oof(self) -> np.ndarray:
        probs = np.full((len(self.y), len(self.classes)), np.nan, dtype=np.float32)
        for f in range(self.folds):
            held, train = self.fold == f, self.away != f
            head = fit_head(self.vectors[train], self.y[train], len(self.classes),
                            c=self.probe_c)
            probs[held] = head_probabilities(head, self.vectors[held])
        return probs

    def _load_pixels(self) -> torch.Tensor:
        if self.pixels is None:
            self.pixels = load_pixels(self.samples["filepath"], self.image_size,
                                      progress=self.progress)
        return self.pixels

    @property
    def fold_epochs(self) -> int:
        """Epochs of each fold model: ``FinetuneSettings.fold_epochs``, at most ``epochs``."""
        return min(self.settings.fold_epochs or self.epochs, self.epochs)

    @property
    def fold_frozen_blocks(self) -> int:
        """Frozen stages of each fold model (``fold_frozen_blocks``, else ``frozen_blocks``)."""
        fold = self.settings.fold_frozen_blocks
        return self.settings.frozen_blocks if fold is None else fold

    def _features(self, frozen_blocks: int) -> torch.Tensor | None:
        """The frozen trunk's features of every labelled image and view, computed once per
        run and shared by every fit that freezes ``frozen_blocks`` stages; ``None``: train
        on pixels (0, a body :func:`split_body` cannot split, or a ``torchrun`` job)."""
        self.features: dict[int, torch.Tensor | None] = getattr(self, "features", {})
        if frozen_blocks not in self.features:
            parts = split_body(self._body(), frozen_blocks)
            self.features[frozen_blocks] = None
            if parts is not None and not distributed.active():
                self.features[frozen_blocks] = trunk_features(
                    parts[0], self._load_pixels(), settings=self.settings,
                    mean=self.spec.mean, std=self.spec.std, seed=self.seed,
                    device=self.device, progress=self.progress)
        return self.features[frozen_blocks]

    def _fit(self, head: nn.Linear, rows: np.ndarray, held: np.ndarray | None, *,
             epochs: int, seed: int, state: Path, desc: str, frozen_blocks: int) -> Any:
        """One fine-tune from ``head`` on ``rows``, validated on ``held`` (indices); on the
        cache of ``frozen_blocks`` frozen stages where there is one (every epoch then runs:
        early stopping on a few held-out images picked bad epochs for the cache)."""
        features = self._features(frozen_blocks)
        pixels = self._load_pixels() if features is None else None
        cached = features is not None
        settings = dataclasses.replace(
            self.settings, frozen_blocks=frozen_blocks,
            patience=None if cached else self.settings.patience)
        return fit(self._member(head), None if cached else pixels[rows], self.y[rows],
                   features=features[:, rows] if cached else None,
                   val_pixels=None if cached or held is None else pixels[held],
                   val_features=features[0, held] if cached and held is not None else None,
                   val_labels=None if held is None else self.y[held],
                   settings=settings, epochs=epochs, seed=seed, mean=self.spec.mean,
                   std=self.spec.std, state_path=state, cancel=self.cancel, desc=desc,
                   progress=self.progress, device=self.device, bar=self.bar)

    def _finetune_oof(self) -> np.ndarray:
        probs = np.full((len(self.y), len(self.classes)), np.nan, dtype=np.float32)
        self.best_epochs: list[int] = []
        self.curves: list[list[dict[str, float]]] = []
        # one bar for the folds and the final model, so the time left is the run's
        self.bar = tqdm(total=self.folds * self.fold_epochs + self.epochs, unit="epoch",
                        desc="fine-tuning (folds, final model)",
                        disable=not (self.progress and self.is_main))
        for f in range(self.folds):
            done = self.run_dir / f"finetune_fold{f}.npz"
            held = self.fold == f
            saved = self._read_fold(done, int(held.sum())) if done.is_file() else None
            if saved is not None:  # from an earlier, interrupted run
                probs[held], best, curve = saved
                self.curves.append(curve)
                self.bar.update(self.fold_epochs)
            else:
                state = self.run_dir / f"finetune_fold{f}.state.pt"
                result = self._fit(self._head(self.away != f, self.seed + f),
                                   np.flatnonzero(self.away != f), np.flatnonzero(held),
                                   epochs=self.fold_epochs, seed=self.seed + f, state=state,
                                   desc=f"fold {f + 1}/{self.folds}",
                                   frozen_blocks=self.fold_frozen_blocks)
                self.bar.update(self.fold_epochs - result.epochs_run)  # stopped early
                probs[held], best = result.val_probs, result.best_epoch
                self.curves.append(result.curve)
                if self.is_main:
                    partial = done.with_name(f".{done.name}.partial.npz")
                    partial.unlink(missing_ok=True)  # never write through a planted link
                    np.savez(partial, probs=probs[held], best_epoch=best,
                             curve=json.dumps(result.curve))
                    partial.replace(done)
                    state.unlink(missing_ok=True)
            self.best_epochs.append(best)
        return probs

    def _read_fold(self, path: Path, n_held: int
                   ) -> tuple[np.ndarray, int, list[dict[str, float]]] | None:
        """A finished fold's probabilities, best epoch and curve; ``None`` (with a warning)
        for a file that is not one (read without pickle: no code in it runs)."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                probs = np.asarray(saved["probs"], dtype=np.float32)
                best = int(saved["best_epoch"])
                curve = json.loads(str(saved["curve"]))
            if probs.shape != (n_held, len(self.classes)) or not 1 <= best <= self.fold_epochs \
                    or not isinstance(curve, list):
                raise ValueError("not this fold's results")
        except (OSError, EOFError, KeyError, IndexError, TypeError, ValueError,
                zipfile.BadZipFile) as error:
            warnings.warn(f"ignored the saved fold results {str(path)!r} ({error}); this fold "
                          "trains again.", UnusableStateWarning, stacklevel=2)
            return None
        return probs, best, curve

    def _finetune_cannot_pay(self, probe: dict[str, Any]) -> str | None:
        """Why ``auto`` keeps the probe without fine-tuning (``None``: a fine-tune could
        pay off, so it runs): the probe's held-out predictions leave nothing to gain."""
        if probe["accuracy"] < 1.0:
            return None
        return (f"the probe made no {probe['evaluated_on']} mistake on "
                f"{probe['n_evaluated']} images, so a fine-tune could not be more accurate")

    def _finetune_cost(self) -> float:
        """Seconds a fine-tune of this run (folds and final model) would take on this
        machine, from one timed training step of each kind (and one trunk batch for a
        cache)."""
        n, size = len(self.y), self.image_size
        batch = min(self.settings.batch_size, n)
        x = torch.randn(batch, 3, size, size, device=self.device).contiguous(
            memory_format=torch.channels_last)
        seconds, cached = 0.0, set()
        for frozen_blocks, image_steps in (
                (self.fold_frozen_blocks, self.fold_epochs * n * max(1, self.folds - 1)),
                (self.settings.frozen_blocks, self.epochs * n)):
            body = self._body().to(self.device)
            head = nn.Linear(self.spec.num_features, len(self.classes)).to(self.device)
            parts = None if distributed.active() else split_body(body, frozen_blocks)
            inputs = x
            if parts is not None:
                started = time.perf_counter()
                with torch.no_grad():
                    inputs = parts[0].eval()(x)
                if frozen_blocks not in cached:  # one cache serves folds and final alike
                    cached.add(frozen_blocks)
                    seconds += (time.perf_counter() - started) * self.settings.views * n \
                        / batch
            network = nn.Sequential(body if parts is None else parts[1], head).train()
            for _ in range(2):  # the second step is the one timed (the first allocates)
                started = time.perf_counter()
                network(inputs).sum().backward()
                step_seconds = time.perf_counter() - started
            seconds += step_seconds * image_steps / batch
        return seconds

    def _choose(self, scores: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
        if self.mode != "auto":
            return self.mode, None
        ranked = sorted(scores, key=lambda n: (-scores[n]["accuracy"], scores[n]["log_loss"]))
        chosen = ranked[0]
        figures = ", ".join(f"{n} {scores[n]['accuracy']:.3f} (log loss "
                            f"{scores[n]['log_loss']:.3f})" for n in ranked)
        reason = (f"{chosen}: highest {scores[chosen]['evaluated_on']} accuracy, ties broken by "
                  f"lower log loss; {figures}")
        cost: dict[str, Any] = {}
        if self.skipped is not None:
            seconds = round(self._finetune_cost(), 1)
            reason = (f"probe: {self.skipped}; {figures}. A fine-tune was not run: it would "
                      f"have taken about {seconds:.0f} s here (estimated from one timed "
                      "step).")
            cost = {"finetune_seconds": seconds, "finetune_estimated": True,
                    "finetune_skipped": self.skipped}
        else:
            cost = {"finetune_seconds": round(self.finetune_seconds, 1),
                    "finetune_estimated": False}
            if chosen == "probe":
                reason += (f". The fine-tune took {self.finetune_seconds:.0f} s and was not "
                           "better.")
        return chosen, {"chosen": chosen, "reason": reason,
                        "candidates": {n: {k: scores[n][k] for k in
                                           ("accuracy", "macro_f1", "log_loss")}
                                       for n in scores}, **cost}

    def _final_members(self, chosen: str) -> list[tuple[str, str, nn.Module]]:
        head = self._head(np.ones(len(self.y), dtype=bool), self.seed + self.folds)  # serves both
        members = []
        if chosen in ("probe", "ensemble"):
            members.append(("probe", self.spec.name, self._member(head).eval()))
        if chosen in ("finetune", "ensemble"):
            like_folds = (self.fold_epochs == self.epochs and self._features(
                self.fold_frozen_blocks) is self._features(self.settings.frozen_blocks))
            self.final_epochs = max(1, round(statistics.median(self.best_epochs))) \
                if like_folds and self.settings.patience is not None else self.epochs
            self.bar.total = self.bar.n + self.final_epochs
            self.bar.refresh()
            result = self._fit(head, np.arange(len(self.y)), None, epochs=self.final_epochs,
                               seed=self.seed + self.folds,
                               state=self.run_dir / "finetune_final.state.pt",
                               desc="final model", frozen_blocks=self.settings.frozen_blocks)
            members.append(("finetune", self.spec.name, result.member))
        if getattr(self, "bar", None) is not None:
            self.bar.close()
        return members

    def _write(self, chosen: str, oof: np.ndarray, metrics: dict[str, Any],
               selection: dict[str, Any] | None,
               members: list[tuple[str, str, nn.Module]]) -> ModelVersion:
        held = self.fold >= 0
        predictions = probability_frame(oof[held], self.classes)
        predictions.insert(0, "sample_id", np.array(self.samples["sample_id"])[held])
        predictions["fold"] = self.fold[held]
        snapshot = pd.DataFrame({k: self.samples[k] for k in
                                 ("sample_id", "filepath", "content_hash", "label")})
        snapshot["fold"], snapshot["group"] = self.fold, self.group
        classifier = Classifier([m for _, _, m in members], image_size=self.image_size,
                                mean=self.spec.mean, std=self.spec.std, classes=self.classes)
        name = reserve_name(self.folder)
        record = VersionRecord(
            name=name, project=self.project_name, task="classification", mode=chosen,
            classes=self.classes, config={**self.config, "groups": self.groups},
            metrics=metrics, parent=self.parent,
            extra={"selection": selection, "members": [kind for kind, _, _ in members],
                   "spec": dataclasses.asdict(self.spec), "n_samples": len(self.y),
                   "best_epochs": getattr(self, "best_epochs", None),
                   "final_epochs": getattr(self, "final_epochs", None),
                   "curves": getattr(self, "curves", None),
                   "world_size": distributed.world_size(), "torch": torch.__version__,
                   "device": self.device,
                   "feature_cache": self._cache_record(),
                   "duration_s": round(time.time() - self.started, 1)})
        try:
            dataset = self._dataset()
            write_predictions(dataset, f"pred_{name}", predictions, self.classes)
            folder = write_version(self.folder, name, VersionFiles(
                record=record, snapshot=snapshot, predictions=predictions,
                checkpoint=checkpoint(members, classes=self.classes,
                                      image_size=self.image_size, mean=self.spec.mean,
                                      std=self.spec.std)))
        except BaseException:
            release_name(self.folder, name)
            raise
        version = ModelVersion.load(folder, self.project_name)
        version._classifier = classifier.eval()
        return version

    def _cache_record(self) -> dict[str, Any]:
        """Which fits trained on a feature cache: {"folds": ..., "final_model": ...}, each
        ``{"frozen_blocks": k, "views": v}`` or ``None`` (pixels, or not trained)."""
        features = getattr(self, "features", {})
        record: dict[str, Any] = {"folds": None, "final_model": None}
        for role, k, ran in (("folds", self.fold_frozen_blocks, hasattr(self, "best_epochs")),
                             ("final_model", self.settings.frozen_blocks,
                              hasattr(self, "final_epochs"))):
            if ran and features.get(k) is not None:
                record[role] = {"frozen_blocks": k, "views": len(features[k])}
        return record

    def _dataset(self) -> fo.Dataset:
        from workbench.store.project import Project

        project = self.project
        return (project if isinstance(project, Project) else Project.open(project)).dataset


__all__ = ["MODES", "FinetuneSettings", "RunInProgressError", "TrainingCancelled", "evaluate",
           "train"]
