"""ProjectOverview state (no browser) and the thumbnail cache."""

from __future__ import annotations

import base64
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.store import thumbnails

N_PER_CLASS = 4


@pytest.fixture(scope="module")
def overview_project():
    from workbench.demo import create_demo_project

    return create_demo_project("overview-test", n_per_class=N_PER_CLASS, duplicates=0,
                               overwrite=True)


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# -- ProjectOverview -------------------------------------------------------------------
def test_table_counts_match_project(overview_project):
    from widgets import ProjectOverview

    frame = overview_project.to_pandas()
    overview = ProjectOverview(overview_project, per_class=3, thumb_size=48)
    table = overview.table

    assert list(table.index[: len(overview_project.classes)]) == overview_project.classes
    assert table.loc["total", "total"] == len(overview_project)
    for (label, split), count in frame.groupby(["label", "split"]).size().items():
        assert table.loc[label, split] == count
    for label, count in frame["label"].value_counts().items():
        assert table.loc[label, "total"] == count
    for split, count in frame["split"].value_counts().items():
        assert table.loc["total", split] == count
    assert set(overview.slice_counts) == set(overview_project.slice_fields)
    for field, counts in overview.slice_counts.items():
        assert counts.sum() == len(overview_project)
        assert counts.to_dict() == frame[field].value_counts().to_dict()


def test_grid_has_per_class_thumbnails(overview_project):
    from widgets import ProjectOverview

    per_class = 3
    overview = ProjectOverview(overview_project, per_class=per_class, thumb_size=48)
    html = overview.grid.value

    thumbs = re.findall(r'<img class="loupe-thumb" src="data:image/jpeg;base64,([^"]+)" '
                        r'title="([^"]+)"', html)
    assert len(thumbs) == per_class * len(overview_project.classes)
    assert [len(ids) for ids in overview.thumbnails.values()] == (
        [per_class] * len(overview_project.classes))
    payload, title = thumbs[0]
    assert max(_decode(base64.b64decode(payload)).size) == 48
    first_label = overview_project.classes[0]
    assert title.endswith(f" — {first_label}") and ".png" in title
    cached = list((overview_project.folder / "thumbnails").glob("*.jpg"))
    assert len(cached) == per_class * len(overview_project.classes)
    # asking for more than a class has shows what there is
    everything = ProjectOverview(overview_project, per_class=100, thumb_size=48)
    assert sum(map(len, everything.thumbnails.values())) == len(overview_project)


def test_header_and_disputed_count(overview_project):
    from widgets import ProjectOverview

    frame = overview_project.to_pandas()
    is_disputed = frame["tags"].map(lambda tags: "disputed" in tags)
    assert ProjectOverview(overview_project, per_class=1).n_disputed == is_disputed.sum()
    ids = frame.loc[~is_disputed, "sample_id"].head(2).tolist()
    view = overview_project.dataset.select(ids)
    view.tag_samples("disputed")
    try:
        overview = ProjectOverview(overview_project, per_class=1)
        expected = int(is_disputed.sum()) + 2
        assert overview.n_disputed == expected
        assert f"{expected} disputed samples" in overview.header.value
        assert "overview-test" in overview.header.value
        assert f"{len(overview_project)} samples" in overview.header.value
        assert "loupe-overview" in overview._dom_classes
    finally:
        view.untag_samples("disputed")


@pytest.mark.parametrize("kwargs", [{"per_class": 0}, {"thumb_size": -1},
                                    {"per_class": 2.5}])
def test_rejects_bad_arguments(overview_project, kwargs):
    from widgets import ProjectOverview

    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        ProjectOverview(overview_project, **kwargs)


# -- thumbnails ------------------------------------------------------------------------
@pytest.fixture
def wide_image(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 255, (50, 200, 3), dtype=np.uint8)).save(path)
    return path


def test_thumbnail_keeps_aspect_ratio(wide_image, tmp_path):
    image = _decode(thumbnails.thumbnail(wide_image, size=64, cache_dir=tmp_path / "c"))
    assert image.format == "JPEG"
    assert image.size == (64, 16)
    tall = tmp_path / "tall.png"
    Image.new("LA", (30, 90), (128, 0)).save(tall)
    image = _decode(thumbnails.thumbnail(tall, size=96, cache_dir=tmp_path / "c"))
    assert image.size == (32, 96)
    assert image.mode == "RGB"


def test_thumbnail_cache_hit_does_not_rewrite(wide_image, tmp_path):
    cache_dir = tmp_path / "cache"
    first = thumbnails.thumbnail(wide_image, size=64, cache_dir=cache_dir)
    files = list(cache_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".jpg"
    assert files[0] == thumbnails.cache_path(wide_image, size=64, cache_dir=cache_dir)
    stamp = 1_000_000_000_000_000_000  # a fixed old time: any rewrite would change it
    os.utime(files[0], ns=(stamp, stamp))

    second = thumbnails.thumbnail(wide_image, size=64, cache_dir=cache_dir)
    assert second == first
    assert files[0].stat().st_mtime_ns == stamp
    assert list(cache_dir.iterdir()) == files  # no leftover temporary files

    thumbnails.thumbnail(wide_image, size=32, cache_dir=cache_dir)  # another size, new entry
    assert len(list(cache_dir.iterdir())) == 2


def test_thumbnail_changes_when_file_changes(wide_image, tmp_path):
    cache_dir = tmp_path / "cache"
    before = thumbnails.thumbnail(wide_image, size=64, cache_dir=cache_dir)
    Image.new("RGB", (100, 100), (255, 0, 0)).save(wide_image)
    stat = wide_image.stat()
    os.utime(wide_image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    after = thumbnails.thumbnail(wide_image, size=64, cache_dir=cache_dir)
    assert after != before
    assert _decode(after).size == (64, 64)


def test_thumbnail_data_uri(wide_image, tmp_path):
    uri = thumbnails.thumbnail_data_uri(wide_image, size=40, cache_dir=tmp_path)
    prefix = "data:image/jpeg;base64,"
    assert uri.startswith(prefix)
    assert _decode(base64.b64decode(uri[len(prefix):])).size == (40, 10)


def test_thumbnail_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        thumbnails.thumbnail(tmp_path / "nope.png", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="size"):
        thumbnails.thumbnail(tmp_path / "nope.png", size=0, cache_dir=tmp_path)


def test_unreadable_image_shows_placeholder(overview_project, monkeypatch):
    import widgets.overview as overview_module

    real = overview_module.thumbnail_data_uri
    calls = []

    def flaky(path, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise FileNotFoundError(f"image {path!r} does not exist")
        return real(path, **kwargs)

    monkeypatch.setattr(overview_module, "thumbnail_data_uri", flaky)
    overview = overview_module.ProjectOverview(overview_project, per_class=2, thumb_size=32)
    html = overview.grid.value
    assert html.count('class="loupe-missing"') == 1
    assert html.count('class="loupe-thumb"') == 2 * len(overview_project.classes) - 1


@pytest.mark.slow
def test_dashboard_notebook_explains_a_missing_project(monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "dashboards" / "main.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    monkeypatch.setenv("LOUPE_PROJECT", "no-such-project")
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    shown = "".join(output.get("data", {}).get("text/markdown", "")
                    for cell in nb.cells for output in cell.get("outputs", []))
    assert "# Loupe — no-such-project" in shown
    assert "does not exist yet" in shown and "make demo" in shown and "loupe demo" in shown
