"""The embedded demo: a phone-casing inspection project generated from a seed, offline.

Brushed-metal casings at 128 px in five classes (``ok``, ``scratch``, ``dent``,
``pit_mark``, ``discoloration``), slice fields ``line`` (A/B/C), ``camera`` (cam1/cam2)
and ``lighting`` (bright/dim), and three simulated annotators: ``alice`` and ``bob`` are
careful, ``carol`` often swaps ``dent`` and ``discoloration``. In dim light pit marks are
faint, so a model is weakest there. A few images were exported twice and the copy filed
under the wrong class by everyone (identical pixels, different bytes, conflicting labels).
The generator's own truth is kept in ``demo_truth`` so tutorials can measure how well Loupe
finds wrong labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from workbench.demo_render import CLASSES, render_casing
from workbench.project import Project

LINES = ("A", "B", "C")
CAMERAS = ("cam1", "cam2")
LIGHTINGS = ("bright", "dim")
#: Share of dim-light images.
DIM_SHARE = 0.35
#: Per annotator: probability of a random wrong label, and of the confused pair swap.
ANNOTATORS = {
    "alice": {"noise": 0.03, "swap": 0.0},
    "bob": {"noise": 0.05, "swap": 0.0},
    "carol": {"noise": 0.04, "swap": 0.45},
}
CONFUSED_PAIR = ("dent", "discoloration")
#: Images exported twice, the copy misfiled under another class (default of the demo).
DUPLICATES = 3


def demo_table(*, n_per_class: int = 40, seed: int = 0, duplicates: int = 0) -> pd.DataFrame:
    """The demo's design, one row per image: file name, true label, slice values, the label
    each annotator gives, and ``duplicate_of`` (the original's file name for a misfiled copy,
    else None). Pure: no images are drawn and nothing is written."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in CLASSES:
        for index in range(n_per_class):
            row = {
                "filename": f"{label}_{index:03d}.png",
                "demo_truth": label,
                "line": LINES[rng.integers(len(LINES))],
                "camera": CAMERAS[rng.integers(len(CAMERAS))],
                "lighting": "dim" if rng.random() < DIM_SHARE else "bright",
                "duplicate_of": None,
            }
            for name, habits in ANNOTATORS.items():
                row[name] = _annotate(rng, label, **habits)
            rows.append(row)
    for original in rng.choice(len(rows), size=min(duplicates, len(rows)), replace=False):
        copy = dict(rows[original], filename=rows[original]["filename"].replace(".png",
                                                                                 "_copy.png"),
                    duplicate_of=rows[original]["filename"])
        misfiled = str(rng.choice([c for c in CLASSES if c != copy["demo_truth"]]))
        rows.append({**copy, **dict.fromkeys(ANNOTATORS, misfiled)})
    return pd.DataFrame(rows)


def _annotate(rng: np.random.Generator, truth: str, *, noise: float, swap: float) -> str:
    if truth in CONFUSED_PAIR and rng.random() < swap:
        return CONFUSED_PAIR[1 - CONFUSED_PAIR.index(truth)]
    if rng.random() < noise:
        return str(rng.choice([c for c in CLASSES if c != truth]))
    return truth


def write_demo_images(folder: Path, table: pd.DataFrame, *, seed: int = 0,
                      size: int = 128) -> list[Path]:
    """Render every row of ``table`` to ``folder/<demo_truth>/<filename>``; a duplicate row
    gets its original's pixels, saved with other PNG settings (so other bytes)."""
    rng = np.random.default_rng([seed, size])
    paths, drawn = [], {}
    for row in table.itertuples(index=False):
        path = folder / row.demo_truth / row.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        original = getattr(row, "duplicate_of", None)
        if isinstance(original, str):
            Image.fromarray(drawn[original]).save(path, optimize=False, compress_level=9)
        else:
            pixels = render_casing(rng, row.demo_truth, lighting=row.lighting, line=row.line,
                                   camera=row.camera, size=size)
            Image.fromarray(pixels).save(path, optimize=False, compress_level=1)
            drawn[row.filename] = pixels
        paths.append(path)
    return paths


def create_demo_project(name: str = "demo", n_per_class: int = 40, seed: int = 0, *,
                        overwrite: bool = False, size: int = 128, duplicates: int = DUPLICATES,
                        progress: bool = False) -> Project:
    """Generate the demo images and import them as a project with three annotators.

    Parameters
    ----------
    name : str
        Project name.
    n_per_class : int
        Images per class (200 in all by default).
    seed : int
        Everything (images, slices, annotator mistakes) follows from it.
    overwrite : bool
        Replace an existing project of that name.
    size : int
        Image side in pixels.
    duplicates : int
        Images exported twice, the copy labelled as another class by every annotator.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    project = Project.create(name, classes=CLASSES, overwrite=overwrite)
    table = demo_table(n_per_class=n_per_class, seed=seed, duplicates=duplicates)
    image_dir = project.folder / "demo_images"
    write_demo_images(image_dir, table, seed=seed, size=size)
    rows = [
        {"filepath": f"{r['demo_truth']}/{r['filename']}", "label": r[who], "annotator": who,
         "line": r["line"], "camera": r["camera"], "lighting": r["lighting"]}
        for r in table.to_dict("records") for who in ANNOTATORS
    ]
    csv_path = image_dir / "labels.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    project.import_csv(csv_path, progress=progress)
    truth = {str((image_dir / r.demo_truth / r.filename).absolute()): r.demo_truth
             for r in table.itertuples(index=False)}
    project.dataset.set_values("demo_truth", truth, key_field="filepath")
    return project
