"""Leaks: near-copies on both sides of a split, where they make a figure optimistic.

>>> wb.leaks(p)                 # against the newest version's folds and the frozen set
>>> wb.leaks(p, "v1")[["sample_id", "other_id", "where", "kind"]]

A pair leaks when one image was trained on by a model that scored the other: two folds of
a version (``"fold 1 / fold 3"``), its train and validation split (``"train / eval"``), or a
training image and the frozen evaluation or golden set the gate scores (``"train / frozen
set"``). Versions trained by Loupe group near-copies (:mod:`workbench.train.groups`), so
their folds do not leak; older versions, the project's own split and later imports can.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench.metrics.near_copies import near_copy_pairs
from workbench.store.coerce import as_version
from workbench.store.eval_sets import read_sets
from workbench.store.project import Project, ProjectError
from workbench.train.groups import signatures

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

COLUMNS = ["sample_id", "other_id", "distance", "where", "kind", "correlation", "found_by",
           "label", "other_label", "filepath", "other_filepath"]
_HELD = ("frozen set", "golden set")


def leaks(project: Project | str, version: ModelVersion | str | None = None, *,
          progress: bool = False) -> pd.DataFrame:
    """Near-copy pairs that straddle a split of ``version`` (the newest by default; the
    project's train/val split when it has none) or the frozen evaluation / golden sets.

    Returns
    -------
    pd.DataFrame
        ``sample_id``, ``other_id``, ``distance`` (embedding cosine), ``where`` (``"fold 0
        / fold 2"``, ``"train / eval"``, ``"train / frozen set"``, ``"train / golden
        set"``), ``kind`` (``exact``: the same file or embedding; ``near``),
        ``correlation`` (thumbnail), ``found_by``, both labels and file paths; exact pairs
        first. ``attrs["version"]`` names the version checked (None: none);
        ``attrs["unreadable"]`` the files that could not be read (skipped, with a warning).
    """
    project, mv = _open(project, version)
    dataset = project.dataset
    if len(dataset) == 0:
        raise ProjectError(f"project {project.name!r} has no images; import some before "
                           "looking for leaks.")
    from workbench.train.embeddings import EmbeddingCache

    ids, paths, hashes, labels, splits = dataset.values(
        ["id", "filepath", "content_hash", "ground_truth.label", "split"])
    groups = (mv.config.get("groups") or {}) if mv is not None else {}
    used = groups.get("embedding") or {}
    same = {k: used[k] for k in ("backbone", "image_size") if k in used}
    unreadable: list[int] = []
    signed = signatures(paths, hashes, cache=project.folder / "embeddings", progress=progress,
                        unreadable=unreadable)
    skipped = [paths[k] for k in unreadable]
    if skipped:
        warnings.warn(f"leaks: skipped {len(skipped)} image(s) that cannot be read: "
                      f"{', '.join(map(repr, skipped[:5]))}{' …' if len(skipped) > 5 else ''}",
                      stacklevel=2)
    ok = np.setdiff1d(np.arange(len(ids)), unreadable)
    ids, paths, hashes, labels, splits = ([column[k] for k in ok] for column in
                                          (ids, paths, hashes, labels, splits))
    vectors = EmbeddingCache(project.folder / "embeddings").embed(
        paths, progress=progress, **same).vectors
    pairs = near_copy_pairs(ids, signed[ok], embeddings=vectors, hashes=hashes,
                            threshold=groups.get("embedding_threshold") if same else None)
    role, group = _roles(project, mv, ids, labels, splits)
    where = [_where(role.get(a), role.get(b), group.get(a), group.get(b))
             for a, b in zip(pairs["sample_id"], pairs["other_id"], strict=True)]
    pairs["where"] = where
    pairs = pairs[pairs["where"].notna()].copy()
    label, path = dict(zip(ids, labels, strict=True)), dict(zip(ids, paths, strict=True))
    for prefix, column in (("", "sample_id"), ("other_", "other_id")):
        pairs[f"{prefix}label"] = pairs[column].map(label)
        pairs[f"{prefix}filepath"] = pairs[column].map(path)
    order = np.lexsort((pairs["distance"].to_numpy(), (pairs["kind"] != "exact").to_numpy()))
    pairs = pairs.iloc[order].reset_index(drop=True)[COLUMNS]
    pairs.attrs["version"] = None if mv is None else mv.name
    pairs.attrs["unreadable"] = skipped
    return pairs


def _open(project: Project | str, version: ModelVersion | str | None
          ) -> tuple[Project, ModelVersion | None]:
    if version is None:
        from workbench.store.coerce import as_project

        project = as_project(project)
        return project, (project.model() if len(project.models()) else None)
    return as_version(project, version)


def _roles(project: Project, mv: ModelVersion | None, ids: list[str], labels: list,
           splits: list) -> tuple[dict[str, str], dict[str, int]]:
    """What each sample was to the version (``fold k``, ``train``) or, without one, its
    split if labelled; the held-back sets; and the version's group of each sample."""
    role: dict[str, str] = {}
    group: dict[str, int] = {}
    if mv is not None:
        snapshot = mv.snapshot()
        one_split = int(mv.config.get("folds") or 0) == 1
        for row in snapshot.itertuples(index=False):
            if row.fold >= 0:
                role[row.sample_id] = "eval" if one_split else f"fold {int(row.fold)}"
            else:
                role[row.sample_id] = "train"
            if "group" in snapshot.columns:
                group[row.sample_id] = int(row.group)
    else:
        for sid, label, split in zip(ids, labels, splits, strict=True):
            if label is not None:
                role[sid] = "eval" if split == "val" else "train"
    sets = read_sets(project.dataset)
    for name, words in zip(("golden", "frozen"), ("golden set", "frozen set"), strict=True):
        for sid in sets[name]:
            role[sid] = words
    return role, group


def _where(a: str | None, b: str | None, group_a: int | None, group_b: int | None) -> str | None:
    """Words for a pair that leaks, None for one that does not."""
    if a is None or b is None or a == b:
        return None
    if a in _HELD or b in _HELD:
        if a in _HELD and b in _HELD:
            return None
        held, other = (a, b) if a in _HELD else (b, a)
        return f"train / {held}"
    if group_a is not None and group_a == group_b:
        return None  # kept together by the version (a synthetic copy stays out of its fold)
    if "train" in (a, b):
        other = b if a == "train" else a
        return "train / eval" if other == "eval" else None  # k folds: -1 is synthetic
    first, second = sorted((a, b), key=lambda r: int(r.split()[-1]) if r[-1].isdigit() else -1)
    return f"{first} / {second}"


def leak_counts(pairs: pd.DataFrame) -> dict[str, int]:
    """Pairs per kind of leak (``where`` with the fold numbers dropped)."""
    kinds = pairs["where"].str.replace(r"fold \d+ / fold \d+", "fold / fold", regex=True)
    return {str(k): int(n) for k, n in kinds.value_counts().items()}


__all__ = ["leak_counts", "leaks"]
