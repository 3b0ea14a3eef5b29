"""A Loupe project: one persistent FiftyOne dataset plus a project folder beside it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench import store
from workbench.importer import import_candidates
from workbench.ingest import (
    Candidate,
    ImportReport,
    Layout,
    read_label_csv,
    read_metadata_csv,
    scan_folder,
)
from workbench.labels import Annotation, now
from workbench.settings import projects_dir

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.versions import ModelVersion

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TASKS = ("classification",)


class ProjectError(ValueError):
    """A project operation that cannot be done as asked (the message says what to do)."""


class Project:
    """A named inspection project.

    Create one with :meth:`create`, reopen it with :meth:`open`. The FiftyOne dataset is
    :attr:`dataset`; thumbnails, checkpoints and exports go in :attr:`folder`.
    """

    def __init__(self, dataset: fo.Dataset) -> None:
        self._dataset = dataset

    # -- lifecycle ---------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, *, classes: Sequence[str] = (), task: str = "classification",
               overwrite: bool = False) -> Project:
        """Create an empty project.

        Parameters
        ----------
        name : str
            Letters, digits, ``_``, ``.`` and ``-``; at most 64 characters.
        classes : sequence of str
            Label schema to start with (more are added as imports bring them).
        task : {"classification"}
            What the labels describe.
        overwrite : bool
            Delete an existing project of that name first.
        """
        _check_name(name)
        if task not in TASKS:
            raise ProjectError(f"task={task!r} is not supported; choose one of {TASKS}")
        if store.dataset_exists(name):
            if not overwrite:
                raise ProjectError(
                    f"project {name!r} already exists; open it with Project.open({name!r}) or "
                    "pass overwrite=True to replace it")
            delete_project(name)
        classes = _check_labels(classes, "classes")
        dataset = store.create_dataset(name, classes=classes, task=task)
        project = cls(dataset)
        project.folder.mkdir(parents=True, exist_ok=True)
        return project

    @classmethod
    def open(cls, name: str) -> Project:
        """Open an existing project by name."""
        if name not in store.list_project_names():
            known = ", ".join(store.list_project_names()) or "none yet"
            raise ProjectError(f"project {name!r} not found (projects: {known}); "
                               f"create it with Project.create({name!r})")
        return cls(store.load_dataset(name))

    @classmethod
    def import_archive(cls, path: str | Path, name: str | None = None,
                       overwrite: bool = False) -> Project:
        """Restore a project from an archive written by :meth:`export_archive`.

        Parameters
        ----------
        path : str or Path
            The ``.tar`` / ``.tar.gz`` file.
        name : str, optional
            Restore under this name (default: the archived project's name).
        overwrite : bool
            Replace an existing project of that name (only once the archive has been
            read and checked in full).

        Raises
        ------
        ProjectError
            A bad archive (not a tar file, cut short, no manifest, failed checksum, unsafe
            member names) or a name that is taken; nothing is created then.
        """
        from workbench.archive import import_archive

        return cls.open(import_archive(path, name, overwrite=overwrite))

    def export_archive(self, path: str | Path, *, include_embeddings: bool = True) -> Path:
        """Back the project up into one ``.tar`` (or ``.tar.gz``) file: samples with their
        full label history, slice fields, tags, predictions and runs, the images (also
        those outside the project folder), model versions with checkpoints, drift checks
        and the label book. Restore it with :meth:`Project.import_archive`."""
        from workbench.archive import export_archive

        return export_archive(self, path, include_embeddings=include_embeddings)

    # -- properties --------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The project's name (also its dataset's name)."""
        return self._dataset.name

    @property
    def dataset(self) -> fo.Dataset:
        """The underlying FiftyOne dataset."""
        return self._dataset

    @property
    def folder(self) -> Path:
        """Folder for this project's files (media copies, thumbnails, checkpoints, exports)."""
        return projects_dir() / self.name

    @property
    def classes(self) -> list[str]:
        """The label schema, in a stable order (first seen first)."""
        return list(store.project_info(self._reloaded()).get("classes", []))

    @property
    def slice_fields(self) -> list[str]:
        """Metadata fields imported for slicing (``line``, ``camera``, ``lighting``, …)."""
        return list(store.project_info(self._reloaded()).get("slice_fields", []))

    def __len__(self) -> int:
        return len(self._dataset)

    def __repr__(self) -> str:
        return (f"Project({self.name!r}: {len(self)} samples, classes={self.classes}, "
                f"slice_fields={self.slice_fields})")

    # -- labels ------------------------------------------------------------------------
    def add_class(self, label: str) -> None:
        """Add a class to the label schema (no-op if present)."""
        self._add_classes(_check_labels([label], "label"))

    def annotate(self, sample_ids: str | Iterable[str], label: str, *, annotator: str,
                 review: bool = False) -> None:
        """Record that ``annotator`` gives ``label`` to the samples.

        The label is appended to each sample's history (never replacing it) and the
        consensus ``ground_truth`` is recomputed.

        Parameters
        ----------
        review : bool, default False
            False: a vote, counted in the majority over annotators. True: a final decision
            (accepting a suggested label, resolving a disagreement) that sets the consensus
            until a later review.

        Raises
        ------
        ProjectError
            For an unknown label or sample id, an empty annotator; nothing is written then.
        """
        if label not in self.classes:
            raise ProjectError(
                f"label {label!r} is not a class of project {self.name!r} "
                f"(classes: {', '.join(self.classes) or 'none'}); add it with "
                f"p.add_class({label!r}) first")
        self._append(sample_ids, label, annotator=annotator, review=review)

    def withdraw(self, sample_ids: str | Iterable[str], *, annotator: str,
                 review: bool = False) -> None:
        """Withdraw ``annotator``'s vote on the samples (``review=True``: the review in force).

        Appends a withdrawal entry (label None); the history before it is kept, and the
        consensus falls back to the remaining votes. This is how an undo is stored.
        """
        self._append(sample_ids, None, annotator=annotator, review=review)

    def _append(self, sample_ids: str | Iterable[str], label: str | None, *, annotator: str,
                review: bool) -> None:
        ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
        if not annotator or not isinstance(annotator, str):
            raise ProjectError("annotator must be a non-empty name, e.g. annotator='alice'")
        missing = sorted(set(ids) - store.existing_ids(self._dataset, ids))
        if missing:
            raise ProjectError(f"sample id(s) not in project {self.name!r}: "
                               f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        stamp = now()
        entry = Annotation(annotator, label, stamp, review=bool(review))
        store.append_history(self._dataset, {sid: [entry] for sid in dict.fromkeys(ids)})

    def history(self, sample_id: str) -> pd.DataFrame:
        """Every label ever given to a sample, oldest first.

        Columns annotator, label (None for a withdrawal), time, review (True for a final
        decision).
        """
        if not store.existing_ids(self._dataset, [sample_id]):
            raise ProjectError(f"sample id {sample_id!r} is not in project {self.name!r}")
        entries = store.histories(self._dataset, [sample_id])[sample_id]
        frame = pd.DataFrame(entries, columns=["annotator", "label", "time", "review"])
        frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
        frame["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
        return frame

    # -- import ------------------------------------------------------------------------
    def import_folder(self, path: str | Path, layout: Layout = "class_folders",
                      annotator: str = "import", metadata_csv: str | Path | None = None, *,
                      follow_symlinks: bool = False, exclude: Sequence[str] = (),
                      thorough: bool = False, progress: bool = True) -> ImportReport:
        """Import the images under a folder.

        Parameters
        ----------
        path : str or Path
            The folder.
        layout : {"class_folders", "unlabeled"}
            ``class_folders``: ``path/<label>/…/image``. ``unlabeled``: any files, no labels.
        annotator : str
            Whom folder-name labels are attributed to in the history.
        metadata_csv : str or Path, optional
            A CSV with a ``filename`` column; its other columns become slice fields, joined
            on file name.
        follow_symlinks : bool
            Import links that point outside ``path`` (rejected by default).
        exclude : sequence of str
            Glob patterns, relative to ``path``, of files or folders to skip silently
            (e.g. ``["annotations", "*.csv"]``).
        thorough : bool
            Decode every pixel of every image (about 4x slower); the default checks headers,
            checksums and end markers, which catches files cut short.
        progress : bool
            Show a progress bar.

        Returns
        -------
        ImportReport
            ``added``, ``duplicates``, ``rejected`` (path, reason), ``converted``.
        """
        fields_by_name, columns = ({}, [])
        if metadata_csv is not None:
            fields_by_name, columns = read_metadata_csv(Path(metadata_csv))
        candidates, rejected = scan_folder(Path(path), layout=layout, annotator=annotator,
                                           follow_symlinks=follow_symlinks, exclude=exclude)
        for cand in candidates:
            cand.fields.update(fields_by_name.get(cand.path.name, {}))
        return self._import(candidates, rejected, columns, thorough=thorough,
                            progress=progress)

    def import_csv(self, path: str | Path, *, annotator: str = "import",
                   thorough: bool = False, progress: bool = True) -> ImportReport:
        """Import images listed in a CSV: ``filepath,label[,annotator][,slice columns…]``.

        Several rows for one file (one per annotator) give it several history entries.
        Relative file paths are read relative to the CSV's folder.
        """
        candidates, rejected, columns = read_label_csv(Path(path), default_annotator=annotator)
        return self._import(candidates, rejected, columns, thorough=thorough,
                            progress=progress)

    def _import(self, candidates: list[Candidate], rejected: list[tuple[str, str]],
                slice_columns: list[str], *, thorough: bool,
                progress: bool) -> ImportReport:
        report = ImportReport(rejected=list(rejected))
        for cand in candidates:
            bad = [label for _, label in cand.labels if not _valid_label(label)]
            if bad:
                report.rejected.append((str(cand.path), f"invalid label {bad[0]!r}"))
        candidates = [c for c in candidates if all(_valid_label(lab) for _, lab in c.labels)]
        known = self.slice_fields
        new_columns = [c for c in slice_columns if c not in known]
        if new_columns:
            store.ensure_slice_fields(self._dataset, new_columns)
            store.update_project_info(self._dataset, slice_fields=known + new_columns)
        labels = import_candidates(self._dataset, self.folder / "media", candidates,
                                   report=report, thorough=thorough, progress=progress)
        self._add_classes(labels)
        return report

    def _add_classes(self, labels: Iterable[str]) -> None:
        classes = self.classes
        added = [label for label in labels if label not in classes]
        if added:
            store.update_project_info(self._dataset, classes=classes + added)

    # -- model versions ----------------------------------------------------------------
    def models(self) -> pd.DataFrame:
        """Model versions, oldest first: name, parent, backbone, mode, created, accuracy,
        macro_f1 (out-of-fold or validation), metrics (the whole dict)."""
        from workbench.versions import ModelVersion, models_dir, version_names

        rows = []
        for name in version_names(self.folder):
            version = ModelVersion.load(models_dir(self.folder) / name, self.name)
            rows.append({"name": name, "parent": version.parent,
                         "backbone": version.config.get("backbone"), "mode": version.mode,
                         "created": pd.Timestamp(version.record.get("created")),
                         "accuracy": version.metrics.get("accuracy"),
                         "macro_f1": version.metrics.get("macro_f1"),
                         "metrics": version.metrics})
        return pd.DataFrame(rows, columns=["name", "parent", "backbone", "mode", "created",
                                           "accuracy", "macro_f1", "metrics"])

    def model(self, name: str | None = None) -> ModelVersion:
        """Open a model version by name (``"v1"``); the newest when ``name`` is None."""
        from workbench.versions import ModelVersion, models_dir, version_names

        names = version_names(self.folder)
        if name is None and names:
            name = names[-1]
        if name not in names:
            raise ProjectError(f"project {self.name!r} has no model version {name!r} "
                               f"(versions: {', '.join(names) or 'none yet'}); train one with "
                               "wb.train(project)")
        return ModelVersion.load(models_dir(self.folder) / name, self.name)

    # -- analysis runs -----------------------------------------------------------------
    def analysis_runs(self) -> pd.DataFrame:
        """Stored analysis runs (``label_issues_v2``, ``agreement``, …): key, method, time,
        n_samples, config. Each run's per-sample results are the field of the same name."""
        runs = store.analysis_runs(self._reloaded())
        rows = [{"key": key, "method": r.get("method"), "time": pd.Timestamp(r.get("time")),
                 "n_samples": r.get("n_samples"), "config": r.get("config")}
                for key, r in runs.items()]
        return pd.DataFrame(rows, columns=["key", "method", "time", "n_samples", "config"])

    def delete_run(self, key: str) -> None:
        """Remove an analysis run's stored results (labels and history are untouched)."""
        try:
            store.delete_run(self._reloaded(), key)
        except KeyError as error:
            raise ProjectError(error.args[0]) from None

    def remove_synthetic(self, recipe_id: str) -> int:
        """Delete the samples and images one :func:`workbench.synthesize` call made; returns
        how many. Real samples, labels, histories and model versions are untouched."""
        from workbench.targeted import remove_synthetic

        return remove_synthetic(self, recipe_id)

    def drift_history(self) -> pd.DataFrame:
        """Every drift check stored by :func:`workbench.drift`, oldest first: check_id, time,
        version, batch, n_images, n_outliers, drifted, p_value, statistic, alpha, method,
        summary."""
        from workbench.monitoring import drift_history

        return drift_history(self)

    # -- reading -----------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per sample.

        Columns: ``sample_id`` (and ``id``, the same), ``filepath``, ``label`` (consensus,
        None when unlabelled), ``split``, one column per slice field, ``tags``.
        """
        fields = self.slice_fields
        values = self._dataset.values(["id", "filepath", "ground_truth.label", "split",
                                       *fields, "tags"])
        columns = ["sample_id", "filepath", "label", "split", *fields, "tags"]
        frame = pd.DataFrame(dict(zip(columns, values, strict=True)), columns=columns)
        frame.insert(1, "id", frame["sample_id"])
        return frame

    def _reloaded(self) -> fo.Dataset:
        self._dataset.reload()
        return self._dataset


def list_projects() -> list[str]:
    """Names of all Loupe projects in the database, sorted."""
    return store.list_project_names()


def delete_project(name: str) -> None:
    """Delete a project's dataset and its folder. Irreversible."""
    _check_name(name)
    if store.dataset_exists(name):
        store.load_dataset(name).delete()
    shutil.rmtree(projects_dir() / name, ignore_errors=True)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ProjectError(
            f"invalid project name {name!r}: use 1–64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit")


def _valid_label(label: object) -> bool:
    return isinstance(label, str) and bool(label.strip()) and label == label.strip()


def _check_labels(labels: Iterable[str], argument: str) -> list[str]:
    labels = list(labels)
    for label in labels:
        if not _valid_label(label):
            raise ProjectError(f"{argument}: {label!r} is not a valid label (a non-empty "
                               "string without leading or trailing spaces)")
    return list(dict.fromkeys(labels))
