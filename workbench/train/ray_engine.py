"""``engine="ray"``: the heavy steps (embedding, batch prediction) on Ray actors.

>>> cluster = resolve_engine("ray", address=None, workers=2)  # None for engine="local"
>>> rows = cluster.map_files(paths, model, apply)  # apply(model, some_paths) on actors
>>> vectors, hashes = cluster.embed_files(paths, backbone="tf_efficientnet_lite0", ...)

What runs where: the driver (this process) reads the project, hashes files, looks up and
writes the embedding cache and assembles the result; Ray Data hands batches of *file
paths* to a pool of actors, each of which builds its network once (the packaged backbone
from its own pip packages, or the version's network shipped once through Ray's object
store) and returns one result per path. Actors never open the database and never
download anything; they need the image files at the same paths and the same Python
environment (docs/cluster.md).

Where: ``address`` or the ``LOUPE_RAY_ADDRESS`` variable (``"ray://head:10001"``,
``"auto"``), else a Ray started here, one CPU per worker. A Ray already initialised in
this process is used as it is. ``ray`` is imported on first use only.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

Engine = Literal["local", "ray"]
#: The engines the heavy steps take.
ENGINES: tuple[str, ...] = ("local", "ray")
#: The environment variable naming the cluster when ``address`` is None.
ADDRESS_VARIABLE = "LOUPE_RAY_ADDRESS"
#: Images per Ray batch (one actor call, four forwards of the default batch size): a
#: batch's Ray bookkeeping is small beside its forwards, and a few thousand images still
#: spread over many workers.
RAY_BATCH = 32
#: CPUs each actor reserves, and its torch threads: threads of one process wait on each
#: other when other jobs share the cores (bench/ray_engine.py: on two busy cores, one
#: 2-thread process embedded 5 images/s, two 1-thread actors 17).
CPUS_PER_WORKER = 1

#: ``apply(model, paths)``: one result per path, in order (a module-level function or a
#: ``functools.partial`` of one, so Ray can send it by name).
Apply = Callable[[Any, list[str]], Sequence[Any]]


def resolve_engine(engine: object, *, address: str | None = None,
                   workers: int | None = None) -> RayCluster | None:
    """None for ``engine="local"``, the :class:`RayCluster` to use for ``"ray"``.

    Raises ValueError for another engine, for ``address``/``workers`` with the local
    engine, and for a ``workers`` that is not a positive integer.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINES))}, "
                         f"got {engine!r}.")
    if engine == "local":
        if address is not None or workers is not None:
            raise ValueError("address and workers apply to engine='ray' only; pass "
                             "engine='ray' to use a Ray cluster.")
        return None
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ValueError(f"workers must be an integer >= 1 or None, got {workers!r}.")
    if address is not None and not isinstance(address, str):
        raise ValueError(f"address must be a Ray address string (e.g. 'ray://head:10001' or "
                         f"'auto') or None, got {type(address).__name__}.")
    return RayCluster(address=address, workers=workers)


def on_files(cluster: RayCluster | None, paths: Sequence[str], model: Any, apply: Callable, *,
             progress: bool, desc: str = "predicting", rows: bool = False) -> Any:
    """``apply(model, paths, progress=progress)`` here (``cluster`` None), or
    ``apply(model, batch)`` per batch on the cluster's actors: a list, one result per path.

    ``rows``: the results are array rows of one length; from the cluster they come back
    stacked, as one array of shape (n_paths, n_columns) like the local call gives.
    """
    if cluster is None:
        return apply(model, list(paths), progress=progress)
    found = cluster.map_files(paths, model, apply, progress=progress, desc=desc)
    if not rows:
        return found
    return np.stack(found) if found else apply(model, [], progress=False)


@dataclass(frozen=True)
class RayCluster:
    """Where ``engine="ray"`` runs.

    Attributes
    ----------
    address : str, optional
        A Ray address; None: ``$LOUPE_RAY_ADDRESS``, else a local Ray.
    workers : int, optional
        Actors in the pool; None: one per CPU of the cluster.
    """

    address: str | None = None
    workers: int | None = None

    def connect(self) -> None:
        """Join the cluster (or start a local Ray) unless Ray is already initialised."""
        import ray

        if ray.is_initialized():
            return
        address = self.address or os.environ.get(ADDRESS_VARIABLE) or None
        if address is not None:
            ray.init(address=address)
        else:
            ray.init(num_cpus=(self.workers or os.cpu_count() or 1) * CPUS_PER_WORKER,
                     include_dashboard=False, log_to_driver=False)

    def map_files(self, paths: Sequence[str | os.PathLike[str]], model: Any, apply: Apply, *,
                  progress: bool = True, desc: str = "predicting") -> list[Any]:
        """``apply(model, batch)`` over batches of ``paths`` on the actors; one result per
        path, in input order.

        ``model`` (any picklable object: a network, a builder's arguments) is put in Ray's
        object store once and fetched once per actor. An exception raised by ``apply`` is
        raised here, as it is (a file that cannot be read names the file).
        """
        import ray

        self.connect()
        return self._run(paths, _ModelBuild(ray.put(model), apply), progress=progress,
                         desc=desc)

    def embed_files(self, paths: Sequence[str | os.PathLike[str]], *, backbone: str,
                    weights: Any, image_size: int, batch_size: int, flip: bool = False,
                    progress: bool = True, desc: str = "embedding") -> tuple[np.ndarray, list[str]]:
        """Pooled embeddings of shape (n, num_features), float32, and the SHA-256 of the
        bytes each was made from, as :func:`workbench.train.embeddings._compute` gives them;
        each actor builds the backbone once (``weights`` as ``create_backbone`` takes them,
        resolved on the worker: a file path must exist there)."""
        self.connect()
        if isinstance(weights, str | os.PathLike) and weights not in ("default", "random",
                                                                      "none"):
            weights = str(Path(weights).expanduser().absolute())  # workers start elsewhere
        build = _EmbedBuild(backbone, weights, image_size, batch_size, flip)
        rows = self._run(paths, build, progress=progress, desc=desc)
        if not rows:
            return np.empty((0, 0), dtype=np.float32), []
        return np.stack([vector for _, vector in rows]), [digest for digest, _ in rows]

    def pool_size(self, n_batches: int) -> int:
        """Actors for ``n_batches`` Ray batches: ``workers``, else the cluster's CPUs over
        :data:`CPUS_PER_WORKER`; never more than there are batches."""
        import ray

        wanted = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)
                                            // CPUS_PER_WORKER))
        return max(1, min(wanted, n_batches))

    def _run(self, paths: Sequence[str | os.PathLike[str]], build: Callable[[], Any], *,
             progress: bool, desc: str) -> list[Any]:
        import ray

        files = [str(Path(p).absolute()) for p in paths]  # workers start elsewhere
        if not files:
            return []
        n_batches = math.ceil(len(files) / RAY_BATCH)
        items = [{"row": i, "filepath": path} for i, path in enumerate(files)]
        dataset = ray.data.from_items(items, override_num_blocks=n_batches)
        dataset.context.enable_progress_bars = False  # the bar below counts the images
        dataset.context.print_on_execution_start = False
        mapped = dataset.map_batches(
            _FileWorker, fn_constructor_args=(build, CPUS_PER_WORKER), batch_size=RAY_BATCH,
            batch_format="numpy", num_cpus=CPUS_PER_WORKER,
            compute=ray.data.ActorPoolStrategy(size=self.pool_size(n_batches)))
        results: list[Any] = [None] * len(files)
        with tqdm(total=len(files), desc=f"{desc} (ray)", unit="image",
                  disable=not progress) as bar:
            for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                for blob in batch["error"]:
                    if len(blob):
                        raise pickle.loads(blob)
                for row, blob in zip(batch["row"], batch["result"], strict=True):
                    results[int(row)] = pickle.loads(blob)
                bar.update(len(batch["row"]))
        return results


class _FileWorker:
    """A Ray actor: builds what it runs once, then maps batches of paths to results
    (pickled, one per path; an exception comes back pickled in ``error``)."""

    def __init__(self, build: Callable[[], Callable[[list[str]], Sequence[Any]]],
                 threads: int) -> None:
        torch.set_num_threads(max(1, int(threads)))
        self.run = build()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch["row"]
        try:
            found = self.run([str(p) for p in batch["filepath"]])
        except Exception as error:  # raised again in the driver
            return {"row": rows[:1], "result": np.array([b""], dtype=object),
                    "error": np.array([pickle.dumps(error)], dtype=object)}
        return {"row": rows, "result": np.array([pickle.dumps(r) for r in found], dtype=object),
                "error": np.array([b""] * len(rows), dtype=object)}


@dataclass(frozen=True)
class _ModelBuild:
    """Fetch the model from the object store; run ``apply`` on it."""

    model: Any  # a ray.ObjectRef
    apply: Apply

    def __call__(self) -> Callable[[list[str]], Sequence[Any]]:
        import ray

        model = ray.get(self.model)
        return lambda paths: self.apply(model, paths)


@dataclass(frozen=True)
class _EmbedBuild:
    """Build the frozen backbone on the worker; embed to (content hash, vector) pairs."""

    backbone: str
    weights: Any
    image_size: int
    batch_size: int
    flip: bool

    def __call__(self) -> Callable[[list[str]], Sequence[Any]]:
        from workbench.train.embeddings import _backbone, _compute

        model, spec = _backbone(self.backbone, self.weights)

        def run(paths: list[str]) -> list[tuple[str, np.ndarray]]:
            vectors, hashes = _compute(model, spec, [Path(p) for p in paths],
                                       image_size=self.image_size, batch_size=self.batch_size,
                                       num_workers=0, progress=False, flip=self.flip)
            return list(zip(hashes, vectors, strict=True))

        return run


__all__ = ["ADDRESS_VARIABLE", "CPUS_PER_WORKER", "ENGINES", "RAY_BATCH", "Engine",
           "RayCluster", "on_files", "resolve_engine"]
