"""New images from the line: wb.import_batch tags a batch and checks it for drift against the
deployed version; browser uploads go through the same ingest checks and size limits."""

from __future__ import annotations

import io
import os
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import workbench as wb
from workbench.demo import (
    create_demo_project,
    demo_table,
    truth_file,
    write_demo_images,
    write_demo_inbox,
)

PROBE = {"mode": "probe", "folds": 2, "image_size": 64, "progress": False}


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """A demo project (8 images per class, 64 px) with a frozen set, ``v1`` trained after
    it, a batch imported while nothing was deployed, then v1 promoted on line A; a night
    batch in the inbox and a folder of day-shift images like the training ones."""
    p = create_demo_project(f"intake-{os.getpid()}", n_per_class=8, seed=5, size=64,
                            overwrite=True)
    p.freeze_eval(fraction=0.25, annotator="erin")
    v1 = wb.train(p, **PROBE)
    day = tmp_path_factory.mktemp("day")
    write_demo_images(day, demo_table(n_per_class=5, seed=9), seed=9, size=64)
    early = tmp_path_factory.mktemp("early")
    write_demo_images(early, demo_table(n_per_class=2, seed=11), seed=11, size=64)
    undeployed = wb.import_batch(p, early, batch="before-deploy", annotator="erin")
    deployment = wb.promote(p, v1, line="A", annotator="erin")
    night = write_demo_inbox(p, n=20, size=64, day=date(2026, 12, 5))
    yield {"p": p, "v1": v1, "day": day, "night": night, "undeployed": undeployed,
           "deployment": deployment}
    wb.delete_project(p.name)


def _png(seed: int, size: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _stored(p: wb.Project) -> tuple[int, int]:
    return len(p.dataset), len(p.drift_history())


def test_a_darker_batch_is_tagged_and_drifts_against_the_deployed_version(line):
    p, deployment = line["p"], line["deployment"]
    assert deployment.version == line["v1"].name
    rep = wb.import_batch(p, wb.inbox_batch(p, line["night"].name, environ={}),
                          batch="night-2026-12-05", annotator="erin")
    assert (rep.against, rep.line, rep.version) == ("deployment", "A", deployment.version)
    assert rep.deployment_id == deployment.deployment_id
    assert "line A's current deployment" in rep.reference
    assert len(rep.imported.added) == 20 and rep.imported.rejected == []
    assert p.dataset.match({"batch": "night-2026-12-05"}).count() == 20
    assert rep.drifted is True and rep.drift.version == deployment.version
    last = p.drift_history().iloc[-1]
    assert last["check_id"] == rep.drift.check_id and bool(last["drifted"])
    assert (last["batch"], last["version"]) == ("night-2026-12-05", deployment.version)
    moved = rep.drift.shift.set_index("property")
    assert moved.loc["brightness", "moved"] and moved.loc["brightness", "change"] < 0
    assert "DRIFT" in rep.summary() and "night-2026-12-05" in rep.summary()


def test_a_batch_like_the_training_images_does_not_drift(line):
    p = line["p"]
    rep = wb.import_batch(p, line["day"], batch="day-2026-12-05", annotator="erin", line="A")
    assert rep.against == "deployment" and len(rep.imported.added) == 25
    assert rep.drifted is False
    last = p.drift_history().iloc[-1]
    assert last["batch"] == "day-2026-12-05" and not bool(last["drifted"])


def test_with_nothing_deployed_the_newest_version_is_checked_and_the_report_says_so(line):
    rep = line["undeployed"]
    assert (rep.against, rep.line, rep.deployment_id) == ("newest_version", None, None)
    assert rep.version == line["v1"].name
    assert "newest version" in rep.reference and "nothing is deployed" in rep.reference
    assert rep.drift is not None
    history = line["p"].drift_history()
    assert rep.drift.check_id in set(history["check_id"])


def test_an_upload_is_written_under_the_project_tagged_and_checked(line):
    p = line["p"]
    files = sorted(line["day"].rglob("*.png"))[:6]
    value = tuple({"name": f"C:\\camera\\{f.name}", "type": "image/png",
                   "size": f.stat().st_size, "content": memoryview(f.read_bytes())}
                  for f in files)  # what ipywidgets 8's FileUpload holds
    rep = wb.import_batch(p, value, batch="upload-1", annotator="erin")
    assert rep.folder == p.folder / "uploads" / "upload-1"
    assert sorted(x.name for x in rep.folder.iterdir()) == sorted(f.name for f in files)
    assert len(rep.imported.added) + len(rep.imported.duplicates) == 6
    assert rep.drift is not None and rep.drift.n_images == 6


def test_an_upload_that_is_not_an_image_is_refused_naming_the_file(line):
    p = line["p"]
    before = _stored(p)
    uploads = [("good.png", _png(1)), ("notes.png", b"these are not pixels"),
               ("report.pdf", b"%PDF-1.4")]
    with pytest.raises(wb.UploadRejectedError, match="nothing was stored") as error:
        wb.import_batch(p, uploads, batch="bad-upload", annotator="erin")
    refused = dict(error.value.rejected)
    assert set(refused) == {"notes.png", "report.pdf"}
    assert "not an image" in refused["notes.png"] and "file name" in refused["report.pdf"]
    assert "'notes.png'" in str(error.value)
    assert not (p.folder / "uploads" / "bad-upload").exists()
    assert _stored(p) == before


def test_an_upload_too_large_is_refused_per_file_and_in_all(line):
    p = line["p"]
    before = _stored(p)
    big, small = _png(2, size=96), _png(3, size=8)
    with pytest.raises(wb.UploadRejectedError, match=r"big\.png") as error:
        wb.import_batch(p, [("small.png", small), ("big.png", big)], batch="big",
                        annotator="erin", max_file_bytes=len(big) - 1)
    assert [name for name, _ in error.value.rejected] == ["big.png"]
    assert "MiB" in error.value.rejected[0][1] or "bytes" in error.value.rejected[0][1]
    with pytest.raises(wb.UploadRejectedError, match="one upload may hold"):
        wb.save_uploads(p, [("a.png", small), ("b.png", big)], batch="big",
                        max_upload_bytes=len(big))
    assert not (p.folder / "uploads" / "big").exists()
    assert _stored(p) == before


def test_upload_names_are_made_safe_or_refused(line):
    p = line["p"]
    folder = wb.save_uploads(p, {"../../escape.png": {"content": _png(4)}}, batch="names")
    assert [x.name for x in folder.iterdir()] == ["escape.png"]  # ipywidgets 7 form
    assert folder.parent == p.folder / "uploads"
    with pytest.raises(wb.UploadRejectedError) as error:
        wb.save_uploads(p, [(".hidden.png", _png(5)), ("escape.png", _png(6))], batch="names")
    reasons = dict(error.value.rejected)
    assert "hidden" in reasons[".hidden.png"] and "already holds another" in reasons["escape.png"]
    for batch in ("../up", ".dot"):
        with pytest.raises(ValueError, match="cannot name an upload folder"):
            wb.save_uploads(p, [("a.png", _png(7))], batch=batch)
    with pytest.raises(ValueError, match="no files"):
        wb.save_uploads(p, (), batch="empty")


def test_bad_arguments_are_refused_before_anything_is_imported(line):
    p = line["p"]
    before = _stored(p)
    with pytest.raises(ValueError, match="annotator must be"):
        wb.import_batch(p, line["day"], batch="x", annotator="")
    with pytest.raises(wb.DeploymentError, match="line="):
        wb.import_batch(p, line["day"], batch="x", annotator="erin", line="../A")
    with pytest.raises(FileNotFoundError, match="batch folder not found"):
        wb.import_batch(p, Path(line["day"]) / "missing", batch="x", annotator="erin")
    assert _stored(p) == before


def test_the_night_batch_keeps_its_true_labels_beside_the_images(line):
    import pandas as pd

    truth = pd.read_csv(truth_file(line["night"]))
    assert list(truth.columns) == ["filename", "label"] and len(truth) == 20
    assert set(truth["filename"]) == {f.name for f in line["night"].glob("*.png")}


def test_with_several_lines_deployed_the_batch_must_name_its_line(line, tmp_path):
    """Last in this module: it deploys v1 on a second line."""
    p = line["p"]
    wb.promote(p, line["v1"], line="B", annotator="erin")
    write_demo_images(tmp_path, demo_table(n_per_class=2, seed=13), seed=13, size=64)
    before = _stored(p)
    with pytest.raises(wb.ProjectError, match=r"lines A, B: say which line.*line='A'"):
        wb.import_batch(p, tmp_path, batch="day-b", annotator="erin")
    assert _stored(p) == before  # nothing imported, nothing checked
    rep = wb.import_batch(p, tmp_path, batch="day-b", annotator="erin", line="B")
    assert (rep.line, rep.against, len(rep.imported.added)) == ("B", "deployment", 10)
    assert p.drift_history().iloc[-1]["batch"] == "day-b"
