"""The folds every trainer uses: stratified by label, grouped so that no near-copy (nor two
images sharing a ``group_by`` value) is ever on both sides of a split.

>>> plan = plan_folds(folder, samples, labels, n_folds=5, seed=0, vectors=vectors,
...                   group_values=part_ids, group_by="part_id", held_back=frozen)
>>> plan.fold          # fold holding each sample out (-1: never held out)
>>> plan.keep          # False for training images that are near-copies of held-back ones
>>> plan.summary       # what a version records as ``config["groups"]``

Thumbnail signatures (:func:`workbench.metrics.near_copies.pixel_signature`) are cached
under the project's ``embeddings/`` folder by content hash, like the embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from workbench.metrics.near_copies import (
    COPY_CORRELATION,
    SIGNATURE_SCALES,
    SIGNATURE_SIDE,
    copy_groups,
    grouped_folds,
    near_copy_pairs,
    pixel_signature,
)

#: What a version records of how its groups were formed.
METHOD = (f"StratifiedGroupKFold; near-copies (same content hash, embedding cosine distance "
          f"within the duplicate threshold, or grey-thumbnail correlation >= "
          f"{COPY_CORRELATION} under a mirror, flip or zoom of up to 12 %) always share a "
          "group")
_CACHE_NAME = f"signatures-{SIGNATURE_SIDE}px-{len(SIGNATURE_SCALES)}scales.npz"


@dataclass
class FoldPlan:
    """Folds of one training run and how they were formed."""

    fold: np.ndarray
    keep: np.ndarray
    group: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)


def signatures(paths: Sequence[str | os.PathLike[str]], hashes: Sequence[str | None], *,
               cache: str | os.PathLike[str] | None = None, progress: bool = False,
               unreadable: list[int] | None = None) -> np.ndarray:
    """Pixel signatures of image files (zeros for a file that cannot be read: it matches
    nothing; its index is appended to ``unreadable``), cached by content hash in
    ``cache``/signatures-….npz."""
    width = (len(SIGNATURE_SCALES), SIGNATURE_SIDE ** 2)
    out = np.zeros((len(paths), *width), dtype=np.float32)
    known: dict[str, np.ndarray] = {}
    store = None if cache is None else Path(cache) / _CACHE_NAME
    if store is not None and store.is_file():
        try:
            with np.load(store, allow_pickle=False) as saved:
                known = dict(zip(saved["hashes"].astype(str), saved["signatures"], strict=True))
        except (OSError, ValueError, KeyError):
            known = {}
    todo = []
    for k, digest in enumerate(hashes):
        if digest and digest in known and known[digest].shape == width:
            out[k] = known[digest]
        else:
            todo.append(k)

    def read(k: int) -> bool:
        try:
            with Image.open(paths[k]) as image:
                out[k] = pixel_signature(image)
        except (OSError, UnidentifiedImageError, ValueError):
            return False
        return True

    fresh = 0
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for k, ok in zip(todo, tqdm(pool.map(read, todo, chunksize=64), total=len(todo),
                                    desc="near-copy signatures", unit="image",
                                    disable=not progress), strict=True):
            if not ok:
                if unreadable is not None:
                    unreadable.append(k)
            elif hashes[k]:
                known[str(hashes[k])] = out[k]
                fresh += 1
    if store is not None and fresh:
        store.parent.mkdir(parents=True, exist_ok=True)
        partial = store.with_name(f".{store.name}.{os.getpid()}.partial.npz")
        np.savez(partial, hashes=np.array(list(known), dtype="U64"),
                 signatures=np.stack(list(known.values())))
        partial.replace(store)
    return out


def check_group_values(values: Sequence, group_by: str, project: str) -> None:
    """Refuse a ``group_by`` field that groups nothing: no values, or a different value on
    every image."""
    present = [v for v in values if v is not None and not (np.ndim(v) == 0 and pd.isna(v))]
    if not present:
        raise ValueError(f"group_by={group_by!r}: no labelled image of project {project!r} "
                         "has a value in that field. Fill it (a part, batch or serial id) or "
                         "leave group_by out.")
    if len(present) > 1 and len(set(map(str, present))) == len(present):
        raise ValueError(f"group_by={group_by!r} has a different value on every labelled image "
                         f"of project {project!r} ({len(present)} values), so it groups "
                         "nothing. Name a field whose value repeats for images of one part, "
                         "batch or serial number (near-copies are grouped anyway).")


def grouping(project: Any, sample_ids: Sequence[str],
             group_by: str | None) -> tuple[list | None, dict[str, list]]:
    """The ``group_by`` values of ``sample_ids`` (checked: see :func:`check_group_values`)
    and the ``filepath`` and ``content_hash`` of the project's frozen evaluation and golden
    images."""
    from workbench.store.eval_sets import held_back_ids

    dataset = project.dataset
    values = None
    if group_by is not None:
        if not isinstance(group_by, str) or not group_by:
            raise ValueError(f"group_by must be a field name (a str), got {group_by!r}.")
        if not dataset.has_field(group_by):
            fields = ", ".join(project.slice_fields) or "none"
            raise ValueError(f"group_by={group_by!r} is not a field of project "
                             f"{project.name!r} (its slice fields: {fields}). Add it with "
                             "import_csv or set_slices, or name another field.")
        found = dict(zip(*dataset.select(list(sample_ids)).values(["id", group_by]),
                         strict=True))
        values = [_hashable(found.get(s)) for s in sample_ids]
        check_group_values(values, group_by, project.name)
    held = held_back_ids(dataset)
    paths, hashes = (dataset.select(held).values(["filepath", "content_hash"]) if held
                     else ([], []))
    return values, {"filepath": list(paths), "content_hash": list(hashes)}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def plan_folds(folder: str | os.PathLike[str], samples: dict[str, list], labels: Sequence, *,
               n_folds: int, seed: int, vectors: np.ndarray | None = None,
               group_values: Sequence | None = None, group_by: str | None = None,
               held_back: dict[str, Any] | None = None, copies: bool = True,
               embedding: dict[str, Any] | None = None, scored: np.ndarray | None = None,
               progress: bool = False) -> FoldPlan:
    """Folds for ``samples`` (``sample_id``, ``filepath``, ``content_hash``, ``split``,
    ``synthetic`` lists) stratified by ``labels``.

    ``n_folds == 1`` keeps the project's train/val split, moving each group that straddles
    it to the split most of it is in (ties: val). ``held_back`` (``filepath``,
    ``content_hash`` and optionally ``vectors`` of the frozen and golden images) drops the
    training images that are near-copies of them (``keep``). ``embedding`` says what
    ``vectors`` are (``backbone``, ``image_size``), for :func:`workbench.leaks` to compare
    the same way. ``scored`` (bool per sample) limits the folds to those samples (an anomaly
    version holds out good images only); the others still join groups. ``copies=False``
    groups by ``group_values`` only (see :func:`workbench.train`'s ``group_copies``).
    """
    n = len(labels)
    synthetic = np.asarray(samples.get("synthetic", [False] * n), dtype=bool)
    cache = Path(folder) / "embeddings"
    hashes = list(samples["content_hash"])
    keep = np.ones(n, dtype=bool)
    summary: dict[str, Any] = {"group_by": group_by, "near_copies": copies, "method": METHOD}
    pairs = pd.DataFrame(columns=["sample_id", "other_id"])
    if copies:
        sig = signatures(samples["filepath"], hashes, cache=cache, progress=progress)
        ids = [str(i) for i in range(n)]
        if held_back and len(held_back.get("filepath", [])):
            held_hashes = list(held_back["content_hash"])
            held_sig = signatures(held_back["filepath"], held_hashes, cache=cache)
            both = None
            if vectors is not None and held_back.get("vectors") is not None:
                both = np.concatenate([vectors, held_back["vectors"]])
            everything = near_copy_pairs(
                ids + [f"h{i}" for i in range(len(held_hashes))],
                np.concatenate([sig, held_sig]), embeddings=both, hashes=hashes + held_hashes)
            crossing = everything["sample_id"].str.startswith("h") != \
                everything["other_id"].str.startswith("h")
            mine = pd.concat([everything.loc[crossing, "sample_id"],
                              everything.loc[crossing, "other_id"]])
            dropped = sorted({int(s) for s in mine if not s.startswith("h")})
            keep[dropped] = False
            summary["dropped_near_held_back"] = len(dropped)
        pairs = near_copy_pairs(ids, sig, embeddings=vectors, hashes=hashes)
        summary["embedding_threshold"] = pairs.attrs["threshold"]
        summary["embedding"] = embedding if vectors is not None else None
        summary["pixel_correlation"] = COPY_CORRELATION
        summary["near_copy_pairs"] = len(pairs)
    group = copy_groups([str(i) for i in range(n)], pairs, given=group_values)
    names = {}
    if group_values is not None:
        for g, value in zip(group, group_values, strict=True):
            if value is not None and not (np.ndim(value) == 0 and pd.isna(value)):
                names.setdefault(int(g), f"{group_by}={value!r}")
    real = np.flatnonzero(~synthetic & keep & (True if scored is None else
                                                np.asarray(scored, dtype=bool)))
    fold = np.full(n, -1, dtype=np.int64)
    if n_folds == 1:
        split = np.asarray(samples["split"], dtype=object)
        moved = 0
        for g in np.unique(group[real]):
            members = real[group[real] == g]
            if len(set(split[members])) > 1:
                moved += 1
                to_val = (split[members] == "val").sum() * 2 >= len(members)
                fold[members] = 0 if to_val else -1
            else:
                fold[members] = 0 if split[members[0]] == "val" else -1
        summary["groups_moved_across_split"] = moved
    else:
        fold[real] = grouped_folds(np.asarray(labels, dtype=object)[real], group[real],
                                   n_folds, seed=seed, describe=names)
    sizes = pd.Series(group[real]).value_counts()
    summary.update({"n_groups": len(sizes), "largest_group": int(sizes.max()) if
                    len(sizes) else 0, "grouped_images": int(sizes[sizes > 1].sum())})
    return FoldPlan(fold=fold, keep=keep, group=group, summary=summary)


def away_folds(plan: FoldPlan) -> np.ndarray:
    """The fold each sample must stay out of the training of: its own, or for a synthetic
    image the fold of the real images it is a copy of (-1: none)."""
    away = plan.fold.copy()
    by_group = {int(g): int(f) for g, f in zip(plan.group, plan.fold, strict=True) if f >= 0}
    for k in np.flatnonzero(plan.fold < 0):
        away[k] = by_group.get(int(plan.group[k]), -1)
    return away


__all__ = ["METHOD", "FoldPlan", "away_folds", "check_group_values", "grouping", "plan_folds",
           "signatures"]
