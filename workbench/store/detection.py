"""Box labels of detection projects: edits, history, reading, and VOC/COCO import and export.

The bodies of :class:`workbench.Project`'s detection methods. Each image's box history is
the sample field ``box_annotations`` (append-only entries, see :mod:`workbench.store.boxes`); the
consensus boxes are ``ground_truth`` (``fo.Detections``), written together with the history
by :func:`workbench.store.box_records.append_box_history`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image

from workbench.errors import ProjectError
from workbench.store import _db as store
from workbench.store import box_records
from workbench.store.boxes import Box, check_boxes, latest_box_sets, same_boxes
from workbench.store.ingest.images import ImageRejectedError, content_hash, read_bytes, regular_file
from workbench.store.ingest.scan import Candidate, ImportReport, display_path
from workbench.store.ingest.voc_coco import (
    IMAGE_SUFFIXES,
    BoxFileError,
    BoxRecord,
    coco_document,
    read_coco,
    read_voc,
    relative_boxes,
    write_voc,
)
from workbench.store.labels import now

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.store.project import Project

BOX_COLUMNS = ["sample_id", "filepath", "box_index", "label", "x", "y", "w", "h"]
HISTORY_COLUMNS = ["annotator", "time", "review", "n_boxes", "boxes"]


def _error(message: str) -> Exception:
    return ProjectError(message)


def require_detection(project: Project, what: str) -> None:
    """Raise ProjectError unless ``project`` is a detection project."""
    if project.task != store.DETECTION:
        raise _error(f"{what} needs a detection project; {project.name!r} is a "
                     f"{project.task} project (use annotate/withdraw/history for class labels)")


def _check_sample(project: Project, sample_id: str) -> None:
    if not isinstance(sample_id, str) or not store.existing_ids(project.dataset, [sample_id]):
        raise _error(f"sample id {sample_id!r} is not in project {project.name!r}")


def _check_annotator(annotator: Any) -> None:
    if not annotator or not isinstance(annotator, str):
        raise _error("annotator must be a non-empty name, e.g. annotator='alice'")


# -- edits -----------------------------------------------------------------------------------
def annotate_boxes(project: Project, sample_id: str, boxes: Any, *, annotator: str,
                   review: bool) -> None:
    """See :meth:`workbench.Project.annotate_boxes`."""
    require_detection(project, "annotate_boxes")
    _check_annotator(annotator)
    classes = project.classes
    try:
        checked = check_boxes(boxes)
    except ValueError as err:
        raise _error(str(err)) from None
    for index, box in enumerate(checked):
        if box["label"] not in classes:
            raise _error(f"boxes[{index}].label: {box['label']!r} is not a class of project "
                         f"{project.name!r} (classes: {', '.join(classes) or 'none'}); add it "
                         f"with p.add_class({box['label']!r}) first")
    _check_sample(project, sample_id)
    entry = box_records.box_entry(annotator, checked, now(), review=review)
    box_records.append_box_history(project.dataset, {sample_id: [entry]})


def withdraw_boxes(project: Project, sample_id: str, *, annotator: str, review: bool) -> None:
    """See :meth:`workbench.Project.withdraw_boxes`."""
    require_detection(project, "withdraw_boxes")
    _check_annotator(annotator)
    _check_sample(project, sample_id)
    entry = box_records.box_entry(annotator, None, now(), review=review)
    box_records.append_box_history(project.dataset, {sample_id: [entry]})


# -- reading ---------------------------------------------------------------------------------
def box_history(project: Project, sample_id: str) -> pd.DataFrame:
    """See :meth:`workbench.Project.box_history`."""
    require_detection(project, "box_history")
    _check_sample(project, sample_id)
    entries = box_records.box_histories(project.dataset, [sample_id]).get(sample_id, [])
    rows = [{**e, "n_boxes": None if e["boxes"] is None else len(e["boxes"])} for e in entries]
    frame = pd.DataFrame(rows, columns=HISTORY_COLUMNS)
    frame["n_boxes"] = frame["n_boxes"].astype("Int64")
    frame["review"] = frame["review"].astype(bool)
    return frame


def boxes(project: Project, view: fo.DatasetView | None = None) -> pd.DataFrame:
    """See :meth:`workbench.Project.boxes`."""
    require_detection(project, "boxes")
    collection = project.dataset if view is None else view
    ids, paths, labels, coords = collection.values(
        ["id", "filepath", "ground_truth.detections.label",
         "ground_truth.detections.bounding_box"])
    rows = []
    for sid, path, names, boxes_ in zip(ids, paths, labels, coords, strict=True):
        for index, (label, (x, y, w, h)) in enumerate(zip(names or [], boxes_ or [],
                                                          strict=True)):
            rows.append((sid, path, index, label, x, y, w, h))
    frame = pd.DataFrame(rows, columns=BOX_COLUMNS)
    return frame.astype({"box_index": int, "x": float, "y": float, "w": float, "h": float})


def box_counts(collection: fo.SampleCollection) -> list[int | None]:
    """Consensus boxes per sample in ``collection`` order (None: not labelled)."""
    return [None if labels is None else len(labels)
            for labels in collection.values("ground_truth.detections.label")]


# -- import ----------------------------------------------------------------------------------
def import_voc(project: Project, images_dir: str | Path, annotations_dir: str | Path, *,
               annotator: str, progress: bool) -> ImportReport:
    """See :meth:`workbench.Project.import_voc`."""
    require_detection(project, "import_voc")
    _check_annotator(annotator)
    images_dir, annotations_dir = Path(images_dir), Path(annotations_dir)
    for folder, what in ((images_dir, "images_dir"), (annotations_dir, "annotations_dir")):
        if not folder.is_dir():
            raise _error(f"{what} not found: {display_path(folder)}")
    index = _image_index(images_dir, skip=annotations_dir)
    rejected: list[tuple[str, str]] = []
    matched: list[tuple[Path, BoxRecord]] = []
    for xml in sorted(annotations_dir.rglob("*.xml")):
        try:
            record = read_voc(xml)
        except BoxFileError as err:
            rejected.append((display_path(xml), str(err)))
            continue
        image, problem = _find_image(record, xml, images_dir, index)
        if problem:
            rejected.append((display_path(xml), problem))
        else:
            matched.append((image, record))
    annotated = {path.resolve() for path, _ in matched}
    for paths in index[0].values():
        for path in paths:
            if path.resolve() not in annotated:
                rejected.append((display_path(path), "no VOC annotation names this image in "
                                 f"{display_path(annotations_dir)}; import images without "
                                 "boxes with import_folder(..., layout='unlabeled')"))
    return _import_records(project, matched, rejected, annotator=annotator, progress=progress)


def import_coco(project: Project, json_path: str | Path, images_dir: str | Path | None, *,
                annotator: str, progress: bool) -> ImportReport:
    """See :meth:`workbench.Project.import_coco`."""
    require_detection(project, "import_coco")
    _check_annotator(annotator)
    json_path = Path(json_path)
    images_dir = json_path.parent if images_dir is None else Path(images_dir)
    if not images_dir.is_dir():
        raise _error(f"images_dir not found: {display_path(images_dir)}")
    try:
        records, rejected, categories = read_coco(json_path)
    except BoxFileError as err:
        raise _error(f"cannot import {display_path(json_path)}: {err}") from None
    matched = []
    for record in records:
        path = images_dir / record.filename
        if record.error:
            rejected.append((display_path(path), record.error))
        elif not Path(record.filename).is_absolute() and not Path(
                os.path.normpath(path.absolute())).is_relative_to(
                    os.path.normpath(images_dir.absolute())):
            rejected.append((record.source, f"{record.source}.file_name: "
                             f"{record.filename!r} climbs out of images_dir with '..'"))
        else:
            matched.append((path, record))
    project._add_classes([c for c in categories if c not in project.classes])
    return _import_records(project, matched, rejected, annotator=annotator,
                           progress=progress)


_Index = tuple[dict[str, list[Path]], dict[str, list[Path]]]


def _image_index(root: Path, *, skip: Path) -> _Index:
    """Image files under ``root`` (not under ``skip`` or hidden folders), by file name and
    by stem."""
    skip_real = skip.resolve()
    by_name: dict[str, list[Path]] = {}
    by_stem: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and Path(dirpath, d).resolve() != skip_real)
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                by_name.setdefault(name, []).append(Path(dirpath, name))
                by_stem.setdefault(Path(name).stem, []).append(Path(dirpath, name))
    return by_name, by_stem


def _find_image(record: BoxRecord, xml: Path, images_dir: Path,
                index: _Index) -> tuple[Path | None, str | None]:
    if record.filename and "/" in record.filename and (images_dir / record.filename).is_file():
        return images_dir / record.filename, None
    by_name, by_stem = index
    found = by_name.get(Path(record.filename).name, []) if record.filename else []
    if not found:  # "filename" without its extension, or no filename: the XML's own name
        found = by_stem.get(Path(record.filename).stem if record.filename else xml.stem, [])
    what = (f"filename {record.filename!r}" if record.filename
            else f"no filename, and an image named {xml.stem}.*")
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, f"{xml.name}: filename: {what} not found under {display_path(images_dir)}"
    return None, (f"{xml.name}: filename: {what} matches {len(found)} images "
                  f"({', '.join(display_path(p) for p in found[:3])})")


def _import_records(project: Project, matched: Sequence[tuple[Path, BoxRecord]],
                    rejected: list[tuple[str, str]], *, annotator: str,
                    progress: bool) -> ImportReport:
    """Check boxes against image sizes, import the images, then append their box sets.

    A file whose boxes are bad is rejected before anything is imported, so no image is
    stored without the boxes its annotation gives it.
    """
    checked: list[tuple[Path, list[Box], BoxRecord, tuple[int, int] | None]] = []
    for path, record in matched:
        path = path.absolute()
        size = _image_size(path)
        if size is None:  # unreadable or missing: the importer says why
            checked.append((path, [], record, None))
            continue
        try:
            checked.append((path, relative_boxes(record, *size), record, size))
        except BoxFileError as err:
            rejected.append((display_path(path), str(err)))
    candidates = list({path: Candidate(path) for path, _, _, _ in checked}.values())
    report = project._import(candidates, rejected, [], thorough=False, progress=progress)
    by_hash = store.hashes(project.dataset)
    ids, widths, heights = project.dataset.values(["id", "metadata.width", "metadata.height"])
    stored_sizes = dict(zip(ids, zip(widths, heights, strict=True), strict=True))
    stamp = now()
    new: dict[str, list[dict]] = {}
    labels: list[str] = []
    for path, relative, record, size in checked:
        try:
            sid = by_hash.get(content_hash(read_bytes(path)))
        except ImageRejectedError:
            sid = None
        if sid is None or size is None:  # rejected by the importer
            continue
        if stored_sizes.get(sid) != size:
            report.rejected.append((display_path(path), f"{record.source}: the image was "
                                    f"stored as {stored_sizes.get(sid)} (converted, e.g. "
                                    f"rotated), not {size}; boxes not stored"))
            continue
        new.setdefault(sid, []).append(box_records.box_entry(annotator, relative, stamp))
        labels.extend(box["label"] for box in relative)
    project._add_classes(dict.fromkeys(labels))
    fresh = _drop_unchanged(project.dataset, new)
    box_records.append_box_history(project.dataset, fresh)
    report.annotations_added += sum(len(v) for v in fresh.values())
    return report


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        regular_file(path)  # never open a FIFO or a device: it would block or never end
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _drop_unchanged(dataset: fo.Dataset, new: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Drop an annotator's entries for an image when the last of them equals that
    annotator's box set in force, so re-running an import adds nothing (two annotation
    files for one image, e.g. byte-identical images, are both kept the first time)."""
    current = box_records.box_histories(dataset, list(new))
    fresh: dict[str, list[dict]] = {}
    for sid, entries in new.items():
        in_force = latest_box_sets(current.get(sid, []))
        last = {entry["annotator"]: entry["boxes"] for entry in entries}
        keep = {who for who, boxes in last.items()
                if who not in in_force or not same_boxes(in_force[who][1], boxes)}
        kept = [entry for entry in entries if entry["annotator"] in keep]
        if kept:
            fresh[sid] = kept
    return fresh


# -- export ----------------------------------------------------------------------------------
def _labelled(project: Project) -> list[dict[str, Any]]:
    """Labelled samples: id, filepath, width, height, depth and consensus boxes."""
    ids, paths, widths, heights, channels, labels, coords = project.dataset.values(
        ["id", "filepath", "metadata.width", "metadata.height", "metadata.num_channels",
         "ground_truth.detections.label", "ground_truth.detections.bounding_box"])
    out = []
    for sid, path, width, height, depth, names, boxes_ in zip(
            ids, paths, widths, heights, channels, labels, coords, strict=True):
        if names is None:
            continue
        if not width or not height:
            size = _image_size(Path(path))
            if size is None:
                raise _error(f"cannot read the size of {display_path(path)} (sample {sid})")
            width, height = size
        out.append({"sample_id": sid, "filepath": path, "width": width, "height": height,
                    "depth": depth or 3,
                    "boxes": [{"label": n, "bounding_box": list(b)}
                              for n, b in zip(names, boxes_ or [], strict=True)]})
    return out


def export_voc(project: Project, folder: str | Path) -> Path:
    """See :meth:`workbench.Project.export_voc`."""
    require_detection(project, "export_voc")
    folder = Path(folder)
    images, annotations = folder / "images", folder / "annotations"
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for sample in _labelled(project):
        source = Path(sample["filepath"])
        name = source.name
        if name in used:
            name = f"{source.stem}_{sample['sample_id'][-8:]}{source.suffix}"
        used.add(name)
        shutil.copyfile(source, images / name)
        write_voc(annotations / f"{Path(name).stem}.xml", filename=name,
                  width=sample["width"], height=sample["height"], depth=sample["depth"],
                  boxes=sample["boxes"])
    return folder


def export_coco(project: Project, json_path: str | Path) -> Path:
    """See :meth:`workbench.Project.export_coco`."""
    require_detection(project, "export_coco")
    json_path = Path(json_path)
    base = json_path.parent.absolute()
    images = []
    for sample in _labelled(project):
        path = Path(sample["filepath"])
        name = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
        images.append({**sample, "file_name": name})
    document = coco_document(images, project.classes)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    partial = json_path.with_name(json_path.name + ".partial")
    partial.write_text(json.dumps(document, indent=1), encoding="utf-8")
    partial.replace(json_path)
    return json_path
