"""Shared by the NEU benchmarks: a throwaway Loupe home, the manifest, projects from a table.

Import this module before ``workbench``: it points FiftyOne and Loupe at a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "neu_surface_defect"


def throwaway_home(prefix: str) -> Path:
    """Point FiftyOne's database and Loupe's home at a new temporary folder."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["FIFTYONE_DATABASE_DIR"] = str(root / "db")
    os.environ["LOUPE_HOME"] = str(root / "home")
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    return root


def machine_line(argv: list[str]) -> str:
    return (f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} "
            f"GiB; command: {' '.join(argv)}")


def manifest(data: Path) -> pd.DataFrame:
    """filepath (absolute), label, folder (the source release's folder) of every image.

    Byte-identical files after the first are left out (NEU has one such pair, in
    ``patches``), so every row is one sample of a project."""
    table = pd.read_csv(data / "manifest.csv").drop_duplicates("sha256").reset_index(drop=True)
    return pd.DataFrame({"filepath": [str((data / p).absolute()) for p in table["path"]],
                         "label": table["label"],
                         "folder": table["source_path"].str.split("/").str[0]})


def draw(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``per_class`` random samples of every class."""
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class,
                                              replace=False) for c in np.unique(labels)]))


def flip_labels(labels: np.ndarray, share: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``share`` of them changed to another class at random, and the mask."""
    classes = np.unique(labels)
    noisy = labels.copy()
    flipped = np.zeros(len(labels), dtype=bool)
    chosen = rng.choice(len(labels), round(share * len(labels)), replace=False)
    for i in chosen:
        noisy[i] = rng.choice(classes[classes != labels[i]])
        flipped[i] = True
    return noisy, flipped


def project_from_rows(name: str, rows: pd.DataFrame, folder: Path, *, cache_from=None):
    """A project from rows of filepath, label[, annotator][, slice columns]; the embedding
    cache of ``cache_from`` (a project) is copied in, so nothing is embedded twice."""
    import workbench as wb

    csv = folder / f"{name}.csv"
    rows.to_csv(csv, index=False)
    project = wb.Project.create(name, overwrite=True)
    project.import_csv(csv, progress=False)
    if cache_from is not None and (cache_from.folder / "embeddings").is_dir():
        shutil.copytree(cache_from.folder / "embeddings", project.folder / "embeddings",
                        dirs_exist_ok=True)
    return project


def precision_recall_f1(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    hits = int((flagged & truth).sum())
    precision = hits / max(int(flagged.sum()), 1)
    recall = hits / max(int(truth.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1
