"""Frozen embeddings: image files to pooled backbone features, cached on disk by content.

>>> vectors = embed_paths(paths)  # (n_images, 1280) float32, rows in input order
>>> result = embed_project(project)  # cached under project.folder / "embeddings"
>>> result.vectors, result.to_frame()  # row i of both is the same sample
>>> embed(project, engine="ray")  # the cache misses on Ray actors (docs/cluster.md)

Decode (Pillow, RGB) → :func:`~workbench.train.backbones.preprocess` as the spec says → forward in
``torch.inference_mode``, batched by a ``DataLoader``. :class:`EmbeddingCache` keys rows by
the SHA-256 of the file's bytes (import's ``content_hash``): changed bytes, new key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from workbench.store.ingest.images import (
    ImageReadError,
    ImageRejectedError,
    content_hash,
    read_bytes,
)
from workbench.train.backbones import DEFAULT_BACKBONE, BackboneSpec, create_backbone, preprocess
from workbench.train.ray_engine import Engine, RayCluster, resolve_engine

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.store.project import Project

#: DataLoader worker processes when ``num_workers=None``. On 2 cores decoding and resizing a
#: small JPEG costs ~3 ms against ~35 ms of forward: a worker only takes a core from the
#: forward's threads, so decoding in the main process is fastest (bench/embeddings.py).
DEFAULT_NUM_WORKERS = 0
#: Images per forward. On a CPU, 8 beats 32 by ~25%: large batches' activations are
#: returned to the OS by glibc's malloc after every layer and page-faulted back in.
DEFAULT_BATCH_SIZE = 8
#: Threads reading and hashing files for a cache lookup (the GIL is released for both).
HASH_THREADS = 4
#: The cache folder's record of each file's size, modification time and hash.
HASH_INDEX = "file-hashes.json"
#: A file modified less than this long ago is hashed again next time (its time may not
#: have moved with a second write in the same instant).
RACY_NS = 2_000_000_000
Weights = str | os.PathLike[str] | None


@dataclass(frozen=True)
class Embeddings:
    """Embeddings of a list of image files, and where each row came from.

    Attributes
    ----------
    vectors : np.ndarray of shape (n_images, spec.num_features), float32
        Row i embeds ``filepaths[i]``.
    filepaths, content_hashes : list of str, length n_images
        Each file, and the SHA-256 of its bytes as read by this call.
    computed : np.ndarray of shape (n_images,), bool
        True where this call ran the backbone, False where the row came from the cache.
    spec : BackboneSpec
    image_size : int
    sample_ids : list of str, optional
        Project sample ids, row for row (set by :func:`embed_project`).
    """

    vectors: np.ndarray
    filepaths: list[str]
    content_hashes: list[str]
    computed: np.ndarray
    spec: BackboneSpec
    image_size: int
    sample_ids: list[str] | None = None

    @property
    def n_computed(self) -> int:
        """How many rows this call computed (the others were cache hits)."""
        return int(self.computed.sum())

    def to_frame(self) -> pd.DataFrame:
        """Columns ``sample_id`` (from a project), ``filepath``, ``content_hash``, ``computed``;
        row i is row i of :attr:`vectors`; indexed by sample id when there is one."""
        frame = pd.DataFrame({"filepath": self.filepaths, "content_hash": self.content_hashes,
                              "computed": self.computed})
        if self.sample_ids is not None:
            frame.insert(0, "sample_id", self.sample_ids)
            frame.index = pd.Index(self.sample_ids)
        return frame


class _Images(Dataset):
    """(content hash, preprocessed tensor) per file; an unreadable file gives its error text."""

    def __init__(self, paths: Sequence[Path], spec: BackboneSpec, image_size: int) -> None:
        self.paths, self.spec, self.image_size = list(paths), spec, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor] | str:
        path = self.paths[index]
        try:
            data = read_bytes(path)
            with Image.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB")
        except ImageRejectedError as error:
            return f"cannot read image {str(path)!r}: {error.reason}"
        except Exception as error:  # Pillow raises many types for corrupt data
            return f"cannot decode image {str(path)!r} ({type(error).__name__}: {error})"
        return content_hash(data), preprocess([rgb], self.spec, self.image_size)[0]


def _collate(items: list[tuple[str, torch.Tensor] | str]) -> tuple[list[str], torch.Tensor] | str:
    errors = [item for item in items if isinstance(item, str)]
    if errors:  # raised in the main process, so the message stays the file's, not a traceback
        return errors[0]
    return [digest for digest, _ in items], torch.stack([tensor for _, tensor in items])


@functools.lru_cache(maxsize=1)
def _pretrained(name: str, weights: Weights, _stamp: object) -> tuple[nn.Module, BackboneSpec]:
    return create_backbone(name, weights=weights)


def _backbone(name: str, weights: Weights) -> tuple[nn.Module, BackboneSpec]:
    """The frozen backbone, channels-last (1.5x faster convolutions on a CPU); a pretrained
    one is kept for the next call, one at a time. It never leaves this module."""
    if weights in (None, "random", "none") or not isinstance(weights, str | os.PathLike):
        model, spec = create_backbone(name, weights=weights)  # also the errors for bad types
    else:
        path = Path(weights).expanduser()
        stat = path.stat() if weights != "default" and path.is_file() else None
        model, spec = _pretrained(name, weights, stat and (stat.st_mtime_ns, stat.st_size))
    return model.eval().to(memory_format=torch.channels_last), spec


def _check_args(image_size: object, batch_size: object, num_workers: object) -> None:
    for name, value, least in (("image_size", image_size, 1), ("batch_size", batch_size, 1),
                               ("num_workers", 0 if num_workers is None else num_workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")


def _compute(model: nn.Module, spec: BackboneSpec, paths: Sequence[Path], *, image_size: int,
             batch_size: int, num_workers: int | None, progress: bool,
             flip: bool = False) -> tuple[np.ndarray, list[str]]:
    """Vectors of shape (n, num_features), and the hashes of the bytes they were made from;
    with ``flip``, of the left-right mirrored images."""
    vectors = np.empty((len(paths), spec.num_features), dtype=np.float32)
    hashes: list[str] = []
    if not paths:
        return vectors, hashes
    loader = DataLoader(_Images(paths, spec, image_size), batch_size=batch_size,
                        num_workers=DEFAULT_NUM_WORKERS if num_workers is None else num_workers,
                        collate_fn=_collate, persistent_workers=False)
    with torch.inference_mode(), tqdm(total=len(paths), desc=f"embedding ({spec.name})",
                                      unit="image", disable=not progress) as bar:
        for batch in loader:
            if isinstance(batch, str):
                raise ImageReadError(batch)
            digests, pixels = batch
            if flip:
                pixels = pixels.flip(-1)
            vectors[len(hashes):len(hashes) + len(digests)] = model(pixels.contiguous(
                memory_format=torch.channels_last)).float().numpy()
            hashes += digests
            bar.update(len(digests))
    return vectors, hashes


def embed_paths(paths: Sequence[str | os.PathLike[str]], *, backbone: str = DEFAULT_BACKBONE,
                weights: Weights = "default", image_size: int = 224,
                batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int | None = None,
                progress: bool = True) -> np.ndarray:
    """Embed image files with a frozen backbone, without any cache.

    Parameters
    ----------
    paths : sequence of str or Path, length n_images
        Image files of any size and mode Pillow reads.
    backbone, weights
        As :func:`~workbench.train.backbones.create_backbone` takes them.
    image_size : int, default 224
        Side of the square each image is resized to (squashed, never cropped).
    batch_size : int, default :data:`DEFAULT_BATCH_SIZE`
    num_workers : int, optional
        DataLoader worker processes; :data:`DEFAULT_NUM_WORKERS` by default.
    progress : bool, default True

    Returns
    -------
    np.ndarray of shape (n_images, num_features), float32
        Row i embeds ``paths[i]``. A file that cannot be read raises :class:`ImageReadError`.
    """
    _check_args(image_size, batch_size, num_workers)
    model, spec = _backbone(backbone, weights)
    return _compute(model, spec, [Path(p) for p in paths], image_size=image_size,
                    batch_size=batch_size, num_workers=num_workers, progress=progress)[0]


class EmbeddingCache:
    """Embeddings on disk: one ``.npy`` per (backbone, weights source, image size).

    Each file is a structured array with fields ``content_hash`` (64 hex characters) and
    ``vector`` (float32 of shape (num_features,)), replaced atomically on every write: two
    processes writing at once may lose rows (recomputed later), never corrupt the file.
    Rows of images that have since changed stay until the folder is deleted.

    ``folder`` (str or Path) is created on the first write.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, spec: BackboneSpec, image_size: int, *, flip: bool = False) -> Path:
        """The file holding the embeddings of this backbone at this image size (of the
        mirrored images with ``flip``)."""
        if spec.weights_source == "random":
            raise ValueError(f"{spec.name!r} with random weights is another network on every "
                             "call, so its embeddings cannot be cached; use embed_paths.")
        key = f"{spec.name}|{spec.weights_source}|{image_size}" + ("|hflip" if flip else "")
        if spec.weights_source.startswith("file:"):  # the same path may hold new weights
            with Path(spec.weights_source.removeprefix("file:")).open("rb") as file:
                key += "|" + hashlib.file_digest(file, "sha256").hexdigest()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.folder / f"{slug}-{image_size}px{'-hflip' if flip else ''}-{digest}.npy"

    def file_hashes(self, files: Sequence[Path], *, progress: bool = False) -> list[str]:
        """SHA-256 of each file's bytes. A file whose size and modification time (ns) are
        what they were when it was last hashed here keeps that hash (as git's index does;
        100,000 files: under a second instead of ~40 s); the others are read and hashed on
        :data:`HASH_THREADS` threads. ImageReadError names a file that cannot be read."""
        index_path = self.folder / HASH_INDEX
        try:
            known = json.loads(index_path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            known = {}
        hashes: list[str | None] = [None] * len(files)
        stats: list[tuple[int, int] | None] = [None] * len(files)
        for i, path in enumerate(files):
            try:
                info = path.stat()
            except OSError:
                continue  # _file_hash names the problem
            stats[i] = (info.st_size, info.st_mtime_ns)
            entry = known.get(str(path))
            if isinstance(entry, list) and len(entry) == 3 and entry[:2] == list(stats[i]):
                hashes[i] = str(entry[2])
        todo = [i for i, digest in enumerate(hashes) if digest is None]
        with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:  # I/O and hashlib free
            for i, digest in zip(todo, tqdm(pool.map(_file_hash, [files[i] for i in todo]),
                                            total=len(todo), desc="hashing", unit="image",
                                            disable=not progress or not todo), strict=True):
                hashes[i] = digest
        settled = time.time_ns() - RACY_NS  # a file written just now may change again unseen
        fresh = {str(files[i]): [*stats[i], hashes[i]] for i in todo
                 if stats[i] is not None and stats[i][1] < settled}
        if fresh:
            known.update(fresh)
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = index_path.with_name(f".{index_path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps({"version": 1, "files": known}))
            partial.replace(index_path)
        return [str(digest) for digest in hashes]

    def lookup(self, spec: BackboneSpec, image_size: int, hashes: Sequence[str], *,
               flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Cached vectors of shape (n, num_features), zero where missing, and the found mask
        of shape (n,), bool, for content hashes of shape (n,)."""
        table = self._read(self.path(spec, image_size, flip=flip), spec)
        rows = {digest: i for i, digest in enumerate(table["content_hash"].astype(str))}
        found = np.array([h in rows for h in hashes], dtype=bool)
        vectors = np.zeros((len(hashes), spec.num_features), dtype=np.float32)
        vectors[found] = table["vector"][[rows[h] for h in np.asarray(hashes)[found]]]
        return vectors, found

    def store(self, spec: BackboneSpec, image_size: int, hashes: Sequence[str],
              vectors: np.ndarray, *, flip: bool = False) -> None:
        """Add vectors of shape (n, num_features) under their content hashes, shape (n,)."""
        if len(hashes) == 0:
            return
        path = self.path(spec, image_size, flip=flip)
        new = np.empty(len(hashes), dtype=self._dtype(spec))
        new["content_hash"], new["vector"] = hashes, vectors
        table = self._read(path, spec)
        table = np.concatenate([table[~np.isin(table["content_hash"], new["content_hash"])], new])
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        with partial.open("wb") as file:
            np.save(file, table, allow_pickle=False)
        partial.replace(path)

    def embed(self, paths: Sequence[str | os.PathLike[str]], *, backbone: str = DEFAULT_BACKBONE,
              weights: Weights = "default", image_size: int = 224,
              batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int | None = None,
              progress: bool = True, flip: bool = False,
              cluster: RayCluster | None = None) -> Embeddings:
        """Embed image files, running the backbone only on content not cached yet.

        Parameters as :func:`embed_paths` (``weights`` not random); ``flip`` embeds the
        left-right mirrored images (test-time augmentation), cached apart; with a
        ``cluster`` (:func:`~workbench.train.ray_engine.resolve_engine`) the cache misses
        are embedded by Ray actors (hashing, lookup and storing stay here). Returns
        :class:`Embeddings`: vectors of shape (n_images, num_features) in input order,
        ``computed`` marking the cache misses.
        """
        _check_args(image_size, batch_size, num_workers)
        files = [Path(p) for p in paths]
        model, spec = _backbone(backbone, weights)
        self.path(spec, image_size, flip=flip)  # random weights fail here, before any work
        hashes = self.file_hashes(files, progress=progress)
        vectors, found = self.lookup(spec, image_size, hashes, flip=flip)
        missing = np.flatnonzero(~found)
        if cluster is not None and len(missing):
            vectors[missing], new_hashes = cluster.embed_files(
                [files[i] for i in missing], backbone=backbone, weights=weights,
                image_size=image_size, batch_size=batch_size, flip=flip, progress=progress,
                desc=f"embedding ({spec.name})")
        else:
            vectors[missing], new_hashes = _compute(
                model, spec, [files[i] for i in missing], image_size=image_size,
                batch_size=batch_size, num_workers=num_workers, progress=progress, flip=flip)
        self.store(spec, image_size, new_hashes, vectors[missing], flip=flip)  # bytes decoded
        for i, digest in zip(missing, new_hashes, strict=True):
            hashes[i] = digest
        return Embeddings(vectors=vectors, filepaths=[str(p) for p in files],
                          content_hashes=hashes, computed=~found, spec=spec,
                          image_size=image_size)

    @staticmethod
    def _dtype(spec: BackboneSpec) -> np.dtype:
        return np.dtype([("content_hash", "S64"), ("vector", "<f4", (spec.num_features,))])

    def _read(self, path: Path, spec: BackboneSpec) -> np.ndarray:
        if not path.is_file():
            return np.empty(0, dtype=self._dtype(spec))
        table = np.load(path, allow_pickle=False)
        if table.dtype != self._dtype(spec):
            raise ValueError(f"{str(path)!r} is not an embedding cache of {spec.name!r} "
                             f"(dtype {table.dtype}); delete it and embed again.")
        return table


def _file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes; ImageReadError naming the file when it cannot be read."""
    try:
        return content_hash(read_bytes(path))
    except ImageRejectedError as error:
        raise ImageReadError(f"cannot read image {str(path)!r}: {error.reason}") from None


def embed_project(project: Project, *, backbone: str = DEFAULT_BACKBONE,
                  weights: Weights = "default", image_size: int = 224,
                  view: fo.DatasetView | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                  num_workers: int | None = None, progress: bool = True,
                  flip: bool = False) -> Embeddings:
    """Embed a project's images (or a view's, in its order), cached under its folder.

    Every file is hashed again (one cheap read), so an image whose bytes changed since
    import is recomputed; only content not in ``project.folder / "embeddings"`` runs through
    the backbone. ``flip`` embeds the mirrored images (cached apart). Other parameters as
    :func:`embed_paths` (``weights`` not random).

    Returns
    -------
    Embeddings
        ``vectors`` of shape (n_samples, num_features), ``sample_ids`` row for row;
        ``n_computed`` is 0 when everything came from the cache.
    """
    return _embed_project(project, view, backbone=backbone, weights=weights,
                          image_size=image_size, batch_size=batch_size,
                          num_workers=num_workers, progress=progress, flip=flip)


def embed(project: Project | str, *, engine: Engine = "local",
          view: fo.DatasetView | None = None, backbone: str = DEFAULT_BACKBONE,
          weights: Weights = "default", image_size: int = 224,
          batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
          address: str | None = None, workers: int | None = None) -> Embeddings:
    """Embed a project's images (or a view's) here or on a Ray cluster, cached under its folder.

    Parameters
    ----------
    project : Project or str
        The project, or its name.
    engine : {"local", "ray"}, default "local"
        ``"local"``: :func:`embed_project` in this process. ``"ray"``: the images not in
        the project's embedding cache are embedded by a pool of Ray actors (each builds
        the backbone once); hashing, the cache and the result stay in this process, so a
        later local call finds every vector cached (docs/cluster.md).
    view, backbone, weights, image_size, batch_size, progress
        As :func:`embed_project` takes them.
    address : str, optional
        ``engine="ray"`` only: the Ray cluster (``"ray://head:10001"``, ``"auto"``); by
        default ``$LOUPE_RAY_ADDRESS``, else a Ray started on this machine. A Ray already
        initialised in this process is used as it is.
    workers : int, optional
        ``engine="ray"`` only: actors in the pool (one CPU each); by default one per CPU.

    Returns
    -------
    Embeddings
        As :func:`embed_project`: ``vectors`` of shape (n_samples, num_features),
        ``sample_ids`` row for row, ``computed`` marking what this call ran.
    """
    from workbench.store.coerce import as_project

    cluster = resolve_engine(engine, address=address, workers=workers)
    return _embed_project(as_project(project), view, backbone=backbone, weights=weights,
                          image_size=image_size, batch_size=batch_size, num_workers=None,
                          progress=progress, flip=False, cluster=cluster)


def _embed_project(project: Project, view: fo.DatasetView | None, *,
                   cluster: RayCluster | None = None, **options: Any) -> Embeddings:
    if view is not None and getattr(view, "dataset_name", None) != project.name:
        raise ValueError(f"view must be a view of project {project.name!r}'s dataset, got a "
                         f"{type(view).__name__} of {getattr(view, 'dataset_name', None)!r}.")
    ids, filepaths = (project.dataset if view is None else view).values(["id", "filepath"])
    result = EmbeddingCache(project.folder / "embeddings").embed(filepaths, cluster=cluster,
                                                                 **options)
    return dataclasses.replace(result, sample_ids=list(ids))


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_NUM_WORKERS", "EmbeddingCache", "Embeddings",
           "ImageReadError", "embed", "embed_paths", "embed_project"]
