"""Hostile input: every bad file or row gets a specific reason, and nothing stored changes.

A property-based test (hypothesis) throws mutated and random files at the checks and at a
real import; fixed cases cover each kind of bad input by name.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from images_factory import jpeg_bytes, png_with_declared_size, write_image
from PIL import Image

import workbench as wb
from workbench.store import _db as store
from workbench.store.ingest.images import ImageRejectedError, check_image, read_rgb
from workbench.store.ingest.safe_csv import escape_formulas, write_csv

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def png_bytes(seed: int = 0, size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def snapshot(project: wb.Project) -> tuple[pd.DataFrame, dict, list[str]]:
    """Everything an import could change: the table, every history, the classes."""
    frame = project.to_pandas().sort_values("sample_id").reset_index(drop=True)
    return frame, store.histories(project.dataset, list(frame.sample_id)), project.classes


def assert_unchanged(project: wb.Project, before) -> None:
    frame, histories, classes = snapshot(project)
    pd.testing.assert_frame_equal(frame, before[0])
    assert histories == before[1] and classes == before[2]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A project holding two good images (the state bad imports must leave alone)."""
    name = f"rel-input-{os.getpid()}"
    p = wb.Project.create(name, classes=["ok", "scratch"], overwrite=True)
    good = tmp_path_factory.mktemp("good")
    write_image(good / "ok" / "a.png", seed=1)
    write_image(good / "scratch" / "b.png", seed=2)
    assert len(p.import_folder(good, progress=False).added) == 2
    yield p
    wb.delete_project(name)


# -- property-based: mutated files -----------------------------------------------------------
mutations = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("junk"), st.binary(max_size=64)),
)


def mutate(data: bytes, mutation) -> bytes:
    kind, arg = mutation
    if kind == "truncate":
        return data[: int(len(data) * arg)]
    if kind == "flip":
        out = bytearray(data)
        for position, xor in arg:
            out[position % len(out)] ^= xor
        return bytes(out)
    return arg + data[len(arg):]


@SETTINGS
@given(fmt=st.sampled_from(["png", "jpeg"]), mutation=mutations, seed=st.integers(0, 5))
def test_any_mutated_image_is_accepted_whole_or_rejected_with_a_reason(fmt, mutation, seed):
    original = png_bytes(seed) if fmt == "png" else jpeg_bytes(seed)
    data = mutate(original, mutation)
    try:
        checked = check_image(data, thorough=True)
    except ImageRejectedError as error:
        assert error.reason.strip()
        return
    # accepted after a full decode: its pixels can be read and its header is sane
    assert checked.width > 0 and checked.height > 0
    image = Image.open(io.BytesIO(data))
    image.load()


@SETTINGS
@given(files=st.lists(st.tuples(st.sampled_from([".png", ".jpg", ".jpeg", ".bmp", ".txt", ""]),
                                st.sampled_from(["png", "jpeg", "random", "empty"]),
                                mutations), min_size=1, max_size=4))
@pytest.mark.slow
def test_importing_hostile_files_never_fails_and_touches_nothing_stored(base, tmp_path_factory,
                                                                         files):
    folder = tmp_path_factory.mktemp("hostile")
    written = []
    for i, (suffix, kind, mutation) in enumerate(files):
        data = {"png": png_bytes(100 + i), "jpeg": jpeg_bytes(100 + i),
                "random": os.urandom(200), "empty": b""}[kind]
        path = folder / "ok" / f"f{i}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mutate(data, mutation) if data else data)
        written.append(path)
    before = snapshot(base)
    report = base.import_folder(folder, thorough=True, progress=False)
    handled = {p for p, _ in report.rejected} | {p for p, _ in report.duplicates}
    assert len(report.added) + len(handled) == len(written)
    assert all(reason.strip() for _, reason in report.rejected)
    for sid in report.added:  # what was accepted decodes
        read_rgb(base.dataset[sid].filepath)
    # the samples that were there are exactly as they were
    frame, histories, _ = snapshot(base)
    old = frame[frame.sample_id.isin(before[0].sample_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, before[0])
    assert {k: histories[k] for k in before[1]} == before[1]
    if report.added:
        base.dataset.delete_samples(report.added)


# -- fixed cases: files ------------------------------------------------------------------------
def corrupt_png_crc(data: bytes) -> bytes:
    out = bytearray(data)
    out[33 + 8 + 5] ^= 0xFF  # inside the first IDAT chunk: its CRC no longer matches
    return bytes(out)


def huge_jpeg_header() -> bytes:
    """A JPEG whose frame header declares 65500 x 65500 pixels."""
    data = bytearray(jpeg_bytes(7))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 65500, 65500)
    return bytes(data)


FILE_CASES = {
    "truncated_jpeg": (lambda: jpeg_bytes(3)[:1500], ".jpg", "end-of-image marker"),
    "jpeg_cut_in_its_header": (lambda: jpeg_bytes(3)[:300], ".jpg",
                               "corrupt image header: Truncated"),
    "truncated_png": (lambda: png_bytes(3)[:300], ".png", "truncated or corrupt"),
    "corrupt_png_checksum": (lambda: corrupt_png_crc(png_bytes(4)), ".png",
                             "truncated or corrupt"),
    "zero_bytes": (lambda: b"", ".png", r"empty file \(0 bytes\)"),
    "text_named_png": (lambda: b"filepath,label\n", ".png", "not an image"),
    "html_named_jpg": (lambda: b"<html><script>alert(1)</script></html>", ".jpg",
                       "not an image"),
    "huge_jpeg_dimensions": (huge_jpeg_header, ".jpg", "decompression bomb"),
    "just_over_the_pixel_limit": (None, ".png", "exceeds the limit"),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_file_gets_its_reason_and_changes_nothing(base, tmp_path, case):
    make, suffix, reason = FILE_CASES[case]
    path = tmp_path / "ok" / f"bad{suffix}"
    path.parent.mkdir()
    if make is None:
        png_with_declared_size(path, 8000, 5001)  # 40,008,000 > 40,000,000 pixels
    else:
        path.write_bytes(make())
    before = snapshot(base)
    report = base.import_folder(tmp_path, progress=False)
    assert not report.added
    assert [Path(p).name for p, _ in report.rejected] == [path.name]
    assert pd.Series([report.rejected[0][1]]).str.contains(reason).all(), report.rejected
    assert_unchanged(base, before)


def test_decompression_bomb_is_refused_before_decoding(base, tmp_path):
    (tmp_path / "ok").mkdir()
    png_with_declared_size(tmp_path / "ok" / "bomb.png", 100_000, 100_000)
    before = snapshot(base)
    report = base.import_folder(tmp_path, progress=False)
    assert "decompression bomb" in report.rejected[0][1]
    assert_unchanged(base, before)


def test_png_named_jpg_is_accepted_as_png(base, tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "really_a_png.jpg").write_bytes(png_bytes(77))
    report = base.import_folder(tmp_path, progress=False)
    assert len(report.added) == 1 and not report.rejected
    assert base.dataset[report.added[0]].metadata.mime_type == "image/png"
    base.dataset.delete_samples(report.added)


def test_symlinks_outside_the_import_root_are_not_followed_unless_asked(base, tmp_path):
    outside = tmp_path / "outside"
    write_image(outside / "secret.png", seed=88)
    write_image(outside / "dir" / "x.png", seed=89)
    root = tmp_path / "root" / "ok"
    root.mkdir(parents=True)
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "linked_dir").symlink_to(outside / "dir", target_is_directory=True)
    write_image(root / "inside.png", seed=90)
    (root / "inner_link.png").symlink_to(root / "inside.png")  # inside: fine, a duplicate
    before = snapshot(base)
    report = base.import_folder(tmp_path / "root", progress=False)
    assert sorted(Path(p).name for p, _ in report.rejected) == ["link.png", "linked_dir"]
    assert all("symbolic link pointing outside the import folder" in r for _, r in report.rejected)
    added_paths = {Path(base.dataset[s].filepath).name for s in report.added}
    assert added_paths == {"inner_link.png"} or added_paths == {"inside.png"}
    assert "x.png" not in added_paths  # a linked folder outside is not entered
    base.dataset.delete_samples(report.added)
    assert_unchanged(base, before)
    followed = base.import_folder(tmp_path / "root", follow_symlinks=True, progress=False)
    assert {Path(base.dataset[s].filepath).name for s in followed.added} >= {"link.png", "x.png"}
    base.dataset.delete_samples(followed.added)
    assert_unchanged(base, before)


# -- fixed cases: CSV --------------------------------------------------------------------------
def test_csv_path_traversal_is_rejected(base, tmp_path):
    write_image(tmp_path / "elsewhere" / "target.png", seed=55)
    csv_dir = tmp_path / "upload"
    write_image(csv_dir / "img" / "fine.png", seed=56)
    (csv_dir / "img" / "sneaky.png").symlink_to(tmp_path / "elsewhere" / "target.png")
    (csv_dir / "labels.csv").write_text(
        "filepath,label\n../../etc/passwd,ok\n../elsewhere/target.png,ok\n"
        "img/../../elsewhere/target.png,ok\nimg/sneaky.png,ok\nimg/fine.png,ok\n")
    before = snapshot(base)
    report = base.import_csv(csv_dir / "labels.csv", progress=False)
    assert len(report.added) == 1
    reasons = [r for _, r in report.rejected]
    assert len(reasons) == 4
    assert all("relative paths must stay inside the CSV's folder" in r for r in reasons)
    assert sum("climbs out" in r for r in reasons) == 3 and "is a link to" in reasons[3]
    base.dataset.delete_samples(report.added)
    assert_unchanged(base, before)
    # an absolute path is the user's explicit choice: read where it is (and checked)
    (csv_dir / "abs.csv").write_text("filepath,label\n/etc/passwd,ok\n")
    report = base.import_csv(csv_dir / "abs.csv", progress=False)
    assert not report.added and "not an image" in report.rejected[0][1]
    assert_unchanged(base, before)


@pytest.mark.parametrize(("content", "match"), [
    ("path,label\na.png,ok\n", r"missing column\(s\) filepath"),
    ("filepath\na.png\n", r"missing column\(s\) label"),
    ("", "not a readable CSV"),
    (b"\xff\xfe\x00\x00garbage\x00\x81", "not a readable CSV"),
    ("filepath,label,tags\na.png,ok,x\n", "column 'tags' cannot be a slice field"),
    ("filepath,label,bad column\na.png,ok,x\n", "cannot be a slice field"),
])
def test_malformed_csv_is_a_clear_error_and_changes_nothing(base, tmp_path, content, match):
    csv = tmp_path / "labels.csv"
    csv.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(base)
    with pytest.raises(ValueError, match=match):
        base.import_csv(csv, progress=False)
    assert_unchanged(base, before)


def test_invalid_labels_and_duplicate_rows(base, tmp_path):
    for i, name in enumerate("abcd"):
        write_image(tmp_path / f"{name}.png", seed=61 + i)
    (tmp_path / "labels.csv").write_text(
        "filepath,label,annotator\n"
        "a.png,ok,alice\na.png,ok,alice\na.png,ok,alice\n"  # exact duplicates: one entry
        "b.png,\" ok \",alice\n"  # spaces around a label are trimmed
        "c.png,ok,alice\nc.png,\x00,bob\nc.png,ok,\x1b[31mmallory\n"  # control characters
        ",ok,alice\n")  # empty filepath
    before = snapshot(base)
    report = base.import_csv(tmp_path / "labels.csv", progress=False)
    assert len(report.added) == 3
    assert sorted(len(base.history(s)) for s in report.added) == [1, 1, 1]
    assert set(base.dataset.select(report.added).values("ground_truth.label")) == {"ok"}
    reasons = [r for _, r in report.rejected]
    assert sum("contains control characters" in r for r in reasons) == 2
    assert sum("empty filepath" in r for r in reasons) == 1 and len(reasons) == 3
    assert base.classes == before[2]
    # a label the project does not know yet is a new class (imports bring classes) ...
    (tmp_path / "new.csv").write_text("filepath,label\nd.png,dent\n")
    added = base.import_csv(tmp_path / "new.csv", progress=False).added
    assert base.classes == [*before[2], "dent"]
    # ... but p.annotate refuses it (a person picks from the schema)
    with pytest.raises(wb.ProjectError, match="'rust' is not a class"):
        base.annotate(report.added[0], "rust", annotator="alice")
    again = base.import_csv(tmp_path / "labels.csv", progress=False)  # re-run: nothing new
    assert not again.added and again.annotations_added == 0
    base.dataset.delete_samples(report.added + added)


# -- exports -------------------------------------------------------------------------------
def test_csv_exports_escape_formula_cells(tmp_path):
    frame = pd.DataFrame({
        "label": ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\ry", "ok",
                  "a=b"],
        "score": [-1.5, 2, 3, 4, 5, 6, 7, 8],
        "tags": [["=HYPERLINK(\"http://x\")"], [], [], [], [], [], [], []],
    })
    out = write_csv(frame, tmp_path / "issues.csv")
    back = pd.read_csv(out, keep_default_na=False)
    assert back.label.tolist()[:6] == ["'=cmd|' /C calc'!A0", "'+1+1", "'-2+3", "'@SUM(A1)",
                                       "'\tx", "'\ry"]
    assert back.label.tolist()[6:] == ["ok", "a=b"]
    assert back.score.tolist()[0] == -1.5  # numbers are not text: untouched
    assert not any(str(v).startswith(("=", "+", "-", "@")) for v in back.tags)
    assert escape_formulas(pd.DataFrame({"=x": [1]})).columns.tolist() == ["'=x"]
    assert frame.label[0] == "=cmd|' /C calc'!A0"  # the caller's frame is not modified
