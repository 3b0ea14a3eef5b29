"""Model versions: what a training run leaves behind, on disk under the project's folder.

``<project folder>/models/v3/`` holds ``version.json`` (config, metrics, parent, why
``auto`` chose its mode), ``model.pt`` (the
:class:`~workbench.train.classification.network.Classifier`'s
members), ``snapshot.parquet`` (sample ids + labels trained on) and
``predictions.parquet`` (out-of-fold or validation probabilities). A version folder
appears by one atomic rename once everything in it is written, so a crash never leaves a
half-written version.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from workbench.metrics.calibration import apply_temperature
from workbench.train.classification.network import Classifier, build_member
from workbench.train.ray_engine import Engine, RayCluster, on_files, resolve_engine

if TYPE_CHECKING:
    import fiftyone as fo

FORMAT_VERSION = 1
#: ``format`` of a detector's ``model.pt`` (its config and one state dict).
DETECTION_FORMAT = 2
_NAME = re.compile(r"^v(\d+)$")


def models_dir(project_folder: Path) -> Path:
    """Where a project's versions live."""
    return Path(project_folder) / "models"


def version_names(project_folder: Path) -> list[str]:
    """Complete versions (folders with a ``version.json``), oldest first."""
    folder = models_dir(project_folder)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir()
             if _NAME.match(p.name) and (p / "version.json").is_file()]
    return sorted(names, key=lambda n: int(n[1:]))


def latest_version(project_folder: Path) -> str | None:
    """The newest complete version's name, None when there is none."""
    names = version_names(project_folder)
    return names[-1] if names else None


def reserve_name(project_folder: Path) -> str:
    """Claim the next free ``v<n>`` by creating its (empty) folder; safe across processes."""
    folder = models_dir(project_folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        try:
            (folder / f"v{number}").mkdir()
            return f"v{number}"
        except FileExistsError:
            number += 1


#: The tasks a version can be trained for.
TASKS = ("classification", "detection", "anomaly")
#: The files every version folder holds, by role.
FILES = {"checkpoint": "model.pt", "snapshot": "snapshot.parquet",
         "predictions": "predictions.parquet"}
#: Metric names of earlier releases → the one vocabulary (both are readable).
_METRIC_ALIASES = {"mAP50": "map50", "mAP50_95": "map50_95"}


@dataclass
class VersionRecord:
    """What ``version.json`` holds: the fields every version has, whatever its task, and
    the trainer's own extras (members, spec, curves, detector config, …).

    Both trainers build one; :meth:`from_json` reads files of every earlier release (a
    record without ``task`` is a classifier's; ``mAP50`` is read as ``map50``).
    """

    name: str
    project: str
    task: str
    mode: str
    classes: list[str]
    config: dict[str, Any]
    metrics: dict[str, Any]
    parent: str | None = None
    created: str = field(default_factory=lambda: pd.Timestamp.now(tz="UTC").isoformat())
    files: dict[str, str] = field(default_factory=lambda: dict(FILES))
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"version {self.name!r}: task must be one of {', '.join(TASKS)}, "
                             f"got {self.task!r}")

    def to_json(self) -> dict[str, Any]:
        """The record as ``version.json`` stores it (metrics with both spellings)."""
        metrics = dict(self.metrics)
        for old, new in _METRIC_ALIASES.items():
            if new in metrics:
                metrics.setdefault(old, metrics[new])
        return {**self.extra, "name": self.name, "project": self.project, "task": self.task,
                "mode": self.mode, "created": self.created, "parent": self.parent,
                "classes": list(self.classes), "config": self.config, "metrics": metrics,
                "files": self.files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionRecord:
        """Read a ``version.json`` of this or an earlier release."""
        known = {"name", "project", "task", "mode", "classes", "config", "metrics", "parent",
                 "created", "files"}
        metrics = dict(data.get("metrics") or {})
        for old, new in _METRIC_ALIASES.items():
            if old in metrics:
                metrics.setdefault(new, metrics[old])
        return cls(name=str(data.get("name", "")), project=str(data.get("project", "")),
                   task=data.get("task") or "classification", mode=data.get("mode") or "",
                   classes=list(data.get("classes") or []), config=dict(data.get("config") or {}),
                   metrics=metrics, parent=data.get("parent"),
                   created=str(data.get("created", "")), files=dict(data.get("files") or FILES),
                   extra={k: v for k, v in data.items() if k not in known})


@dataclass
class VersionFiles:
    """Everything a finished run writes; :func:`write_version` stores it under a name."""

    record: VersionRecord | dict[str, Any]
    checkpoint: dict[str, Any]
    snapshot: pd.DataFrame
    predictions: pd.DataFrame


def write_version(project_folder: Path, name: str, files: VersionFiles) -> Path:
    """Write a reserved version's files into a hidden folder, then rename it into place."""
    folder = models_dir(project_folder)
    partial = folder / f".{name}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir(parents=True)
    try:
        torch.save(files.checkpoint, partial / "model.pt")
        files.snapshot.to_parquet(partial / "snapshot.parquet", index=False)
        files.predictions.to_parquet(partial / "predictions.parquet", index=False)
        record = files.record if isinstance(files.record, VersionRecord) \
            else VersionRecord.from_json(files.record)
        (partial / "version.json").write_text(json.dumps(record.to_json(), indent=2,
                                                         default=str))
        partial.replace(folder / name)  # onto the empty reserved folder: atomic
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder / name


def release_name(project_folder: Path, name: str) -> None:
    """Give back a reserved name whose version was never written."""
    with_files = models_dir(project_folder) / name
    if with_files.is_dir() and not any(with_files.iterdir()):
        with_files.rmdir()


@dataclass
class ModelVersion:
    """One trained model of a project: reopen with ``project.model("v1")``.

    Attributes
    ----------
    name : str
        ``"v1"``, ``"v2"``, … in the order versions were made in the project.
    folder : Path
        The version's folder.
    project_name : str
    record : dict
        The parsed ``version.json`` (:meth:`VersionRecord.to_json`: always with ``task``).
    """

    name: str
    folder: Path
    project_name: str
    record: dict[str, Any]
    _classifier: Classifier | None = field(default=None, repr=False)
    _detector: Any = field(default=None, repr=False)
    _anomaly: Any = field(default=None, repr=False)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], project_name: str) -> ModelVersion:
        """Open the version stored in ``folder`` (a ``models/v<n>`` folder)."""
        folder = Path(folder)
        path = folder / "version.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{str(path)!r} is not a readable model version ({error}).") from None
        if not isinstance(record, dict):
            raise ValueError(f"{str(path)!r} is not a readable model version (not an object).")
        record = VersionRecord.from_json(record).to_json()
        return cls(name=folder.name, folder=folder, project_name=project_name, record=record)

    # -- what was recorded ---------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """The arguments of the run (backbone, mode, folds, epochs, image size, seed, …)."""
        return self.record["config"]

    @property
    def metrics(self) -> dict[str, Any]:
        """accuracy, macro_f1, log_loss, per_class report, confusion matrix, ``evaluated_on``
        (``"out-of-fold"`` or ``"validation"``) and ``n_evaluated``."""
        return self.record["metrics"]

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the probability columns."""
        return list(self.record["classes"])

    @property
    def task(self) -> str:
        """``"classification"`` or ``"detection"`` (versions from before detection existed
        are classifiers)."""
        return str(self.record.get("task") or "classification")

    @property
    def mode(self) -> str:
        """What was trained: ``"probe"``, ``"finetune"`` or ``"ensemble"`` (auto's choice)."""
        return self.record["mode"]

    @property
    def parent(self) -> str | None:
        """The project's newest version when this one was trained."""
        return self.record.get("parent")

    @property
    def selection(self) -> dict[str, Any] | None:
        """For ``mode="auto"``: every candidate's cross-validated metrics and the reason."""
        return self.record.get("selection")

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "model.pt"

    def snapshot(self) -> pd.DataFrame:
        """The samples trained on: sample_id, filepath, content_hash, label, fold."""
        return pd.read_parquet(self.folder / "snapshot.parquet")

    def oof_predictions(self) -> pd.DataFrame:
        """Out-of-fold (or validation) predictions; only samples a fold held out.

        A classifier's: sample_id, label, confidence, one probability column per class,
        fold. A detector's: one row per predicted box, sample_id, label, confidence, x, y,
        w, h (relative top-left corner and size), fold; the held-out images are those of
        ``snapshot()`` with ``fold >= 0`` (an image where nothing was found has no row).
        """
        return pd.read_parquet(self.folder / "predictions.parquet")

    @property
    def calibration(self) -> dict[str, Any] | None:
        """``calibration.json`` once ``wb.calibrate`` fitted one (temperature, ECE before and
        after), else None."""
        path = self.folder / "calibration.json"
        try:
            return json.loads(path.read_text()) if path.exists() else None
        except ValueError:
            return None

    @property
    def temperature(self) -> float:
        """The calibration's temperature (1.0: uncalibrated); ``predict`` applies it."""
        return float((self.calibration or {}).get("temperature", 1.0))

    @property
    def operating_point(self) -> dict[str, Any] | None:
        """Where the line rejects, as ``wb.operating_point`` stored it (None: argmax)."""
        return self.record.get("operating_point")

    def forget_network(self) -> None:
        """Drop the loaded network (it is rebuilt, with the current calibration, on use)."""
        self._classifier = None
        self._detector = None
        self._anomaly = None

    # -- the network ------------------------------------------------------------------------
    @property
    def classifier(self) -> Classifier:
        """The network, preprocessing included, on the CPU in eval mode (loaded once)."""
        if self.task != "classification":
            raise ValueError(f"model version {self.name!r} is a {self.task} model; its network "
                             "is mv.detector.")
        if self._classifier is None:
            self._classifier = load_classifier(self.checkpoint_path)
            self._classifier.temperature = self.temperature
        return self._classifier

    @property
    def detector(self) -> Any:
        """A detection version's :class:`~workbench.train.detection.retinanet.Detector`, on the CPU
        in eval
        mode (loaded once)."""
        if self.task != "detection":
            raise ValueError(f"model version {self.name!r} is a {self.task} model; its network "
                             "is mv.classifier.")
        if self._detector is None:
            self._detector = load_detector(self.checkpoint_path)
        return self._detector

    @property
    def anomaly(self) -> Any:
        """An anomaly version's :class:`~workbench.train.anomaly.model.AnomalyModel` (the
        backbone and the patch bank; loaded once)."""
        if self.task != "anomaly":
            raise ValueError(f"model version {self.name!r} is a {self.task} model, not an "
                             "anomaly model.")
        if self._anomaly is None:
            from workbench.train.anomaly.model import AnomalyModel

            self._anomaly = AnomalyModel.load(self.checkpoint_path,
                                              backbone=self.config["backbone"],
                                              weights=self.config["weights"])
        return self._anomaly

    def heatmap(self, path: str | os.PathLike[str]) -> np.ndarray:
        """An anomaly version's map of how unlike the normal patches each place of the
        image is: float32, the image's own height x width (the score's units)."""
        return self.anomaly.heatmap(path)

    def nearest_normal(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """An anomaly version's explanation of an image's score: its highest-scoring patch
        (``score``, ``box`` as x0, y0, x1, y1 pixels) and the normal image patch nearest to
        it (``normal_filepath``, ``normal_box``; None for a version saved without them)."""
        from workbench.train.anomaly.model import open_image, patch_box
        from workbench.train.anomaly.patchcore import patch_map

        model = self.anomaly
        found = model.worst_patch(open_image(path))
        found["normal_filepath"] = found["normal_box"] = None
        if "source_row" in found:
            filepath = str(self.snapshot()["filepath"].iloc[found.pop("source_row")])
            sy, sx = found.pop("source_patch")
            normal = open_image(filepath)
            grid = patch_map(model.features, normal, model.settings).shape[:2]
            found["normal_filepath"] = filepath
            found["normal_box"] = patch_box(normal.size, grid, sy, sx)
        return found

    def _anomaly_frame(self, ids: list[str] | None, paths: list[str], *, progress: bool,
                       cluster: RayCluster | None = None) -> pd.DataFrame:
        from workbench.train.anomaly.patchcore import heatmap, heatmap_png

        model = self.anomaly
        if cluster is None:
            scores, maps = model.score_files(paths, progress=progress)
        else:
            rows = cluster.map_files(paths, model, _scored, progress=progress,
                                     desc="anomaly scores")
            scores = np.array([score for score, _ in rows], dtype=np.float32)
            maps = [found for _, found in rows]
        folder = self.folder / "heatmaps"
        folder.mkdir(exist_ok=True)
        pngs = []
        for path, found in zip(paths, maps, strict=True):
            stat = Path(path).stat()
            key = hashlib.sha256(f"{Path(path).resolve()}:{stat.st_mtime_ns}:"
                                 f"{stat.st_size}".encode()).hexdigest()[:20]
            png = folder / f"{key}.png"
            if not png.exists():
                from PIL import Image

                with Image.open(path) as image:
                    size = image.size
                heatmap_png(heatmap(found, size), str(png), top=2 * model.threshold)
            pngs.append(str(png))
        frame = pd.DataFrame({"filepath": [str(p) for p in paths], "anomaly_score": scores,
                              "label": model.labels(scores),
                              "confidence": model.confidence(scores), "heatmap": pngs})
        if ids is not None:
            frame.insert(0, "sample_id", ids)
        return frame

    def predict(self, paths_or_view: Any, *, batch_size: int = 8,
                progress: bool = True, score_threshold: float | None = None,
                engine: Engine = "local", address: str | None = None,
                workers: int | None = None) -> pd.DataFrame:
        """Predict image files, or every sample of a FiftyOne view or dataset.

        Parameters
        ----------
        score_threshold : float, optional
            Detectors only: the lowest box confidence kept (the version's, 0.05, by
            default).
        engine : {"local", "ray"}, default "local"
            ``"ray"``: the images go in batches to a pool of Ray actors, each holding the
            network (probe members: the embedding cache's misses are embedded there); the
            frame is the same as the local one (docs/cluster.md).
        address, workers
            ``engine="ray"`` only, as :func:`workbench.train.embeddings.embed` takes them.

        Returns
        -------
        pd.DataFrame
            A classifier's: one row per image, in input order: ``sample_id`` (for a view),
            ``filepath``, ``label``, ``confidence``, then one probability column per class.
            A detector's: one row per box (images in input order, best box first):
            ``sample_id`` (for a view), ``filepath``, ``label``, ``confidence``, ``x``,
            ``y``, ``w``, ``h`` (relative top-left corner and size).
            An anomaly version's: one row per image: ``sample_id`` (for a view),
            ``filepath``, ``anomaly_score``, ``label`` (the normal class or ``"anomaly"``,
            by the version's threshold), ``confidence`` (distance from the threshold,
            relative to it, capped at 1) and ``heatmap`` (a grey PNG: white at twice the
            threshold).
        """
        cluster = resolve_engine(engine, address=address, workers=workers)
        ids, paths = _inputs(paths_or_view)
        if self.task == "anomaly":
            return self._anomaly_frame(ids, paths, progress=progress, cluster=cluster)
        if self.task == "detection":
            return self._detect(ids, paths, batch_size=batch_size, progress=progress,
                                score_threshold=score_threshold, cluster=cluster)
        if score_threshold is not None:
            raise ValueError("score_threshold applies to detection versions only.")
        probs = self._probabilities(paths, batch_size=batch_size, progress=progress,
                                    cluster=cluster)
        frame = probability_frame(probs, self.classes)
        frame.insert(0, "filepath", [str(p) for p in paths])
        if ids is not None:
            frame.insert(0, "sample_id", ids)
        return frame

    def _detect(self, ids: list[str] | None, paths: list[str], *, batch_size: int,
                progress: bool, score_threshold: float | None,
                cluster: RayCluster | None = None) -> pd.DataFrame:
        from workbench.train.detection.predict import detect_files, detection_frame

        found = on_files(cluster, paths, self.detector, functools.partial(
            detect_files, batch_size=batch_size, score_threshold=score_threshold),
            progress=progress, desc="detecting")
        keys = list(range(len(paths)))
        frame = detection_frame(found, self.classes, "_row", keys)
        frame.insert(0, "filepath", [str(paths[i]) for i in frame["_row"]])
        if ids is not None:
            frame.insert(0, "sample_id", [ids[i] for i in frame["_row"]])
        return frame.drop(columns="_row")

    def _probabilities(self, paths: list[str], *, batch_size: int, progress: bool,
                       cluster: RayCluster | None = None) -> np.ndarray:
        """Mean of the members' probabilities (n, n_classes). Probe members read the
        project's embedding cache (their frozen body is the packaged one, keyed by content);
        the others run the network (on Ray actors with a ``cluster``)."""
        kinds = self.record.get("members", [])
        classifier = self.classifier
        run = functools.partial(Classifier.predict_files, batch_size=batch_size)
        if ("probe" not in kinds
                or not self.record["spec"]["weights_source"].startswith("package:")):
            return on_files(cluster, paths, classifier, run, progress=progress, rows=True)
        from workbench.train.classification.probe import head_probabilities
        from workbench.train.embeddings import EmbeddingCache

        vectors = EmbeddingCache(self.folder.parent.parent / "embeddings").embed(
            paths, backbone=self.config["backbone"], weights=self.config["weights"],
            image_size=self.config["image_size"], batch_size=batch_size,
            progress=progress, cluster=cluster).vectors
        total = sum(head_probabilities(member[1], vectors)
                    for kind, member in zip(kinds, classifier.members, strict=True)
                    if kind == "probe")
        others = [m for kind, m in zip(kinds, classifier.members, strict=True)
                  if kind != "probe"]
        if others:
            rest = Classifier(others, image_size=classifier.image_size,
                              mean=classifier.mean.flatten().tolist(),
                              std=classifier.std.flatten().tolist(), classes=self.classes)
            total = total + len(others) * on_files(cluster, paths, rest, run,
                                                   progress=progress, rows=True)
        probs = (total / len(kinds)).astype(np.float32)
        return probs if self.temperature == 1.0 else apply_temperature(probs, self.temperature)

    def __repr__(self) -> str:
        if self.task == "anomaly":
            auroc = self.metrics.get("auroc")
            shown = f", AUROC {auroc:.3f}" if isinstance(auroc, float) else ""
            return (f"ModelVersion({self.project_name}/{self.name}: anomaly patchcore, "
                    f"{self.config.get('backbone')} @ {self.config.get('image_size')} px "
                    f"shorter side, {self.metrics.get('n_normal')} normal images{shown})")
        if self.task == "detection":
            value = self.metrics.get("map50")
            shown = f"{value:.3f}" if isinstance(value, float) else "n/a"
            return (f"ModelVersion({self.project_name}/{self.name}: detection "
                    f"{self.record.get('model', '')}, {self.config.get('backbone')} @ "
                    f"{self.config.get('image_size')} px, {self.metrics.get('evaluated_on', '')}"
                    f" mAP50 {shown})")
        accuracy = self.metrics.get("accuracy")
        shown = f"{accuracy:.3f}" if isinstance(accuracy, float) else "n/a"
        return (f"ModelVersion({self.project_name}/{self.name}: {self.mode}, "
                f"{self.config.get('backbone')} @ {self.config.get('image_size')} px, "
                f"{self.metrics.get('evaluated_on', '')} accuracy {shown})")


def probability_frame(probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """label, confidence, then one column per class, for probabilities (n, n_classes)."""
    best = probs.argmax(axis=1) if len(probs) else np.empty(0, dtype=int)
    frame = pd.DataFrame({"label": [classes[i] for i in best],
                          "confidence": probs.max(axis=1) if len(probs) else []})
    for i, name in enumerate(classes):
        frame[name] = probs[:, i]
    return frame


def _scored(model: Any, paths: list[str]) -> list[tuple[float, np.ndarray]]:
    """An anomaly model's (score, patch distances) per file, for the Ray actors."""
    scores, maps = model.score_files(paths, progress=False)
    return list(zip(scores.tolist(), maps, strict=True))


def _inputs(paths_or_view: Any) -> tuple[list[str] | None, list[str]]:
    if hasattr(paths_or_view, "values") and hasattr(paths_or_view, "dataset_name"):
        ids, paths = paths_or_view.values(["id", "filepath"])
        return list(ids), list(paths)
    if isinstance(paths_or_view, str | os.PathLike):
        return None, [os.fspath(paths_or_view)]
    try:
        paths = [os.fspath(p) for p in paths_or_view]
    except TypeError:
        raise TypeError("predict takes image paths or a FiftyOne view, got "
                        f"{type(paths_or_view).__name__}.") from None
    return None, paths


def checkpoint(members: Sequence[tuple[str, str, torch.nn.Module]], *, classes: Sequence[str],
               image_size: int, mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """The ``model.pt`` content for members given as (kind, backbone name, Sequential)."""
    return {"format": FORMAT_VERSION, "classes": list(classes), "image_size": image_size,
            "mean": list(mean), "std": list(std),
            "members": [{"kind": kind, "backbone": backbone,
                         "state_dict": {k: v.detach().clone() for k, v in
                                        module.state_dict().items()}}
                        for kind, backbone, module in members]}


def load_classifier(path: Path) -> Classifier:
    """Rebuild the :class:`Classifier` a ``model.pt`` describes."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {str(path)!r} "
                         f"({type(error).__name__}: {error}).") from None
    if saved.get("format") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has checkpoint format {saved.get('format')!r}; this "
                         f"Loupe reads format {FORMAT_VERSION}.")
    members = []
    for entry in saved["members"]:
        member = build_member(entry["backbone"], len(saved["classes"]))
        member.load_state_dict(entry["state_dict"])
        members.append(member)
    return Classifier(members, image_size=saved["image_size"], mean=saved["mean"],
                      std=saved["std"], classes=saved["classes"]).eval()


def load_detector(path: Path) -> Any:
    """Rebuild the :class:`~workbench.train.detection.retinanet.Detector` a detection ``model.pt``
    holds."""
    from workbench.train.detection.retinanet import DetectorConfig, build_detector

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read checkpoint {str(path)!r} "
                         f"({type(error).__name__}: {error}).") from None
    if saved.get("format") != DETECTION_FORMAT or saved.get("task") != "detection":
        raise ValueError(f"{str(path)!r} is not a detector checkpoint of format "
                         f"{DETECTION_FORMAT} (format {saved.get('format')!r}).")
    config = DetectorConfig.from_dict(saved["detector"])
    detector = build_detector(config.backbone, classes=config.classes, weights=None,
                              config=config)
    detector.load_state_dict(saved["state_dict"])
    return detector.eval()


def write_detection_predictions(dataset: fo.Dataset, field_name: str, frame: pd.DataFrame,
                                sample_ids: Sequence[str], classes: Sequence[str]) -> None:
    """Store a detector's held-out boxes on the samples as ``fo.Detections``.

    Every sample in ``sample_ids`` gets the field (an empty ``Detections`` where nothing
    was found); each box carries ``label``, ``bounding_box``, ``confidence`` and ``fold``.
    The field is replaced as a whole, so a re-run never leaves older boxes behind.
    """
    import fiftyone as fo

    if dataset.has_sample_field(field_name):
        dataset.delete_sample_field(field_name)
    dataset.add_sample_field(field_name, fo.EmbeddedDocumentField,
                             embedded_doc_type=fo.Detections)
    boxes: dict[str, list] = {sid: [] for sid in sample_ids}
    for row in frame.itertuples(index=False):
        boxes[row.sample_id].append(fo.Detection(
            label=row.label, bounding_box=[row.x, row.y, row.w, row.h],
            confidence=float(row.confidence), fold=int(row.fold)))
    if boxes:
        dataset.set_values(field_name, {sid: fo.Detections(detections=found)
                                        for sid, found in boxes.items()}, key_field="id")
    info = dict(dataset.info)
    info.setdefault("loupe", {}).setdefault("prediction_classes", {})[field_name] = list(classes)
    dataset.info = info
    dataset.save()


def write_predictions(dataset: fo.Dataset, field_name: str, frame: pd.DataFrame,
                      classes: Sequence[str]) -> None:
    """Store a version's held-out predictions on the samples (via the store adapter)."""
    from workbench.store import _db as store

    probs = frame[list(classes)].to_numpy(dtype=float)
    store.set_predictions(dataset, field_name, {
        sample_id: {"label": label, "confidence": float(confidence),
                    "probabilities": row.tolist(), "fold": int(fold)}
        for sample_id, label, confidence, fold, row in zip(
            frame["sample_id"], frame["label"], frame["confidence"], frame["fold"], probs,
            strict=True)}, classes)


__all__ = ["DETECTION_FORMAT", "ModelVersion", "VersionFiles", "checkpoint", "latest_version",
           "load_classifier", "load_detector", "probability_frame", "release_name",
           "reserve_name", "version_names", "write_detection_predictions", "write_predictions",
           "write_version"]
