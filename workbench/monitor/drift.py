"""Drift checks: has a batch of new line images moved away from what a model was trained on?

>>> rep = wb.drift(p, "v2", "incoming/2026-11-26/")     # a folder, paths, or a view
>>> rep.drifted, rep.p_value, rep.summary()
>>> rep.per_image.sort_values("ood_score").tail()        # the least familiar images
>>> rep.shift[rep.shift["moved"]]                        # e.g. brightness -31 %
>>> p.drift_history()                                    # every check, stored in the project

The reference is the version's training snapshot (real images only; a sample of 10,000,
stratified by label, when larger): their embeddings, from the project's cache, and their
brightness, contrast, sharpness and size, cached under ``<project>/drift/``. Two
permutation MMD tests compare a batch with it: on the embeddings (what the images show: a
new defect, another part) and on the image statistics (how they were taken: a darker lamp,
a softer focus); the batch has drifted when the Bonferroni-combined p-value is below
``alpha``. Each check is appended to ``drift/checks.jsonl``, its
full report written beside it as ``drift/<check_id>.json``.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from workbench.analyse.classification import resolve
from workbench.keywords import renamed
from workbench.metrics import drift_tests
from workbench.store import _db as database
from workbench.store import drift_checks
from workbench.store.coerce import as_project
from workbench.store.ingest.images import ImageRejectedError, check_image, read_bytes
from workbench.store.ingest.scan import display_path, scan_folder
from workbench.store.labels import now
from workbench.store.project import Project, ProjectError

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

#: Default false-alarm rate of a check.
DEFAULT_ALPHA = 0.01
#: Fewer readable images than this cannot be checked.
MIN_IMAGES = 5
#: Below this many images a check still runs, with a warning that it sees only large drift.
RECOMMENDED_IMAGES = 20
_FORMAT = 1
_PER_IMAGE = ["filepath", "ood_score", "is_outlier", "label", "confidence"]


@dataclass
class DriftReport:
    """The result of one :func:`drift` check.

    Attributes
    ----------
    drifted : bool
        ``p_value < alpha``: the batch does not look like the training images.
    p_value, statistic, method, alpha
        The combined p-value, the embedding MMD², what was tested, the false-alarm rate.
    tests : pd.DataFrame
        Each test's statistic and p-value (embeddings, image statistics).
    per_image : pd.DataFrame
        filepath, ood_score (mean cosine distance to the 5 nearest training images),
        is_outlier (beyond what 99 % of training images score), label, confidence (the
        version's prediction).
    shift : pd.DataFrame
        property (brightness, contrast, sharpness, width, height), reference and batch
        means, change (relative), p_value (KS), moved.
    label_shift : pd.DataFrame
        class, reference_share (training labels), batch_share (predicted), change.
    rejected : list of (path, reason)
        Files of the batch that could not be read; the check used the rest.
    warnings : list of str
        What a person should know (few images, another image size or colour mode).
    """

    check_id: str
    time: str
    project: str
    version: str
    batch: str
    alpha: float
    drifted: bool
    p_value: float
    statistic: float
    method: str
    n_images: int
    tests: pd.DataFrame
    per_image: pd.DataFrame
    shift: pd.DataFrame
    label_shift: pd.DataFrame
    rejected: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_outliers(self) -> int:
        return int(self.per_image["is_outlier"].sum())

    def summary(self) -> str:
        """One line: verdict, p-value, size, outliers, what moved."""
        verdict = "DRIFT" if self.drifted else "no drift"
        moved = self.shift[self.shift["moved"]]
        parts = [f"{p} {c:+.0%}" for p, c in zip(moved["property"], moved["change"],
                                                 strict=True)]
        top = self.label_shift.reindex(self.label_shift["change"].abs()
                                       .sort_values(ascending=False).index).head(1)
        if len(top) and abs(float(top["change"].iloc[0])) >= 0.15:
            parts.append(f"predicted {top['class'].iloc[0]} "
                         f"{float(top['change'].iloc[0]):+.0%} points")
        line = (f"{self.project}/{self.version}: {verdict} (p={self.p_value:.3g}, "
                f"alpha={self.alpha:g}) on {self.n_images} images, {self.n_outliers} "
                f"out-of-distribution")
        if parts:
            line += "; moved: " + ", ".join(parts)
        if self.rejected:
            line += f"; {len(self.rejected)} unreadable file(s) skipped"
        return line

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready values (what ``loupe drift --json`` writes)."""
        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return json.loads(frame.to_json(orient="records"))

        return {"format": _FORMAT, "check_id": self.check_id, "time": self.time,
                "project": self.project, "version": self.version, "batch": self.batch,
                "alpha": self.alpha, "drifted": self.drifted, "p_value": self.p_value,
                "statistic": self.statistic, "method": self.method,
                "n_images": self.n_images, "n_outliers": self.n_outliers,
                "summary": self.summary(), "tests": records(self.tests),
                "per_image": records(self.per_image), "shift": records(self.shift),
                "label_shift": records(self.label_shift),
                "rejected": [list(r) for r in self.rejected], "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        frames = {key: pd.DataFrame(data[key]) for key in
                  ("tests", "per_image", "shift", "label_shift")}
        return cls(check_id=data["check_id"], time=data["time"], project=data["project"],
                   version=data["version"], batch=data["batch"], alpha=data["alpha"],
                   drifted=data["drifted"], p_value=data["p_value"],
                   statistic=data["statistic"], method=data["method"],
                   n_images=data["n_images"], **frames,
                   rejected=[tuple(r) for r in data["rejected"]],
                   warnings=list(data["warnings"]))

    def __repr__(self) -> str:
        return f"DriftReport({self.summary()})"


@renamed(store="write")
def drift(project: Project | str, version: ModelVersion | str | None, batch: Any, *,
          alpha: float = DEFAULT_ALPHA, n_permutations: int = 1000, seed: int = 0,
          write: bool = True, batch_name: str | None = None,
          progress: bool = False) -> DriftReport:
    """Check whether a batch of new images has drifted from a version's training images.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion, str or None
        The model whose training snapshot is the reference (None: the newest).
    batch : folder, sequence of image paths, or a FiftyOne view
        The new images. Unreadable files are skipped and listed in ``rejected``.
    alpha : float, default 0.01
        False-alarm rate: on batches like the training images, at most this share of
        checks says "drift".
    n_permutations : int, default 1000
    seed : int, default 0
        The permutations; a check is reproducible.
    write : bool, default True
        Append the check to the project's drift history (``p.drift_history()``).
    batch_name : str, optional
        The batch's name in the report and the history (``batch``: e.g. the import's
        batch name); default: the folder, list or view, described.
    progress : bool, default False

    Returns
    -------
    DriftReport

    Raises
    ------
    ValueError
        For an empty batch, or fewer than 5 readable images (the message lists the
        unreadable files); nothing is stored then.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (a false-alarm rate), got {alpha!r}")
    project, version = resolve(project, version)
    paths, rejected, description = _batch_files(batch)
    if batch_name is not None:
        description = batch_name
    if not paths and not rejected:
        raise ValueError(f"the batch {description} is empty: no image files to check")
    measured = [_measure(path) for path in paths]
    rejected += [(display_path(p), m) for p, m in zip(paths, measured, strict=True)
                 if isinstance(m, str)]
    readable = [(p, m) for p, m in zip(paths, measured, strict=True) if isinstance(m, dict)]
    if len(readable) < MIN_IMAGES:
        listed = "; ".join(f"{p}: {why}" for p, why in rejected[:5])
        raise ValueError(f"the batch {description} has {len(readable)} readable image(s); a "
                         f"drift check needs at least {MIN_IMAGES} (20 or more recommended)"
                         + (f". Unreadable: {listed}" if listed else ""))
    files = [p for p, _ in readable]
    batch_props = pd.DataFrame([m for _, m in readable])
    reference = _reference(project, version, progress=progress)
    vectors = _embed(project, version, files, progress=progress)
    tests = drift_tests.combined_test(reference["vectors"], vectors, reference["properties"],
                                      batch_props, n_permutations=n_permutations, seed=seed)
    scores, threshold = drift_tests.knn_ood_scores(reference["vectors"], vectors)
    predictions = version.predict(files, progress=progress)
    per_image = pd.DataFrame({"filepath": files, "ood_score": scores,
                              "is_outlier": scores > threshold,
                              "label": predictions["label"],
                              "confidence": predictions["confidence"].astype(float)},
                             columns=_PER_IMAGE)
    p_value = float(tests.attrs["p_value"])
    report = DriftReport(
        check_id=f"{now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", time=now().isoformat(),
        project=project.name, version=version.name, batch=description, alpha=alpha,
        drifted=p_value < alpha, p_value=p_value,
        statistic=float(tests.loc[tests["test"] == "embeddings", "statistic"].iloc[0]),
        method=("permutation MMD tests on the embeddings "
                f"({version.config['backbone']} @ {version.config['image_size']} px) and on "
                "brightness/contrast/sharpness, Bonferroni-combined "
                f"({n_permutations} permutations)"),
        n_images=len(files), tests=tests, per_image=per_image,
        shift=drift_tests.property_shift(reference["properties"], batch_props, alpha=alpha),
        label_shift=drift_tests.label_shift(reference["labels"], per_image["label"],
                                            version.classes),
        rejected=rejected, warnings=_warnings(reference["properties"], batch_props,
                                              reference["modes"], [m["mode"] for _, m in
                                                                   readable]))
    if write:
        _store(project, report)
    return report


def drift_history(project: Project | str) -> pd.DataFrame:
    """Every stored drift check of a project, oldest first: check_id, time, version,
    batch, n_images, n_outliers, drifted, p_value, statistic, alpha, method, summary."""
    return drift_checks.history(as_project(project))


def load_check(project: Project | str, check_id: str) -> DriftReport:
    """The full report of one stored check (per-image scores included)."""
    project = as_project(project)
    path = _folder(project) / f"{check_id}.json"
    if not path.is_file():
        raise ProjectError(f"project {project.name!r} has no drift check {check_id!r}; see "
                           "p.drift_history() for the stored ones")
    return DriftReport.from_dict(json.loads(path.read_text()))


# -- the batch ------------------------------------------------------------------------------
def _batch_files(batch: Any) -> tuple[list[str], list[tuple[str, str]], str]:
    """(paths, rejected, description) of a folder, a list of paths or a FiftyOne view."""
    if isinstance(batch, str | os.PathLike):
        root = Path(batch)
        if not root.exists():
            raise FileNotFoundError(f"batch folder not found: {display_path(root)}")
        if root.suffix == ".jsonl" or (root.is_dir() and any(root.glob("verdicts*.jsonl"))):
            return _verdict_window(root)
        if root.is_file():
            return [str(root)], [], f"file {display_path(root)}"
        candidates, rejected = scan_folder(root, layout="unlabeled", annotator="drift")
        return [str(c.path) for c in candidates], rejected, f"folder {display_path(root)}"
    if hasattr(batch, "values") and hasattr(batch, "_root_dataset"):
        paths = list(batch.values("filepath"))
        return paths, [], f"view of {batch._root_dataset.name!r} ({len(paths)} samples)"
    if isinstance(batch, Sequence) and all(isinstance(p, str | os.PathLike) for p in batch):
        paths = [str(p) for p in batch]
        return paths, [], f"list of {len(paths)} path(s)"
    raise TypeError(f"batch must be a folder, a list of image paths or a FiftyOne view, got "
                    f"{type(batch).__name__}")


#: Verdict lines of a line's log checked as one batch (the newest).
VERDICT_WINDOW = 200


def _verdict_window(path: Path) -> tuple[list[str], list[tuple[str, str]], str]:
    """The images of the newest :data:`VERDICT_WINDOW` lines of a ``loupe-edge watch``
    verdict log (a ``verdicts.jsonl`` file, or its folder with the rotated logs)."""
    from loupe_edge.watch import read_verdicts

    folder = path.parent if path.is_file() else path
    lines = [r for r in read_verdicts(folder) if r.get("file") and not r.get("error")]
    lines = lines[-VERDICT_WINDOW:]
    paths = [str(r["file"]) for r in lines if Path(r["file"]).is_file()]
    rejected = [(str(r["file"]), "listed in the verdict log, no longer there")
                for r in lines if not Path(r["file"]).is_file()]
    return paths, rejected, (f"the last {len(lines)} verdict(s) of the line's log "
                             f"{display_path(folder)}")


def _measure(path: str | Path) -> dict[str, Any] | str:
    """The image's properties and mode, or why it cannot be read."""
    try:
        data = read_bytes(Path(path))
        checked = check_image(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                gray = np.asarray(image.convert("L"))
        return {**drift_tests.image_properties(gray), "mode": checked.mode}
    except ImageRejectedError as error:
        return error.reason
    except (OSError, ValueError) as error:
        return f"cannot decode: {error}"


def _warnings(reference: pd.DataFrame, batch: pd.DataFrame, reference_modes: Sequence[str],
              batch_modes: Sequence[str]) -> list[str]:
    notes = []
    if len(batch) < RECOMMENDED_IMAGES:
        notes.append(f"only {len(batch)} images: a check this small sees only large drift "
                     f"({RECOMMENDED_IMAGES} or more recommended)")
    ref_size = (int(reference["width"].median()), int(reference["height"].median()))
    new_size = (int(batch["width"].median()), int(batch["height"].median()))
    if ref_size != new_size:
        notes.append(f"the batch's images are {new_size[0]}x{new_size[1]} px (median), the "
                     f"training images {ref_size[0]}x{ref_size[1]} px: another camera or crop?")
    if set(batch_modes) - set(reference_modes):
        notes.append(f"the batch has {'/'.join(sorted(set(batch_modes)))} images, the training "
                     f"images were {'/'.join(sorted(set(reference_modes)))}")
    return notes


# -- the reference ---------------------------------------------------------------------------
def _folder(project: Project) -> Path:
    return drift_checks.folder(project)


def _embed(project: Project, version: ModelVersion, paths: Sequence[str], *,
           progress: bool) -> np.ndarray:
    from workbench.train.embeddings import EmbeddingCache

    config = version.config
    return EmbeddingCache(project.folder / "embeddings").embed(
        list(paths), backbone=config["backbone"], weights=config.get("weights", "default"),
        image_size=config["image_size"], progress=progress).vectors


#: Most training images in a reference: beyond it, a random sample stratified by label (the
#: tests hardly gain power, while measuring and embedding 80,000 images would take minutes).
MAX_REFERENCE = 10_000


def _stratified_sample(snapshot: pd.DataFrame, n: int) -> pd.DataFrame:
    """Exactly ``n`` rows, each label's share kept (largest remainders), the same every
    time, in the snapshot's order."""
    labels = snapshot["label"].fillna("").astype(str)
    quota = labels.value_counts() * n / len(snapshot)
    take = np.floor(quota).astype(int)
    take[(quota - take).sort_values(ascending=False).index[:n - int(take.sum())]] += 1
    rng = np.random.default_rng(0)
    rows = [rng.choice(np.flatnonzero((labels == label).to_numpy()), size=int(k), replace=False)
            for label, k in take.items() if k]
    return snapshot.iloc[np.sort(np.concatenate(rows))]


def _reference(project: Project, version: ModelVersion, *, progress: bool) -> dict[str, Any]:
    """Embeddings, properties, modes and labels of the version's real training images (up
    to :data:`MAX_REFERENCE`), cached per version in ``drift/reference_<version>.npz``."""
    path = _folder(project) / f"reference_{version.name}.npz"
    created = str(version.record.get("created"))
    if path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["created"]) == created:
                return {"vectors": saved["vectors"],
                        "properties": pd.DataFrame(saved["properties"],
                                                   columns=list(drift_tests.PROPERTIES)),
                        "modes": [str(m) for m in saved["modes"]],
                        "labels": [str(x) for x in saved["labels"]]}
    snapshot = version.snapshot()
    if version.task == "anomaly":  # it learned from the normal images only (fold >= 0)
        snapshot = snapshot[snapshot["fold"] >= 0]
    synthetic = set(project.dataset.match_tags(database.SYNTHETIC_TAG).values("id"))
    snapshot = snapshot[~snapshot["sample_id"].isin(synthetic)]
    if len(snapshot) > MAX_REFERENCE:
        snapshot = _stratified_sample(snapshot, MAX_REFERENCE)
    measured = [_measure(p) for p in tqdm(snapshot["filepath"], desc="drift reference",
                                          unit="image", disable=not progress)]
    keep = [isinstance(m, dict) for m in measured]
    snapshot = snapshot[keep]
    if len(snapshot) < MIN_IMAGES:
        raise ProjectError(f"only {len(snapshot)} training image(s) of {version.name!r} can "
                           "still be read; the drift reference needs the training images")
    properties = pd.DataFrame([m for m in measured if isinstance(m, dict)])
    reference = {"vectors": _embed(project, version, list(snapshot["filepath"]),
                                   progress=progress),
                 "properties": properties[list(drift_tests.PROPERTIES)].reset_index(drop=True),
                 "modes": list(properties["mode"]), "labels": list(snapshot["label"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial.npz")
    np.savez(partial, vectors=reference["vectors"],
             properties=reference["properties"].to_numpy(float),
             modes=np.array(reference["modes"]), labels=np.array(reference["labels"]),
             created=np.array(created))
    partial.replace(path)
    return reference


def _store(project: Project, report: DriftReport) -> None:
    """Write the full report, then append its line to the history (one write call)."""
    folder = _folder(project)
    folder.mkdir(parents=True, exist_ok=True)
    full = folder / f"{report.check_id}.json"
    partial = full.with_name(f".{full.name}.partial")
    partial.write_text(json.dumps(report.to_dict()))
    partial.replace(full)
    line = {key: value for key, value in report.to_dict().items()
            if key in ("check_id", "time", "version", "batch", "n_images", "n_outliers",
                       "drifted", "p_value", "statistic", "alpha", "method", "summary")}
    with (folder / "checks.jsonl").open("a") as history:
        history.write(json.dumps(line) + "\n")


__all__ = ["DEFAULT_ALPHA", "DriftReport", "drift", "drift_history", "load_check"]
