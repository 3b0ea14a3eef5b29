"""Pascal VOC and COCO box files: round trips exact to a pixel, bad files rejected with the
file and field named, nothing stored lost; a few real NEU-DET annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from images_factory import write_image

import workbench as wb
from workbench.store.ingest.voc_coco import read_voc

NEU = Path("/work/shared/data/neu_surface_defect")
SIZE = (80, 60)  # width, height of the generated images


def _voc(path: Path, filename: str | None, objects: list[tuple], *, size=SIZE,
         raw_object: str = "") -> Path:
    """A VOC file; objects are (name, xmin, ymin, xmax, ymax) in 1-based pixels."""
    parts = ["<annotation>", "<folder>x</folder>"]
    if filename:
        parts.append(f"<filename>{filename}</filename>")
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                     "<depth>3</depth></size>")
    for name, *corners in objects:
        coords = "".join(f"<{k}>{v}</{k}>" for k, v in
                         zip(("xmin", "ymin", "xmax", "ymax"), corners, strict=True))
        parts.append(f"<object><name>{name}</name><bndbox>{coords}</bndbox></object>")
    parts += [raw_object, "</annotation>"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


@pytest.fixture
def detection(request):
    names = []

    def make(suffix: str = "") -> wb.Project:
        name = "".join(ch if ch.isalnum() or ch in "-_." else "-"
                       for ch in f"io-{request.node.name[:36]}{suffix}")
        names.append(name)
        return wb.Project.create(name, task="detection", overwrite=True)

    yield make
    for name in names:
        wb.delete_project(name)


OBJECTS = {
    "a.png": [("scratch", 1, 1, 80, 60)],  # the whole image
    "b.png": [("dent", 11, 21, 30, 40), ("scratch", 50, 5, 52, 59)],
    "c.png": [],  # annotated: no defect
}


@pytest.fixture
def voc(tmp_path):
    images, annotations = tmp_path / "voc" / "JPEGImages", tmp_path / "voc" / "Annotations"
    for seed, (name, objects) in enumerate(OBJECTS.items()):
        write_image(images / name, seed=seed, size=SIZE)
        _voc(annotations / f"{Path(name).stem}.xml", name, objects)
    return images, annotations


def _pixels(xml: Path) -> dict:
    record = read_voc(xml)
    return {"filename": record.filename,
            "boxes": sorted((b.label, b.x0, b.y0, b.x1, b.y1) for b in record.boxes)}


def test_voc_import_reads_1_based_corners(detection, voc):
    p = detection()
    report = p.import_voc(*voc, annotator="neu", progress=False)
    assert len(report.added) == 3 and not report.rejected and report.annotations_added == 3
    assert p.classes == ["scratch", "dent"]
    frame = p.to_pandas()
    assert sorted(frame.n_boxes.tolist()) == [0, 1, 2]
    boxes = p.boxes().set_index("label")
    assert boxes.loc["dent", ["x", "y", "w", "h"]].tolist() == pytest.approx(
        [10 / 80, 20 / 60, 20 / 80, 20 / 60])
    whole = p.boxes()[p.boxes().filepath.str.endswith("a.png")]
    assert whole[["x", "y", "w", "h"]].values.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    history = p.box_history(frame.sample_id[0])
    assert history.annotator.tolist() == ["neu"]


def test_voc_round_trip_is_exact(detection, voc, tmp_path):
    p = detection()
    p.import_voc(*voc, progress=False)
    out = p.export_voc(tmp_path / "export")
    for name in OBJECTS:
        stem = Path(name).stem
        assert _pixels(out / "annotations" / f"{stem}.xml") == _pixels(voc[1] / f"{stem}.xml")
    q = detection("-again")
    report = q.import_voc(out / "images", out / "annotations", progress=False)
    assert len(report.added) == 3 and not report.rejected
    columns = ["label", "x", "y", "w", "h"]
    left = p.boxes().sort_values(columns)[columns].reset_index(drop=True)
    right = q.boxes().sort_values(columns)[columns].reset_index(drop=True)
    assert (left[["x", "y", "w", "h"]] - right[["x", "y", "w", "h"]]).abs().max().max() < 1e-9
    assert left.label.tolist() == right.label.tolist()


def test_reimport_adds_nothing_and_a_changed_file_adds_one_entry(detection, voc):
    p = detection()
    p.import_voc(*voc, progress=False)
    again = p.import_voc(*voc, progress=False)
    assert len(again.duplicates) == 3 and again.annotations_added == 0
    _voc(voc[1] / "b.xml", "b.png", [("dent", 11, 21, 31, 41)])
    changed = p.import_voc(*voc, progress=False)
    assert changed.annotations_added == 1
    sid = p.boxes().set_index("label").loc["dent", "sample_id"]
    assert p.box_history(sid).n_boxes.tolist() == [2, 1]


def test_bad_voc_files_are_rejected_naming_file_and_field(detection, voc):
    p = detection()
    p.import_voc(*voc, annotator="first", progress=False)
    before = p.boxes()
    images, annotations = voc
    for seed, name in enumerate(["d.png", "e.png", "f.png", "g.png", "h.png"], start=10):
        write_image(images / name, seed=seed, size=SIZE)
    (annotations / "d.xml").write_text("<annotation><filename>d.png</filename><object>")
    _voc(annotations / "e.xml", "e.png", [],
         raw_object="<object><name>dent</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                    "<xmax>5</xmax></bndbox></object>")
    _voc(annotations / "f.xml", "f.png", [("dent", 70, 10, 81, 20)])
    _voc(annotations / "g.xml", "nowhere.png", [("dent", 1, 1, 5, 5)])
    _voc(annotations / "h.xml", "h.png", [("dent", 1, 1, 5, 5)], size=(100, 60))
    report = p.import_voc(images, annotations, annotator="second", progress=False)
    reasons = {Path(path).name: reason for path, reason in report.rejected}
    assert "d.xml: malformed XML" in reasons["d.xml"]
    assert "e.xml: object[0].bndbox.ymax: missing" in reasons["e.xml"]
    assert "f.xml: object[0].bndbox.xmax: 81 is outside the image (width 80)" in reasons["f.png"]
    assert "g.xml: filename: filename 'nowhere.png' not found" in reasons["g.xml"]
    assert "h.xml: size 100x60 differs from the image's 80x60" in reasons["h.png"]
    # images of bad files are not imported, and nothing stored before is lost
    assert len(report.added) == 0 and len(p) == 3
    assert p.boxes().equals(before)
    # an image no annotation names is listed, not silently skipped
    assert "no VOC annotation" in reasons["d.png"]


def test_voc_without_size_or_filename_takes_them_from_the_image(detection, tmp_path):
    images, annotations = tmp_path / "img" / "cls", tmp_path / "ann"
    write_image(images / "x1.jpg", seed=3, size=SIZE, fmt="JPEG")
    _voc(annotations / "x1.xml", None, [("pit", 41, 31, 80, 60)], size=None)
    p = detection()
    report = p.import_voc(tmp_path / "img", annotations, progress=False)
    assert len(report.added) == 1 and not report.rejected
    assert p.boxes()[["x", "y", "w", "h"]].values.tolist() == [[0.5, 0.5, 0.5, 0.5]]


def _coco(tmp_path: Path) -> Path:
    for seed, name in enumerate(["p.png", "q.png", "r.png"]):
        write_image(tmp_path / "coco" / "images" / name, seed=seed + 20, size=SIZE)
    document = {
        "images": [{"id": 7, "file_name": "images/p.png", "width": 80, "height": 60},
                   {"id": 8, "file_name": "images/q.png", "width": 80, "height": 60},
                   {"id": 9, "file_name": "images/r.png"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 30.5, 15]},
            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [0, 0, 80, 60]},
            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [79, 59, 1, 1]},
        ],
        "categories": [{"id": 3, "name": "scratch"}, {"id": 5, "name": "dent"}],
    }
    path = tmp_path / "coco" / "labels.json"
    path.write_text(json.dumps(document))
    return path


def test_coco_round_trip_is_exact_to_a_pixel(detection, tmp_path):
    p = detection()
    report = p.import_coco(_coco(tmp_path), progress=False)
    assert len(report.added) == 3 and not report.rejected and report.annotations_added == 3
    assert p.classes == ["scratch", "dent"]
    counts = dict(zip(p.to_pandas().filepath.map(lambda f: Path(f).name),
                      p.to_pandas().n_boxes, strict=True))
    assert counts == {"p.png": 2, "q.png": 0, "r.png": 1}  # q: listed, no annotation
    out = p.export_coco(tmp_path / "coco" / "export.json")
    exported = json.loads(out.read_text())
    assert {i["file_name"] for i in exported["images"]} == {
        "images/p.png", "images/q.png", "images/r.png"}
    names = {c["id"]: c["name"] for c in exported["categories"]}
    pixel_boxes = sorted((names[a["category_id"]], *a["bbox"]) for a in exported["annotations"])
    assert pixel_boxes == sorted([("scratch", 10, 20, 30.5, 15), ("dent", 0, 0, 80, 60),
                                  ("scratch", 79, 59, 1, 1)])
    q = detection("-again")
    q.import_coco(out, progress=False)
    columns = ["label", "x", "y", "w", "h"]
    left = p.boxes().sort_values(columns)[columns].reset_index(drop=True)
    right = q.boxes().sort_values(columns)[columns].reset_index(drop=True)
    assert left.label.tolist() == right.label.tolist()
    assert ((left[["x", "w"]] - right[["x", "w"]]) * 80).abs().max().max() < 1
    assert ((left[["y", "h"]] - right[["y", "h"]]) * 60).abs().max().max() < 1


def test_bad_coco_entries_reject_their_image_naming_the_field(detection, tmp_path):
    path = _coco(tmp_path)
    document = json.loads(path.read_text())
    document["annotations"] += [
        {"id": 4, "image_id": 8, "category_id": 99, "bbox": [1, 1, 5, 5]},
        {"id": 5, "image_id": 42, "category_id": 3, "bbox": [1, 1, 5, 5]},
        {"id": 6, "image_id": 9, "category_id": 3, "bbox": [70, 10, 20, 5]},
    ]
    path.write_text(json.dumps(document))
    p = detection()
    report = p.import_coco(path, progress=False)
    reasons = {path.replace(str(tmp_path / "coco") + "/", ""): reason
               for path, reason in report.rejected}
    assert "labels.json: annotations[3].category_id: 99 is not in categories" in reasons[
        "images/q.png"]
    assert "annotations[4].image_id: 42 is not in images" in reasons[
        "labels.json: annotations[4]"]
    assert "annotations[5].bbox.x + w: 90 is outside the image (width 80)" in reasons[
        "images/r.png"]
    assert [Path(f).name for f in p.to_pandas().filepath] == ["p.png"]


def test_unreadable_coco_file_is_a_project_error_and_changes_nothing(detection, tmp_path):
    p = detection()
    p.import_coco(_coco(tmp_path), progress=False)
    before = p.boxes()
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(wb.ProjectError, match=r"broken\.json: not valid JSON"):
        p.import_coco(broken, progress=False)
    broken.write_text('{"images": []}')
    with pytest.raises(wb.ProjectError, match=r"broken\.json: 'annotations' must be a list"):
        p.import_coco(broken, progress=False)
    assert p.boxes().equals(before) and len(p) == 3


NEU_FILES = ["crazing_1", "inclusion_1", "scratches_1", "patches_101", "patches_105"]


@pytest.mark.skipif(not NEU.is_dir(), reason="NEU surface defect data not present")
def test_real_neu_det_annotations(detection, tmp_path):
    (tmp_path / "annotations").mkdir()
    for stem in NEU_FILES:
        label = stem.rsplit("_", 1)[0]
        (tmp_path / "images" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(NEU / label / f"{stem}.jpg", tmp_path / "images" / label)
        shutil.copy(NEU / "annotations" / f"{stem}.xml", tmp_path / "annotations")
    p = detection()
    report = p.import_voc(tmp_path / "images", tmp_path / "annotations", progress=False)
    assert not report.rejected
    # patches_101 and patches_105 are byte-identical upstream, with slightly different boxes
    assert len(report.added) == 4 and len(report.duplicates) == 1
    assert set(p.classes) == {"crazing", "inclusion", "scratches", "patches"}
    boxes = p.boxes()
    per_image = boxes.groupby(boxes.filepath.map(lambda f: Path(f).stem)).size().to_dict()
    assert per_image == {"crazing_1": 1, "inclusion_1": 4, "scratches_1": 2, "patches_101": 3}
    crazing = boxes[boxes.label == "crazing"].iloc[0]  # <xmin>2 <ymin>2 <xmax>193 <ymax>194
    assert [crazing.x * 200, crazing.y * 200, crazing.w * 200, crazing.h * 200] == \
        pytest.approx([1, 1, 192, 193])
    patches = boxes[boxes.label == "patches"]
    sid = patches.sample_id.iloc[0]
    assert p.box_history(sid).n_boxes.tolist() == [3, 3]  # both files' box sets are kept
    assert min(patches.x * 200) == pytest.approx(28)  # the newest (patches_105) is consensus
    again = p.import_voc(tmp_path / "images", tmp_path / "annotations", progress=False)
    assert again.annotations_added == 0 and len(again.duplicates) == 5
