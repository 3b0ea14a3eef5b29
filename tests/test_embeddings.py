"""Frozen embeddings: real tiny runs of the offline backbone on demo images, and the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.train.embeddings import (
    EmbeddingCache,
    ImageReadError,
    embed_paths,
    embed_project,
)

SIZE = 64  # small inputs keep the real network fast


@pytest.fixture(scope="module")
def emb_project():
    """Ten demo images (two per class), shared by the tests of this module."""
    from workbench.demo import create_demo_project

    return create_demo_project("emb-test", n_per_class=2, overwrite=True)


@pytest.fixture(scope="module")
def paths(emb_project):
    return sorted(emb_project.dataset.values("filepath"))[:6]


@pytest.fixture(scope="module")
def vectors(paths):
    return embed_paths(paths, image_size=SIZE, progress=False)


def test_embed_paths_gives_one_row_per_image_in_input_order(paths, vectors):
    assert vectors.shape == (6, 1280)
    assert vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert not np.allclose(vectors[0], vectors[1])  # different images, different rows
    backwards = embed_paths(paths[::-1], image_size=SIZE, batch_size=4, progress=False)
    np.testing.assert_allclose(backwards, vectors[::-1], rtol=1e-4, atol=1e-5)


def test_unreadable_image_is_named(tmp_path, paths):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    for workers in (0, 1):  # decoded in this process, then in a DataLoader worker
        with pytest.raises(ImageReadError, match=r"broken\.png"):
            embed_paths([paths[0], broken], image_size=SIZE, num_workers=workers,
                        progress=False)
    with pytest.raises(ImageReadError, match=r"missing\.png"):
        EmbeddingCache(tmp_path).embed([tmp_path / "missing.png"], image_size=SIZE,
                                       progress=False)


def test_cache_by_content_survives_a_new_path(tmp_path, paths, vectors):
    cache = EmbeddingCache(tmp_path / "cache")
    first = cache.embed(paths[:3], image_size=SIZE, progress=False)
    assert first.n_computed == 3
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(paths[0]).read_bytes())  # same bytes, another name
    again = cache.embed([copy, *paths], image_size=SIZE, progress=False)
    assert again.computed.tolist() == [False, False, False, False, True, True, True]
    np.testing.assert_allclose(again.vectors[1:], vectors, rtol=1e-4, atol=1e-5)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    with pytest.raises(ValueError, match="random weights"):
        cache.embed(paths[:1], weights=None, image_size=SIZE, progress=False)


def test_embed_project_computes_only_what_changed(emb_project):
    first = embed_project(emb_project, image_size=SIZE, progress=False)
    ids = emb_project.dataset.values("id")
    assert first.vectors.shape == (len(ids), 1280)
    assert first.sample_ids == ids and first.n_computed == len(ids)
    frame = first.to_frame()
    assert list(frame.columns) == ["sample_id", "filepath", "content_hash", "computed"]
    assert list(frame.index) == ids
    assert list((emb_project.folder / "embeddings").glob("*-64px-*.npy"))

    second = embed_project(emb_project, image_size=SIZE, progress=False)
    assert second.n_computed == 0
    np.testing.assert_array_equal(second.vectors, first.vectors)

    changed = first.filepaths[3]
    Image.open(changed).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(changed)
    third = embed_project(emb_project, image_size=SIZE, progress=False)
    assert np.flatnonzero(third.computed).tolist() == [3]
    assert third.content_hashes[3] != first.content_hashes[3]
    assert not np.allclose(third.vectors[3], first.vectors[3])
    np.testing.assert_array_equal(np.delete(third.vectors, 3, axis=0),
                                  np.delete(first.vectors, 3, axis=0))

    view = emb_project.dataset.skip(2).limit(3)
    part = embed_project(emb_project, image_size=SIZE, view=view, progress=False)
    assert part.sample_ids == ids[2:5] and part.n_computed == 0
    np.testing.assert_array_equal(part.vectors, third.vectors[2:5])


def test_file_hashes_are_reused_until_a_file_changes(tmp_path):
    import hashlib
    import json
    import os

    from workbench.train.embeddings import HASH_INDEX, EmbeddingCache, ImageReadError

    files = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(path)
        old = path.stat().st_mtime_ns - 10**10  # settled: written well before the lookup
        os.utime(path, ns=(old, old))
        files.append(path)
    cache = EmbeddingCache(tmp_path / "cache")
    truth = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert cache.file_hashes(files) == truth
    index = tmp_path / "cache" / HASH_INDEX
    record = json.loads(index.read_text())
    record["files"][str(files[0])][2] = "f" * 64  # what was recorded is what is returned
    index.write_text(json.dumps(record))
    assert cache.file_hashes(files)[0] == "f" * 64
    Image.new("RGB", (8, 8), (0, 255, 0)).save(files[0])  # changed: read and hashed again
    assert cache.file_hashes(files)[0] == hashlib.sha256(files[0].read_bytes()).hexdigest()
    files[1].unlink()
    with pytest.raises(ImageReadError, match=r"img1\.png"):
        cache.file_hashes(files)
