"""engine="ray": embedding and batch prediction on a local two-worker Ray cluster give the
local path's numbers, and the embeddings land in the project's own cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import workbench as wb
from workbench.train.embeddings import embed_paths, embed_project
from workbench.train.ray_engine import ADDRESS_VARIABLE, RayCluster, resolve_engine

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray Data's own
SIZE = 64  # small inputs keep the real network fast


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here, as in each Ray actor: the summation order of a convolution
    depends on the thread count (two threads against one: up to 2e-5 on vectors up to 6)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray of two CPUs (one actor each), shut down after this module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_project():
    """A demo project of 10 images per class (and its planted duplicates), 64 px."""
    from workbench.demo import create_demo_project

    p = create_demo_project(f"ray-engine-{os.getpid()}", n_per_class=10, size=SIZE,
                            overwrite=True)
    yield p
    wb.delete_project(p.name)


def assert_same_frame(local: pd.DataFrame, remote: pd.DataFrame, classes: list[str]) -> None:
    assert list(remote.columns) == list(local.columns)
    assert remote["filepath"].tolist() == local["filepath"].tolist()
    if "sample_id" in local:
        assert remote["sample_id"].tolist() == local["sample_id"].tolist()
    assert remote["label"].tolist() == local["label"].tolist()
    numbers = ["confidence", *classes]
    assert np.abs(remote[numbers].to_numpy() - local[numbers].to_numpy()).max() < 1e-5


def test_engine_and_cluster_arguments_are_checked():
    assert resolve_engine("local") is None
    assert resolve_engine("ray", workers=3) == RayCluster(address=None, workers=3)
    with pytest.raises(ValueError, match=r"engine must be one of 'local', 'ray', got 'spark'"):
        resolve_engine("spark")
    with pytest.raises(ValueError, match=r"engine must be one of 'local', 'ray'"):
        wb.embed("no-such-project", engine="dask")  # checked before the project is opened
    with pytest.raises(ValueError, match="address and workers apply to engine='ray'"):
        wb.embed("no-such-project", workers=2)
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        resolve_engine("ray", workers=0)


def test_the_cluster_comes_from_the_address_then_the_variable_then_a_local_ray(monkeypatch):
    ray = pytest.importorskip("ray")
    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv(ADDRESS_VARIABLE, "ray://head:10001")
    RayCluster(address="auto").connect()
    RayCluster().connect()
    monkeypatch.delenv(ADDRESS_VARIABLE)
    RayCluster(workers=3).connect()
    assert [c.get("address") for c in calls] == ["auto", "ray://head:10001", None]
    assert calls[2]["num_cpus"] == 3 and calls[2]["include_dashboard"] is False


@pytest.mark.slow
def test_ray_embeddings_equal_the_local_ones_and_land_in_the_project_cache(ray_project,
                                                                          ray_cluster):
    p = ray_project
    paths = p.dataset.values("filepath")
    reference = embed_paths(paths, image_size=SIZE, progress=False)  # no cache at all
    half = embed_project(p, view=p.dataset.limit(len(paths) // 2), image_size=SIZE,
                         progress=False)
    remote = wb.embed(p, engine="ray", image_size=SIZE, progress=False, workers=2)
    assert remote.sample_ids == p.dataset.values("id")
    cached = set(half.content_hashes)  # only the cache's misses went to Ray
    assert remote.computed.tolist() == [h not in cached for h in remote.content_hashes]
    assert 0 < remote.n_computed < len(paths)
    assert np.abs(remote.vectors - reference).max() < 1e-5
    again = embed_project(p, image_size=SIZE, progress=False)
    assert again.n_computed == 0 and again.content_hashes == remote.content_hashes
    np.testing.assert_array_equal(again.vectors, remote.vectors)


@pytest.mark.slow
def test_ray_predictions_of_a_probe_equal_the_local_ones(ray_project, ray_cluster):
    p = ray_project
    mv = wb.train(p, mode="probe", folds=2, image_size=SIZE, progress=False)
    view = p.dataset.view()
    local = mv.predict(view, progress=False)
    shutil.rmtree(p.folder / "embeddings")  # the actors embed every image again
    remote = mv.predict(view, progress=False, engine="ray", workers=2)
    assert_same_frame(local, remote, mv.classes)
    assert embed_project(p, image_size=SIZE, progress=False).n_computed == 0
    with pytest.raises(ValueError, match=r"engine must be one of 'local', 'ray', got 'spark'"):
        mv.predict(view, engine="spark")


@pytest.mark.slow
def test_ray_predictions_of_a_finetune_and_an_anomaly_version_equal_the_local_ones(
        ray_project, ray_cluster):
    p = ray_project
    paths = p.dataset.values("filepath")[::2]
    tuned = wb.train(p, mode="finetune", folds=2, epochs=1, image_size=SIZE, progress=False)
    assert tuned.record["members"] == ["finetune"]
    assert_same_frame(tuned.predict(paths, progress=False),
                      tuned.predict(paths, progress=False, engine="ray"), tuned.classes)
    anomaly = wb.train(p, task="anomaly", image_size=SIZE, progress=False)
    local = anomaly.predict(paths, progress=False)
    remote = anomaly.predict(paths, progress=False, engine="ray")
    assert list(remote.columns) == list(local.columns)
    assert np.abs(remote["anomaly_score"] - local["anomaly_score"]).max() < 1e-5
    pd.testing.assert_frame_equal(remote.drop(columns="anomaly_score"),
                                  local.drop(columns="anomaly_score"))
