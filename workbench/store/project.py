"""A Loupe project: one persistent FiftyOne dataset plus a project folder beside it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench.config import projects_dir
from workbench.errors import ProjectError
from workbench.store import _db as store
from workbench.store import box_records
from workbench.store.eval_sets import EvalSets
from workbench.store.ingest.scan import (
    BATCH_FIELD,
    Candidate,
    ImportReport,
    Layout,
    check_batch,
    read_label_csv,
    read_metadata_csv,
    scan_folder,
)
from workbench.store.ingest.write import import_candidates
from workbench.store.labels import Annotation, now
from workbench.store.ownership import (
    OWNER,
    OWNER_KEY,
    require_loupe_dataset,
)
from workbench.store.ownership import (
    check_name as _check_name,
)
from workbench.store.safe_paths import remove_inside

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.train.versions import ModelVersion

TASKS = ("classification", "detection")


class Project(EvalSets):
    """A named inspection project.

    Create one with :meth:`create`, reopen it with :meth:`open`. The FiftyOne dataset is
    :attr:`dataset`; thumbnails, checkpoints and exports go in :attr:`folder`. The frozen
    evaluation and golden sets: :meth:`freeze_eval`, :meth:`golden` (from
    :class:`~workbench.store.eval_sets.EvalSets`).
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
        task : {"classification", "detection"}
            What the labels describe: one class per image, or boxes (``ground_truth`` is
            then ``fo.Detections``; label boxes with :meth:`annotate_boxes`).
        overwrite : bool
            Delete an existing project of that name first (only a dataset Loupe created:
            another tool's FiftyOne dataset of that name is never replaced).
        """
        _check_name(name)
        if task not in TASKS:
            raise ProjectError(f"task={task!r} is not supported; choose one of {TASKS}")
        if store.dataset_exists(name):
            if not overwrite:
                raise ProjectError(
                    f"project {name!r} already exists; open it with Project.open({name!r}) or "
                    "pass overwrite=True to replace it")
            require_loupe_dataset(name, "replace")
            delete_project(name)
        classes = _check_labels(classes, "classes")
        dataset = store.create_dataset(name, classes=classes, task=task)
        store.update_project_info(dataset, **{OWNER_KEY: OWNER})
        project = cls(dataset)
        project.folder.mkdir(parents=True, exist_ok=True)
        return project

    @classmethod
    @store.translate_outages
    def open(cls, name: str) -> Project:
        """Open an existing project by name (one lookup by name: as fast among 1,000
        projects as among 3)."""
        dataset = store.load_project(name)
        if dataset is None:
            names = store.list_project_names()
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
            known = (f"did you mean {', '.join(map(repr, close))}?" if close else
                     f"projects: {', '.join(names)}" if len(names) <= 10 else
                     f"{len(names)} projects; wb.list_projects(search=...) finds one")
            raise ProjectError(f"project {name!r} not found ({known}); create it with "
                               f"Project.create({name!r})")
        return cls(dataset)

    @classmethod
    def import_archive(cls, path: str | Path, name: str | None = None,
                       overwrite: bool = False, **limits: int) -> Project:
        """Restore a project from an archive written by :meth:`export_archive`.

        Parameters
        ----------
        path : str or Path
            The ``.tar`` / ``.tar.gz`` file.
        name : str, optional
            Restore under this name (default: the archived project's name).
        overwrite : bool
            Replace an existing project of that name (only once the archive has been
            read and checked in full, and never a FiftyOne dataset Loupe did not create).
        **limits : int
            ``max_members``, ``max_member_bytes``, ``max_total_bytes``: see
            :func:`workbench.store.archive.import_archive`.

        Raises
        ------
        ProjectError
            A bad archive (not a tar file, cut short, no manifest, failed checksum, unsafe
            member names) or a name that is taken; nothing is created then.
        """
        from workbench.store.archive import import_archive

        return cls.open(import_archive(path, name, overwrite=overwrite, **limits))

    def export_archive(self, path: str | Path, *, include_embeddings: bool = True) -> Path:
        """Back the project up into one ``.tar`` (or ``.tar.gz``) file: samples with their
        full label history, slice fields, tags, predictions and runs, the images (also
        those outside the project folder), model versions with checkpoints, drift checks
        and the label book. Restore it with :meth:`Project.import_archive`."""
        from workbench.store.archive import export_archive

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
    def task(self) -> str:
        """``"classification"`` or ``"detection"`` (fixed when the project is created)."""
        return str(store.project_info(self._dataset).get("task", "classification"))

    @property
    def slice_fields(self) -> list[str]:
        """Metadata fields imported for slicing (``line``, ``camera``, ``lighting``, …)."""
        return list(store.project_info(self._reloaded()).get("slice_fields", []))

    def __len__(self) -> int:
        return len(self._dataset)

    def __repr__(self) -> str:
        task = "" if self.task == "classification" else f"task={self.task!r}, "
        return (f"Project({self.name!r}: {len(self)} samples, {task}classes={self.classes}, "
                f"slice_fields={self.slice_fields})")

    # -- labels ------------------------------------------------------------------------
    @store.translate_outages
    def add_class(self, label: str) -> None:
        """Add a class to the label schema (no-op if present)."""
        self._add_classes(_check_labels([label], "label"))

    @store.translate_outages
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
        DatabaseUnavailableError
            The database did not answer within ``$LOUPE_DB_TIMEOUT_S`` seconds (default 5);
            the message says what was stored. The same call made again stores each entry
            exactly once.
        """
        self._require_classification("annotate", "annotate_boxes")
        if label not in self.classes:
            raise ProjectError(
                f"label {label!r} is not a class of project {self.name!r} "
                f"(classes: {', '.join(self.classes) or 'none'}); add it with "
                f"p.add_class({label!r}) first")
        self._append(sample_ids, label, annotator=annotator, review=review)

    @store.translate_outages
    def withdraw(self, sample_ids: str | Iterable[str], *, annotator: str,
                 review: bool = False) -> None:
        """Withdraw ``annotator``'s vote on the samples (``review=True``: the review in force).

        Appends a withdrawal entry (label None); the history before it is kept, and the
        consensus falls back to the remaining votes. This is how an undo is stored.
        """
        self._require_classification("withdraw", "withdraw_boxes")
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

    @store.translate_outages
    def history(self, sample_id: str) -> pd.DataFrame:
        """Every label ever given to a sample, oldest first.

        Columns annotator, label (None for a withdrawal), time, review (True for a final
        decision).
        """
        self._require_classification("history", "box_history")
        if not store.existing_ids(self._dataset, [sample_id]):
            raise ProjectError(f"sample id {sample_id!r} is not in project {self.name!r}")
        entries = store.histories(self._dataset, [sample_id])[sample_id]
        frame = pd.DataFrame(entries, columns=["annotator", "label", "time", "review"])
        frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
        frame["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
        return frame

    def histories(self, sample_ids: Iterable[str]) -> dict[str, list[dict]]:
        """Sample id → its label history as dicts (annotator, label, time, review), oldest
        first; the batch form of :meth:`history` that review widgets read per page."""
        return store.histories(self._dataset, list(sample_ids))

    def box_histories(self, sample_ids: Iterable[str]) -> dict[str, list[dict]]:
        """Sample id → its box history as dicts (annotator, time, review, boxes)."""
        return box_records.box_histories(self._dataset, list(sample_ids))

    def _require_classification(self, method: str, instead: str) -> None:
        if self.task != "classification":
            raise ProjectError(f"p.{method}() is for class labels, but {self.name!r} is a "
                               f"{self.task} project: use p.{instead}() instead")

    # -- boxes (detection projects) ------------------------------------------------------
    @store.translate_outages
    def annotate_boxes(self, sample_id: str, boxes: object, *, annotator: str,
                       review: bool = False) -> None:
        """Record ``annotator``'s full box set for one image (``[]``: no defect here).

        Appended to the sample's ``box_annotations`` history (never replacing it); the
        consensus ``ground_truth`` becomes the latest review's boxes if a review is in
        force, else the newest box set in force.

        Parameters
        ----------
        sample_id : str
        boxes : list of dict or DataFrame
            ``{"label", "bounding_box": [x, y, w, h]}`` or ``{"label", "x", "y", "w", "h"}``
            per box, relative to the image size (top-left corner and size, in [0, 1]); or a
            DataFrame with columns label, x, y, w, h.
        annotator : str
        review : bool, default False
            A final decision that sets the consensus until a later review.

        Raises
        ------
        ProjectError
            Naming the box index and field (``boxes[1].bounding_box: w must be > 0``), an
            unknown class, sample id or empty annotator; nothing is written then.
        """
        from workbench.store import detection as detection_store

        detection_store.annotate_boxes(self, sample_id, boxes, annotator=annotator,
                                       review=review)

    @store.translate_outages
    def withdraw_boxes(self, sample_id: str, *, annotator: str, review: bool = False) -> None:
        """Withdraw ``annotator``'s box set for the image (``review=True``: the review in
        force). Appends a withdrawal entry; the consensus falls back to the box sets left."""
        from workbench.store import detection as detection_store

        detection_store.withdraw_boxes(self, sample_id, annotator=annotator, review=review)

    @store.translate_outages
    def box_history(self, sample_id: str) -> pd.DataFrame:
        """Every box set ever given to an image, oldest first: annotator, time, review,
        n_boxes, boxes (list of ``{label, bounding_box}``; None for a withdrawal)."""
        from workbench.store import detection as detection_store

        return detection_store.box_history(self, sample_id)

    def boxes(self, view: fo.DatasetView | None = None) -> pd.DataFrame:
        """Consensus boxes, one row per box: sample_id, filepath, box_index, label, x, y,
        w, h (relative). Images labelled "no defect" have no rows: the labelled images are
        those whose ``n_boxes`` in :meth:`to_pandas` is not null."""
        from workbench.store import detection as detection_store

        return detection_store.boxes(self, view)

    @store.translate_outages
    def import_voc(self, images_dir: str | Path, annotations_dir: str | Path, *,
                   annotator: str = "import", progress: bool = True) -> ImportReport:
        """Import images with Pascal VOC XML boxes (one file per image).

        Each XML's ``filename`` is looked for under ``images_dir`` (in sub-folders too, by
        name); box coordinates are VOC's 1-based pixel corners. Duplicates and unreadable
        images are handled as by :meth:`import_folder`; a malformed XML, a missing field or
        a box outside the image rejects that file (``report.rejected`` names the file and
        field) and its image is not imported. Images no XML names are listed as rejected.
        Classes are added to the schema as found.
        """
        from workbench.store import detection as detection_store

        return detection_store.import_voc(self, images_dir, annotations_dir,
                                          annotator=annotator, progress=progress)

    @store.translate_outages
    def import_coco(self, json_path: str | Path, images_dir: str | Path | None = None, *,
                    annotator: str = "import", progress: bool = True) -> ImportReport:
        """Import images with COCO JSON boxes (``bbox`` = [x, y, w, h] in pixels).

        ``file_name`` is read relative to ``images_dir`` (default: the JSON's folder).
        Images without annotations are labelled "no defect". An image with a bad
        annotation (unknown category, box outside the image) is rejected whole.

        Raises
        ------
        ProjectError
            A file that is not readable COCO JSON at all; nothing is imported then.
        """
        from workbench.store import detection as detection_store

        return detection_store.import_coco(self, json_path, images_dir, annotator=annotator,
                                           progress=progress)

    def export_voc(self, folder: str | Path) -> Path:
        """Write the consensus boxes of labelled images as Pascal VOC: ``folder/images/``
        (copies) and ``folder/annotations/<name>.xml``. Re-import with
        ``import_voc(folder / "images", folder / "annotations")``."""
        from workbench.store import detection as detection_store

        return detection_store.export_voc(self, folder)

    def export_coco(self, json_path: str | Path) -> Path:
        """Write the consensus boxes of labelled images as one COCO JSON file; images are
        named relative to the file's folder when they lie under it, else absolutely."""
        from workbench.store import detection as detection_store

        return detection_store.export_coco(self, json_path)

    # -- import ------------------------------------------------------------------------
    @store.translate_outages
    def import_folder(self, path: str | Path, layout: Layout = "class_folders",
                      annotator: str = "import", metadata_csv: str | Path | None = None, *,
                      follow_symlinks: bool = False, exclude: Sequence[str] = (),
                      thorough: bool = False, progress: bool = True,
                      batch: str | None = None) -> ImportReport:
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
        batch : str, optional
            Tag every new sample with this ``batch`` field (e.g. the inbox folder's name,
            see :func:`workbench.store.inbox.inbox_batches`); images already stored keep
            theirs.

        Returns
        -------
        ImportReport
            ``added``, ``duplicates``, ``rejected`` (path, reason), ``converted``.
        """
        batch = check_batch(batch)
        fields_by_name, columns = ({}, [])
        if metadata_csv is not None:
            fields_by_name, columns = read_metadata_csv(Path(metadata_csv))
        candidates, rejected = scan_folder(Path(path), layout=layout, annotator=annotator,
                                           follow_symlinks=follow_symlinks, exclude=exclude)
        for cand in candidates:
            cand.fields.update(fields_by_name.get(cand.path.name, {}))
            if batch is not None:
                cand.fields[BATCH_FIELD] = batch
        if batch is not None and candidates:
            store.ensure_slice_fields(self._dataset, [BATCH_FIELD])
        return self._import(candidates, rejected, columns, thorough=thorough,
                            progress=progress)

    @store.translate_outages
    def import_feedback(self, path: str | Path, *, batch: str | None = None,
                        progress: bool = True) -> ImportReport:
        """Import the images a line sent back (``loupe-edge watch --out path``) as
        unlabelled batches, with the line's verdict as ``pred_edge``
        (:func:`workbench.store.feedback.import_feedback`)."""
        from workbench.store.feedback import import_feedback

        return import_feedback(self, path, batch=batch, progress=progress)

    @store.translate_outages
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
        if self.task != "classification" and any(c.labels for c in candidates):
            raise ProjectError(
                f"{self.name!r} is a {self.task} project: images take boxes, not class "
                "labels. Import boxes with p.import_voc()/p.import_coco(), or images alone "
                "with layout='unlabeled' (or a CSV with empty labels)")
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
        # classes first: an import killed halfway leaves samples whose labels are classes
        self._add_classes(label for c in candidates for _, label in c.labels)
        import_candidates(self._dataset, self.folder / "media", candidates, report=report,
                          thorough=thorough, progress=progress)
        return report

    def _add_classes(self, labels: Iterable[str]) -> None:
        classes = self.classes
        added = [label for label in dict.fromkeys(labels) if label not in classes]
        if added:
            store.update_project_info(self._dataset, classes=classes + added)

    # -- model versions ----------------------------------------------------------------
    def models(self) -> pd.DataFrame:
        """Model versions, oldest first: name, parent, backbone, mode, created, accuracy,
        macro_f1 (out-of-fold or validation), map50 (detectors, out-of-fold), metrics (the
        whole dict)."""
        from workbench.train.versions import ModelVersion, models_dir, version_names

        rows = []
        for name in version_names(self.folder):
            version = ModelVersion.load(models_dir(self.folder) / name, self.name)
            rows.append({"name": name, "parent": version.parent,
                         "backbone": version.config.get("backbone"), "mode": version.mode,
                         "created": pd.Timestamp(version.record.get("created")),
                         "accuracy": version.metrics.get("accuracy"),
                         "macro_f1": version.metrics.get("macro_f1"),
                         "map50": version.metrics.get("map50"),
                         "metrics": version.metrics})
        return pd.DataFrame(rows, columns=["name", "parent", "backbone", "mode", "created",
                                           "accuracy", "macro_f1", "map50", "metrics"])

    def model(self, name: str | None = None) -> ModelVersion:
        """Open a model version by name (``"v1"``); the newest when ``name`` is None."""
        from workbench.train.versions import ModelVersion, models_dir, version_names

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
        from workbench.store.synthetic import remove_recipe

        return remove_recipe(self, recipe_id)

    def drift_history(self) -> pd.DataFrame:
        """Every drift check stored by :func:`workbench.drift`, oldest first: check_id, time,
        version, batch, n_images, n_outliers, drifted, p_value, statistic, alpha, method,
        summary."""
        from workbench.store.drift_checks import history

        return history(self)

    # -- reading -----------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per sample.

        Columns: ``sample_id`` (and ``id``, the same), ``filepath``, ``label`` (consensus,
        None when unlabelled; always None in a detection project), ``split``, one column per
        slice field, ``tags``; a detection project adds ``n_boxes`` (consensus boxes, null
        when unlabelled, 0 for "no defect").
        """
        fields = self.slice_fields
        values = self._dataset.values(["id", "filepath", "ground_truth.label", "split",
                                       *fields, "tags"])
        columns = ["sample_id", "filepath", "label", "split", *fields, "tags"]
        frame = pd.DataFrame(dict(zip(columns, values, strict=True)), columns=columns)
        frame.insert(1, "id", frame["sample_id"])
        if self.task == "detection":
            from workbench.store.detection import box_counts

            frame["n_boxes"] = pd.array(box_counts(self._dataset), dtype="Int64")
        return frame

    def _reloaded(self) -> fo.Dataset:
        return store.fresh(self._dataset)


def list_projects(search: str | None = None) -> list[str]:
    """Names of the Loupe projects in the database, sorted; with ``search``, those whose
    name contains it (case-insensitive)."""
    names = store.list_project_names()
    if not search:
        return names
    needle = str(search).casefold()
    return [name for name in names if needle in name.casefold()]


def delete_project(name: str) -> None:
    """Delete a project's dataset and its folder. Irreversible.

    Raises
    ------
    ProjectError
        When a FiftyOne dataset of that name exists that Loupe did not create (see
        :func:`created_by_loupe`): Loupe never deletes another tool's dataset.
    """
    _check_name(name)
    if store.dataset_exists(name):
        require_loupe_dataset(name, "delete")
        store.load_dataset(name).delete()
    remove_inside(projects_dir(), projects_dir() / name, what="project folder")


def _valid_label(label: object) -> bool:
    return isinstance(label, str) and bool(label.strip()) and label == label.strip()


def _check_labels(labels: Iterable[str], argument: str) -> list[str]:
    labels = list(labels)
    for label in labels:
        if not _valid_label(label):
            raise ProjectError(f"{argument}: {label!r} is not a valid label (a non-empty "
                               "string without leading or trailing spaces)")
    return list(dict.fromkeys(labels))
