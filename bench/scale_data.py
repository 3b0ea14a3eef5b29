"""The scale data set of ``bench/scale.py``: many small casings from the demo renderer.

``write_scale_images(folder, n)`` renders ``n`` images (96 px by default) on every core,
``folder/<block>/<index>.png`` with 1,000 files a block, and writes ``labels.csv``
(``filepath,label,annotator,line,camera,lighting``): the demo's classes, about 3 in 4
images ``ok``, the demo's three slice fields; 1 % of the labelled images carry a planted
wrong label (``planted`` in the returned design, not in the CSV) and 20 % are unlabelled
(an empty label: the pool ``suggest_labels`` chooses from). Everything follows from
``seed``; image ``i`` is drawn from its own generator, so any subset renders alike.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from workbench.demo import CAMERAS, CLASSES, LINES
from workbench.demo.render import render_casing

#: Images per sub-folder.
BLOCK = 1000
#: Share of each class among the images (``ok`` dominates, as on a line).
CLASS_SHARE = {"ok": 0.76, "scratch": 0.06, "dent": 0.06, "pit_mark": 0.06,
               "discoloration": 0.06}
PLANTED_SHARE = 0.01
UNLABELLED_SHARE = 0.20
ANNOTATOR = "inspector"


def scale_design(n: int, *, seed: int = 0) -> pd.DataFrame:
    """One row per image: ``filepath`` (relative), ``truth``, ``label`` (given; "" when
    unlabelled), ``planted`` (a wrong label on purpose) and the slice values."""
    if set(CLASS_SHARE) != set(CLASSES):
        raise RuntimeError("CLASS_SHARE must name the demo's classes")
    blocks = [_design_block(seed, block) for block in range(-(-n // BLOCK))]
    design = pd.concat(blocks, ignore_index=True).iloc[:n]
    design.insert(0, "filepath", [f"{i // BLOCK:03d}/{i:06d}.png" for i in range(n)])
    return design


def _design_block(seed: int, block: int) -> pd.DataFrame:
    """Rows of one block of 1,000, from its own generator (so a design is the first rows
    of any larger one)."""
    rng = np.random.default_rng([seed, block])
    n = BLOCK
    classes = np.array(list(CLASS_SHARE))
    truth = rng.choice(classes, size=n, p=list(CLASS_SHARE.values()))
    label = truth.astype(object).copy()
    unlabelled = rng.random(n) < UNLABELLED_SHARE
    planted = (rng.random(n) < PLANTED_SHARE) & ~unlabelled
    shift = rng.integers(1, len(classes), size=n)
    index_of = {c: i for i, c in enumerate(classes)}
    wrong = classes[(np.array([index_of[t] for t in truth]) + shift) % len(classes)]
    label[planted] = wrong[planted]
    label[unlabelled] = ""
    return pd.DataFrame({
        "truth": truth, "label": label, "planted": planted,
        "line": rng.choice(LINES, size=n), "camera": rng.choice(CAMERAS, size=n),
        "lighting": np.where(rng.random(n) < 0.25, "dim", "bright"),
    })


def _render_block(job: tuple[Path, int, list[tuple[int, str, str, str, str]], int]) -> int:
    folder, seed, rows, size = job
    for index, truth, line, camera, lighting in rows:
        path = folder / f"{index // BLOCK:03d}" / f"{index:06d}.png"
        pixels = render_casing(np.random.default_rng([seed, index]), truth, lighting=lighting,
                               line=line, camera=camera, size=size)
        Image.fromarray(pixels).save(path, compress_level=1)
    return len(rows)


def write_scale_images(folder: str | os.PathLike[str], n: int, *, seed: int = 0,
                       size: int = 96, processes: int | None = None,
                       progress: bool = True) -> tuple[Path, pd.DataFrame, float]:
    """Render the images and ``labels.csv``; returns the CSV's path, the design and the
    rendering seconds. Files already there (same name) are kept, so a larger run reuses a
    smaller one's images."""
    from tqdm import tqdm

    folder = Path(folder)
    design = scale_design(n, seed=seed)
    todo: dict[int, list[tuple[int, str, str, str, str]]] = {}
    for i, row in enumerate(design.itertuples(index=False)):
        if not (folder / row.filepath).is_file():
            todo.setdefault(i // BLOCK, []).append(
                (i, row.truth, row.line, row.camera, row.lighting))
    for block in todo:
        (folder / f"{block:03d}").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(processes or os.cpu_count()) as pool, \
            tqdm(total=sum(map(len, todo.values())), desc="rendering", unit="image",
                 disable=not progress) as bar:
        for done in pool.map(_render_block, [(folder, seed, rows, size)
                                             for rows in todo.values()]):
            bar.update(done)
    seconds = time.perf_counter() - started
    csv_path = folder / f"labels-{n}.csv"
    design.assign(annotator=ANNOTATOR)[
        ["filepath", "label", "annotator", "line", "camera", "lighting"]].to_csv(
        csv_path, index=False)
    return csv_path, design, seconds
