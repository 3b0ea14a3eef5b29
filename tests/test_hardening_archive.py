"""Archives are untrusted input (issue 20 rows 1, 3, 4, 10-13): hostile archives built here
by hand are refused with ``ArchiveError`` and leave nothing behind; a restore is built and
checked in staging before it replaces anything; Loupe deletes only what it created; a
killed export or restore leaves nothing for good."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from bson import json_util
from images_factory import write_image

import workbench as wb
from workbench.config import fiftyone, projects_dir
from workbench.errors import UnsafePathError
from workbench.store import _db as store
from workbench.store.archive import MANIFEST, ArchiveError
from workbench.store.leftovers import partial_path, remove_stale
from workbench.store.project import Project, ProjectError

PREFIX = f"harc{os.getpid()}-"
SRC = PREFIX + "src"
_CANONICAL = json_util.CANONICAL_JSON_OPTIONS


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A demo project with images outside its folder and two synthetic images; its archive."""
    from workbench.demo import create_demo_project

    p = create_demo_project(SRC, n_per_class=2, seed=7, overwrite=True, duplicates=0,
                            progress=False)
    outside = tmp_path_factory.mktemp("harc-outside")
    for i in range(2):
        write_image(outside / "scratch" / f"ext_{i}.jpg", seed=900 + i, fmt="JPEG")
    assert len(p.import_folder(outside, annotator="dora", progress=False).added) == 2
    rep = wb.synthesize(p, target="pit_mark", n=2, base="ok", method="procedural",
                        progress=False)
    archive = p.export_archive(tmp_path_factory.mktemp("harc-backup") / "src.tar")
    yield p, archive, rep.recipe_id
    for name in wb.list_projects():
        if name.startswith(PREFIX):
            wb.delete_project(name)


# -- building archives by hand -----------------------------------------------------------------
def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pack(path: Path, members: dict[str, bytes], *, unlisted: tuple[str, ...] = (),
          extra: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    """A tar of ``members`` with a manifest that lists all of them but ``unlisted`` (with
    their true sizes and hashes), plus ``extra`` raw members before the manifest."""
    manifest = json.loads(members[MANIFEST])
    body = {k: v for k, v in members.items() if k != MANIFEST}
    manifest["files"] = {k: {"size": len(v), "sha256": _sha(v)} for k, v in body.items()
                         if k not in unlisted}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in body.items():
            _add(tar, name, data)
        for info in extra:
            tar.addfile(info, io.BytesIO(b"\0" * 4))
        _add(tar, MANIFEST, json.dumps(manifest).encode())
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _docs(members: dict[str, bytes]) -> list[dict]:
    return [json_util.loads(line) for line in members["samples.jsonl"].decode().splitlines()
            if line.strip()]


def _with_docs(members: dict[str, bytes], docs: list[dict]) -> dict[str, bytes]:
    manifest = json.loads(members[MANIFEST])
    manifest["n_samples"] = len(docs)
    lines = "\n".join(json_util.dumps(d, json_options=_CANONICAL) for d in docs)
    return {**members, "samples.jsonl": lines.encode(),
            MANIFEST: json.dumps(manifest).encode()}


def _with_dataset(members: dict[str, bytes], change) -> dict[str, bytes]:
    described = json_util.loads(members["dataset.json"])
    change(described)
    return {**members, "dataset.json": json_util.dumps(described,
                                                       json_options=_CANONICAL).encode()}


def _synthetic(docs: list[dict]) -> dict:
    return next(d for d in docs if d.get("synthetic"))


def _nothing_left(name: str) -> None:
    """No dataset (temporary ones included), project, folder or staging folder of ``name``."""
    assert [d for d in fiftyone().list_datasets() if d.startswith(name)] == []
    assert name not in wb.list_projects()
    assert not (projects_dir() / name).exists()
    assert [p.name for p in projects_dir().iterdir()
            if p.name.startswith((".import.", ".replaced."))] == []


def _refused(archive: Path, name: str, expected: str, **limits: int) -> None:
    """Restoring ``archive`` as ``name`` raises an ArchiveError matching ``expected`` and
    leaves nothing behind."""
    with pytest.raises(ArchiveError, match=expected):
        Project.import_archive(archive, name=name, **limits)
    _nothing_left(name)


def _digests(project: Project) -> dict[str, str]:
    ids, paths = project.dataset.values(["id", "filepath"])
    return {sid: _sha(Path(path).read_bytes()) for sid, path in zip(ids, paths, strict=True)}


# -- row 1: training state never travels ----------------------------------------------------------
def test_training_state_is_never_exported_and_refused_in_an_archive(source, tmp_path):
    p, archive, _ = source
    runs = p.folder / "models" / ".runs" / "k1"
    runs.mkdir(parents=True)
    (runs / "finetune_fold0.state.pt").write_bytes(b"a pickle that would run")
    try:
        with tarfile.open(p.export_archive(tmp_path / "with-runs.tar")) as tar:
            assert [n for n in tar.getnames() if ".runs" in n] == []
    finally:
        (runs / "finetune_fold0.state.pt").unlink()
    members = {**_members(archive), "project/models/.runs/k1/finetune_fold0.state.pt": b"x"}
    bad = _pack(tmp_path / "runs.tar", members)
    with pytest.raises(ArchiveError, match=r"training state \(models/\.runs\)"):
        Project.import_archive(bad, name=PREFIX + "runs")
    _nothing_left(PREFIX + "runs")


# -- row 4: every path stays inside the project folder -------------------------------------------
def _set_path(case: str, members: dict[str, bytes]) -> dict[str, bytes]:
    docs = _docs(members)
    if case == "filepath_absolute":
        docs[0]["filepath"] = "/etc/passwd"
    elif case == "filepath_dotdot":
        docs[0]["filepath"] = "project/../../../../../../etc/passwd"
    elif case == "recipe_id_in_sample":
        _synthetic(docs)["synthetic"]["recipe"] = "../../models"
    elif case == "mask":
        _synthetic(docs)["synthetic"]["mask"] = "/etc/passwd"
    else:  # recipe_id_in_bookkeeping
        def hostile(described):
            described["info"]["loupe"]["synthetic"] = {"/abs/dir": {"n": 1}}
        return _with_dataset(members, hostile)
    return _with_docs(members, docs)


@pytest.mark.parametrize(("case", "expected"), [
    ("filepath_absolute", r"filepath '/etc/passwd' is not a file of the archive"),
    ("filepath_dotdot", r"filepath .* leads outside"),
    ("recipe_id_in_sample", r"synthetic\.recipe: recipe id '\.\./\.\./models'"),
    ("mask", r"synthetic\.mask '/etc/passwd' is not a path inside"),
    ("recipe_id_in_bookkeeping", r"info\.loupe\.synthetic: recipe id '/abs/dir'"),
])
def test_a_path_that_leaves_the_project_folder_refuses_the_restore(source, tmp_path, case,
                                                                   expected):
    _, archive, _ = source
    _refused(_pack(tmp_path / "paths.tar", _set_path(case, _members(archive))),
             PREFIX + "paths", expected)


def test_remove_synthetic_refuses_a_recipe_id_outside_the_project(tmp_path):
    p = Project.create(PREFIX + "recipes", overwrite=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    (p.folder / "media").mkdir()
    (p.folder / "media" / "keep.txt").write_text("precious too")
    store.update_project_info(p.dataset, synthetic={str(victim): {"n": 1}, "../media": {}})
    try:
        for recipe_id in (str(victim), "../media"):
            with pytest.raises(UnsafePathError, match="recipe id"):
                p.remove_synthetic(recipe_id)
        assert (victim / "keep.txt").read_text() == "precious"
        assert (p.folder / "media" / "keep.txt").is_file()
    finally:
        wb.delete_project(p.name)


def test_a_veto_refuses_a_synthetic_file_outside_the_project(source, tmp_path):
    p, _, _ = source
    rep = wb.synthesize(p, target="pit_mark", n=1, base="ok", method="procedural", seed=9,
                        progress=False)
    sample = p.dataset[rep.added[0]]
    own = sample.filepath
    victim = tmp_path / "victim.png"
    victim.write_bytes(Path(own).read_bytes())
    sample.filepath = str(victim)
    sample.save()
    with pytest.raises(UnsafePathError, match="outside"):
        wb.veto_synthetic(p, rep.added, annotator="alice")
    assert victim.is_file() and rep.added[0] in p.dataset.values("id")
    sample.filepath = own
    sample.save()
    assert wb.veto_synthetic(p, rep.added, annotator="alice") == 1
    assert not Path(own).exists() and victim.is_file()
    p.remove_synthetic(rep.recipe_id)


# -- row 10: limits, sparse and unlisted members -------------------------------------------------
class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _bomb(path: Path, members: dict[str, bytes], size: int) -> Path:
    """A .tar.gz whose listed member ``project/zeros.bin`` expands to ``size`` zero bytes."""
    manifest = json.loads(members[MANIFEST])
    body = {k: v for k, v in members.items() if k != MANIFEST}
    files = {k: {"size": len(v), "sha256": _sha(v)} for k, v in body.items()}
    digest = hashlib.sha256()
    for _ in range(size // 2**20):
        digest.update(bytes(2**20))
    files["project/zeros.bin"] = {"size": size, "sha256": digest.hexdigest()}
    manifest["files"] = files
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in body.items():
            _add(tar, name, data)
        info = tarfile.TarInfo("project/zeros.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
        _add(tar, MANIFEST, json.dumps(manifest).encode())
    return path


def _sparse_member(real_size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo("project/sparse.bin")
    info.size = 4
    info.pax_headers = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1",
                        "GNU.sparse.map": "0,4", "GNU.sparse.size": str(real_size)}
    return info


@pytest.mark.parametrize(("case", "limits", "expected"), [
    ("sparse", {}, r"'project/sparse\.bin' is a sparse file"),
    ("unlisted", {}, r"member 'project/notes\.txt' is not listed in the manifest"),
    ("duplicate", {}, r"holds 'project/notes\.txt' twice"),
    ("many", {"max_members": 20}, r"more than 20 members"),
    ("big_member", {"max_member_bytes": 1000}, r"over the limit of 1,000"),
    ("big_total", {"max_total_bytes": 20_000}, r"more than 20,000 bytes"),
    ("bomb", {}, r"decompression bomb"),
])
def test_hostile_member_sets_are_refused_before_extraction(source, tmp_path, case, limits,
                                                           expected):
    _, archive, _ = source
    members = _members(archive)
    bad = tmp_path / "members.tar"
    if case == "sparse":  # 50 GiB that a plain extraction would create
        _pack(bad, members, extra=(_sparse_member(50 * 2**30),))
    elif case == "unlisted":
        _pack(bad, {**members, "project/notes.txt": b"not in the manifest"},
              unlisted=("project/notes.txt",))
    elif case == "duplicate":
        note = tarfile.TarInfo("project/notes.txt")
        note.size = 4
        _pack(bad, {**members, "project/notes.txt": b"\0" * 4}, extra=(note,))
    elif case == "many":
        _pack(bad, {**members, **{f"project/e/{i:03d}": b"" for i in range(40)}})
    elif case in ("big_member", "big_total"):
        _pack(bad, members)
    else:  # 300 MB of zeros in a ~0.3 MB .tar.gz
        bad = _bomb(tmp_path / "bomb.tar.gz", members, 300 * 2**20)
        assert bad.stat().st_size < 3 * 2**20
    _refused(bad, PREFIX + "members", expected, **limits)


def _raw_tar(members: dict[str, bytes]) -> bytes:
    out = bytearray()
    for name, data in members.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out += info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)
    return bytes(out)


def _empty_headers(count: int) -> bytes:
    """``count`` tar headers of empty files ``project/e/NNNNNN`` (fast: one template)."""
    template = bytearray(tarfile.TarInfo("project/e/000000").tobuf(tarfile.USTAR_FORMAT))
    template[148:156] = b" " * 8
    base = sum(template) - sum(b"000000")
    out = bytearray()
    for i in range(count):
        digits = b"%06d" % i
        header = template.copy()
        header[10:16] = digits
        header[148:156] = b"%06o\0 " % (base + sum(digits))
        out += header
    return bytes(out)


@pytest.mark.slow
def test_200000_empty_members_are_refused_by_the_default_limit(source, tmp_path):
    _, archive, _ = source
    members = _members(archive)
    manifest = members.pop(MANIFEST)
    data = (_raw_tar(members) + _empty_headers(200_000) + _raw_tar({MANIFEST: manifest})
            + bytes(1024))
    bad = tmp_path / "many.tar.gz"
    bad.write_bytes(gzip.compress(data, compresslevel=1))
    _refused(bad, PREFIX + "many", r"more than 100,000 members")


# -- row 12: malformed documents ----------------------------------------------------------------
def _malformed(case: str, members: dict[str, bytes]) -> dict[str, bytes]:
    docs = _docs(members)
    if case == "tags_empty":
        return _with_dataset(members, lambda d: d.update(tags=[]))
    if case == "dataset_json":
        return {**members, "dataset.json": b'{"tags": ["loupe"'}
    if case == "bad_json":
        lines = members["samples.jsonl"].decode().splitlines()
        lines[1] = '{"_id": {"$oid": '
        return {**members, "samples.jsonl": "\n".join(lines).encode()}
    if case == "duplicate_id":
        docs.append(dict(docs[0]))
    elif case == "tags_not_a_list":
        docs[0]["tags"] = "checked"
    elif case == "annotations_not_a_list":
        docs[0]["annotations"] = 5
    return _with_docs(members, docs)


@pytest.mark.parametrize(("case", "expected"), [
    ("tags_empty", r"tags \[\] lack 'loupe'"),
    ("dataset_json", r"dataset\.json is not valid extended JSON"),
    ("bad_json", r"samples\.jsonl line 2 is not valid extended JSON"),
    ("duplicate_id", r"sample id \w+ appears twice"),
    ("tags_not_a_list", r"field 'tags' is missing or of the wrong type"),
    ("annotations_not_a_list", r"field 'annotations' is missing or of the wrong type"),
])
def test_malformed_documents_give_an_archive_error_and_leave_nothing(source, tmp_path, case,
                                                                     expected):
    _, archive, _ = source
    _refused(_pack(tmp_path / "docs.tar", _malformed(case, _members(archive))),
             PREFIX + "docs", expected)


def test_a_field_type_outside_fiftyone_is_never_imported(source, tmp_path, capfd):
    """FiftyOne imports the module a field declaration names: ``this`` prints the Zen."""
    _, archive, _ = source

    def hostile(described):
        described["sample_fields"].append({"name": "x", "ftype": "this.Field"})
    bad = _pack(tmp_path / "ftype.tar", _with_dataset(_members(archive), hostile))
    with pytest.raises(ArchiveError, match=r"declares ftype 'this\.Field'"):
        Project.import_archive(bad, name=PREFIX + "ftype")
    assert "this" not in sys.modules
    assert "Beautiful is better than ugly" not in capfd.readouterr().out
    _nothing_left(PREFIX + "ftype")


# -- row 3: restore a restored project; verify before swapping; undo on failure -------------------
def test_a_restored_project_can_grow_and_be_restored_again(source, tmp_path):
    _, archive, recipe_id = source
    first = Project.import_archive(archive, name=PREFIX + "again")
    more = tmp_path / "more"
    for i in range(3):
        write_image(more / "scratch" / f"new_{i}.jpg", seed=950 + i, fmt="JPEG")
    assert len(first.import_folder(more, annotator="erin", progress=False).added) == 3
    expected = _digests(first)
    second = first.export_archive(tmp_path / "again.tar")
    again = Project.import_archive(second, name=PREFIX + "again2")
    assert _digests(again) == expected
    assert all(Path(f).is_relative_to(again.folder) for f in again.dataset.values("filepath"))
    # and over the project it came from
    replaced = Project.import_archive(second, name=first.name, overwrite=True)
    assert _digests(replaced) == expected
    assert replaced.remove_synthetic(recipe_id) == 2
    assert not (replaced.folder / "synthetic" / recipe_id).exists()
    assert (again.folder / "synthetic" / recipe_id).is_dir()
    wb.delete_project(again.name)
    wb.delete_project(replaced.name)


def test_restored_masks_and_recipe_folders_point_into_the_restored_folder(source):
    _, archive, recipe_id = source
    restored = Project.import_archive(archive, name=PREFIX + "masks")
    try:
        masks = restored.dataset.match_tags("synthetic").values("synthetic.mask")
        assert len(masks) == 2
        assert all(Path(m).is_relative_to(restored.folder) and Path(m).is_file()
                   for m in masks)
        folder = Path(wb.synthetic_recipes(restored)[recipe_id]["folder"])
        assert folder == restored.folder / "synthetic" / recipe_id
    finally:
        wb.delete_project(restored.name)


def _swap_images(members: dict[str, bytes]) -> dict[str, bytes]:
    media = sorted(k for k in members if k.startswith("media/"))
    a, b = media[:2]
    return {**members, a: members[b], b: members[a]}


def test_an_image_that_does_not_match_its_sample_keeps_the_old_project(source, tmp_path):
    _, archive, _ = source
    name = PREFIX + "verify"
    old = Project.import_archive(archive, name=name)
    before = _digests(old)
    bad = _pack(tmp_path / "swapped.tar", _swap_images(_members(archive)))
    with pytest.raises(ArchiveError, match=r"does not match the sample's content_hash"):
        Project.import_archive(bad, name=name, overwrite=True)
    assert _digests(Project.open(name)) == before
    assert [d for d in fiftyone().list_datasets() if d.startswith(name)] == [name]
    wb.delete_project(name)


def test_a_failure_while_swapping_in_leaves_the_old_project_as_it_was(source, tmp_path,
                                                                      monkeypatch):
    from workbench.store import archive_restore

    _, archive, _ = source
    name = PREFIX + "swap"
    old = Project.import_archive(archive, name=name)
    old.annotate(old.dataset.first().id, "dent", annotator="late")
    before, files = _digests(old), sorted(str(f) for f in old.folder.rglob("*"))
    real = archive_restore._raw_update

    def fail_last_step(dataset, update):
        if "$unset" in update and dataset.name == name and store.PROJECT_TAG in str(update):
            monkeypatch.setattr(archive_restore, "_raw_update", real)
            raise RuntimeError("injected failure in the last step")
        real(dataset, update)

    monkeypatch.setattr(archive_restore, "_raw_update", fail_last_step)
    with pytest.raises(RuntimeError, match="injected"):
        Project.import_archive(archive, name=name, overwrite=True)
    now = Project.open(name)
    assert _digests(now) == before and len(now.history(now.dataset.first().id)) > 1
    assert sorted(str(f) for f in now.folder.rglob("*")) == files
    assert [d for d in fiftyone().list_datasets() if d.startswith(name)] == [name]
    assert [e.name for e in projects_dir().iterdir() if e.name.startswith(".")] == []
    wb.delete_project(name)


_KILL_IN_SWAP = """
import os, signal, sys
from workbench.store import archive_restore
real = archive_restore._raw_update
def die(dataset, update):
    if "$unset" in update and dataset.name == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
    real(dataset, update)
archive_restore._raw_update = die
from workbench.store.archive import import_archive
import_archive(sys.argv[1], sys.argv[2], overwrite=True)
"""


@pytest.mark.slow
def test_a_restore_killed_while_swapping_in_is_undone_by_the_next_restore(source, tmp_path):
    _, archive, _ = source
    name = PREFIX + "killed"
    old = Project.import_archive(archive, name=name)
    more = tmp_path / "more"
    write_image(more / "scratch" / "late.jpg", seed=990, fmt="JPEG")
    old.import_folder(more, progress=False)
    before = _digests(old)
    done = subprocess.run([sys.executable, "-c", _KILL_IN_SWAP, str(archive), name],
                          timeout=300, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert name not in wb.list_projects()  # half-swapped: the state
    other = Project.import_archive(archive, name=PREFIX + "next")  # the next restore
    assert name in wb.list_projects() and _digests(Project.open(name)) == before
    assert sorted(d for d in fiftyone().list_datasets() if d.startswith(name)) == [name]
    assert [e.name for e in projects_dir().iterdir() if e.name.startswith(".")] == []
    wb.delete_project(name)
    wb.delete_project(other.name)


# -- row 11: never delete or replace a dataset Loupe did not create ------------------------------
def test_loupe_never_replaces_or_deletes_a_dataset_it_did_not_create(source, tmp_path):
    _, archive, _ = source
    fo = fiftyone()
    name = PREFIX + "foreign"
    image = write_image(tmp_path / "theirs.png", seed=1)
    theirs = fo.Dataset(name, persistent=True)
    try:
        theirs.add_sample(fo.Sample(filepath=str(image)))
        theirs.add_sample_field("annotations", fo.ListField, subfield=fo.EmbeddedDocumentField,
                                embedded_doc_type=fo.DynamicEmbeddedDocument)
        theirs.info = {"owner": "another tool"}
        theirs.save()
        for attempt in (lambda: Project.create(name, overwrite=True),
                        lambda: wb.delete_project(name),
                        lambda: Project.import_archive(archive, name=name, overwrite=True)):
            with pytest.raises(ProjectError, match="was not created by Loupe"):
                attempt()
        assert len(fo.load_dataset(name)) == 1
        assert fo.load_dataset(name).info == {"owner": "another tool"}
        assert [d for d in fo.list_datasets() if d.startswith(name)] == [name]
    finally:
        fo.delete_dataset(name)
    # what Loupe creates carries the marker; a project made before the marker is still Loupe's
    from workbench.store.ownership import created_by_loupe

    made = Project.create(PREFIX + "marked", overwrite=True)
    assert store.project_info(made.dataset)["created_by"] == "loupe"
    assert Project.create(made.name, overwrite=True).name == made.name
    wb.delete_project(made.name)
    legacy = store.create_dataset(PREFIX + "legacy", classes=["ok"], task="classification")
    assert "created_by" not in store.project_info(legacy) and created_by_loupe(legacy.name)
    wb.delete_project(legacy.name)
    assert not fo.dataset_exists(PREFIX + "legacy")
    restored = Project.import_archive(archive, name=PREFIX + "restored-marker")
    assert created_by_loupe(restored.name)
    wb.delete_project(restored.name)


# -- row 13: a killed export leaves nothing for good ----------------------------------------------
_EXPORT = ("import sys; from workbench.store.project import Project; "
           "Project.open(sys.argv[1]).export_archive(sys.argv[2])")


@pytest.mark.slow
def test_a_killed_export_leaves_no_partial_after_the_next_export(tmp_path):
    p = Project.create(PREFIX + "big", overwrite=True)
    (p.folder / "blob.bin").write_bytes(os.urandom(50 * 2**20))  # slow enough to gzip
    out = tmp_path / "exports"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", _EXPORT, p.name, str(out / "big.tar.gz")])
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            partials = [f for f in out.iterdir() if f.name.endswith(".partial")]
            if partials and partials[0].stat().st_size > 2**20:
                break
            assert process.poll() is None, "the export ended before it could be killed"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert [f.name for f in out.iterdir() if ".partial" in f.name]  # what the kill left
        assert not (out / "big.tar.gz").exists()
        (p.folder / "blob.bin").unlink()
        p.export_archive(out / "small.tar")  # the next export into that folder
        assert sorted(f.name for f in out.iterdir()) == ["small.tar"]
    finally:
        if process.poll() is None:
            process.kill()
        wb.delete_project(p.name)


def test_only_leftovers_of_finished_processes_are_removed(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from workbench.store.leftovers import partial_path; "
         "p = partial_path(Path(sys.argv[1]), keep_suffix=True); p.write_bytes(b'x'); "
         "print(p)", str(tmp_path / "model.onnx")],
        capture_output=True, text=True, check=True)
    dead = Path(finished.stdout.strip())
    alive = partial_path(tmp_path / "other.tar")
    alive.write_bytes(b"y")
    unrelated = tmp_path / ".notes.partial"
    unrelated.write_bytes(b"z")
    assert dead.is_file() and remove_stale(tmp_path) == [dead]
    assert not dead.exists() and alive.is_file() and unrelated.is_file()


def test_a_model_export_removes_what_a_killed_model_export_left(tmp_path):
    import torch
    from torch import nn

    from workbench.deploy.export import export
    from workbench.train.classification.network import Classifier

    killed = subprocess.run(  # a process gone before it could rename its file
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from workbench.store.leftovers import partial_path; "
         "partial_path(Path(sys.argv[1]), keep_suffix=True).write_bytes(b'half a model')",
         str(tmp_path / "model.pt")], check=True)
    assert killed.returncode == 0 and len(list(tmp_path.iterdir())) == 1
    member = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        member[2].weight.copy_(torch.tensor([[0.8, -0.4, 0.2], [-0.6, 0.4, 0.1]]))
    tiny = Classifier([member], image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                      classes=["ok", "scratch"]).eval()
    export(tiny, "torchscript", tmp_path / "model.pt")
    assert [f.name for f in tmp_path.iterdir()] == ["model.pt"]
