"""The images part of ``bench/scale.py``: every step a person touches, at 1k, 10k, 100k."""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from scale_data import CLASS_SHARE, write_scale_images

#: Steps whose time has a goal at 100,000 images (seconds).
GOALS = {"open": 1.0, "grid first page": 0.3, "grid first page, new kernel": 0.3,
         "grid filter change": 0.5,
         "relabel round trip": 0.15, "label issues": 60.0, "near-duplicates": 60.0,
         "suggest_labels cover": 60.0, "embedding map": 120.0}


class PeakMemory:
    """The process's peak resident memory while the block runs: Linux's high-water mark
    (``VmHWM``), reset at the start through ``/proc/self/clear_refs`` (no sampling thread
    taking the GIL from the step measured); elsewhere psutil's RSS at the end."""

    def __enter__(self) -> PeakMemory:
        self._process = psutil.Process()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._linux = True
        except OSError:
            self._linux = False
        self.peak = self._process.memory_info().rss
        return self

    def __exit__(self, *exc: object) -> None:
        rss = self._process.memory_info().rss
        if self._linux:
            status = Path("/proc/self/status").read_text().splitlines()
            kb = next(line for line in status if line.startswith("VmHWM")).split()[1]
            rss = max(rss, int(kb) * 1024)
        self.peak = max(self.peak, rss)


class Steps:
    """Collects one row per (size, step): seconds, peak MB, the baseline's seconds."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def time(self, n: int, step: str, call: Callable[[], Any], *, repeats: int = 1,
             baseline: Callable[[], Any] | None = None, note: str = "") -> Any:
        times, result = [], None
        with PeakMemory() as memory:
            for _ in range(repeats):
                start = time.perf_counter()
                result = call()
                times.append(time.perf_counter() - start)
        base = None
        if baseline is not None:
            base_times = []
            for _ in range(repeats):
                start = time.perf_counter()
                baseline()
                base_times.append(time.perf_counter() - start)
            base = statistics.median(base_times)
        row = {"n": n, "step": step, "seconds": statistics.median(times),
               "peak_mb": memory.peak / 2**20, "baseline_s": base, "note": note}
        self.rows.append(row)
        goal = GOALS.get(step)
        print(f"n={n:>7,} {step:<24} {row['seconds']:9.3f} s  peak {row['peak_mb']:7.0f} MB"
              + (f"  baseline {base:8.3f} s" if base is not None else "")
              + (f"  (goal < {goal:g} s at 100k)" if goal else "")
              + (f"  {note}" if note else ""), flush=True)
        return result


def _pillow_verify(paths: list[Path]) -> None:
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            image.verify()


def part_images(sizes: list[int], folder: Path, *, image_size: int,
                reuse: bool = False) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # not bench/widgets.py
    sys.modules.pop("widgets", None)
    steps = Steps()
    started = time.perf_counter()
    _, _, render_s = write_scale_images(folder, max(sizes))
    print(f"rendered {max(sizes):,} images of 96 px in {render_s:.0f} s "
          f"(kept in {folder}; files already there are not drawn again)", flush=True)
    for n in sizes:
        _one_size(steps, n, folder, image_size=image_size, reuse=reuse)
        print(f"  -- {n:,} done, {time.perf_counter() - started:.0f} s so far", flush=True)
    _summary(pd.DataFrame(steps.rows), sizes)


def _one_size(steps: Steps, n: int, folder: Path, *, image_size: int,
              reuse: bool) -> None:
    import fiftyone as fo
    from fiftyone import ViewField as F

    import workbench as wb
    from widgets.label.grid import LabelingGrid
    from workbench.store import pages
    from workbench.train.embeddings import embed_project

    csv_path, design, _ = write_scale_images(folder, n, progress=False)
    paths = [folder / f for f in design["filepath"]]
    name = f"scale-{n}"
    reused = reuse and name in wb.list_projects() and len(wb.Project.open(name)) == n \
        and not wb.Project.open(name).models().empty
    if reused:
        print(f"    reusing project {name!r}: its import, embeddings and probe version "
              "(--reuse)", flush=True)
    else:
        project = wb.Project.create(name, classes=list(CLASS_SHARE), overwrite=True)
        report = steps.time(n, "import", lambda: project.import_csv(csv_path, progress=False),
                            baseline=lambda: _pillow_verify(paths))
        row = steps.rows[-1]
        row["note"] = (f"{n / row['seconds']:,.0f} images/s (baseline "
                       f"{n / row['baseline_s']:,.0f}); {len(report.added):,} imported, "
                       f"{len(report.rejected)} rejected")
        print("    " + row["note"], flush=True)
    steps.time(n, "open", lambda: wb.Project.open(name), repeats=5,
               baseline=lambda: fo.load_dataset(name))
    p = wb.Project.open(name)
    dataset = p.dataset

    def page_baseline(view: Any) -> None:
        view.limit(60).values(["id", "filepath", "ground_truth.label", "tags"])
        view.count()

    grid = steps.time(n, "grid first page (cold)",
                      lambda: LabelingGrid(p, annotator="bench", page_size=60))
    grid = steps.time(n, "grid first page",
                      lambda: LabelingGrid(p, annotator="bench", page_size=60), repeats=3,
                      baseline=lambda: page_baseline(dataset))

    def new_kernel_grid() -> Any:  # nothing in memory: the options come from the folder
        pages._OPTIONS.clear()
        return LabelingGrid(p, annotator="bench", page_size=60)

    steps.time(n, "grid first page, new kernel", new_kernel_grid, repeats=3)
    filters = iter([{"lighting": "dim"}, {"lighting": None, "label": "dent"},
                    {"label": None, "camera": "cam2"}] * 3)
    shown = grid  # the closures below read it
    steps.time(n, "grid filter change", lambda: shown.filter(**next(filters)), repeats=3,
               baseline=lambda: page_baseline(dataset.match(F("lighting") == "dim")))
    grid.filter(camera=None)
    targets = iter(grid.sample_ids[:5])
    labels = iter(["dent", "scratch", "ok", "pit_mark", "dent"])

    def raw_relabel() -> None:
        sample = dataset[shown.sample_ids[10]]
        sample["ground_truth"] = fo.Classification(label="dent")
        sample.save()

    steps.time(n, "relabel round trip", lambda: shown.assign(next(labels), [next(targets)]),
               repeats=3, baseline=raw_relabel)

    if reused:  # the hash record as the embed steps would have left it; no cached map
        mv = p.model(str(p.models()["name"].iloc[-1]))
        embed_project(p, image_size=image_size, progress=False)
        shutil.rmtree(p.folder / "maps", ignore_errors=True)
    else:
        steps.time(n, "embed", lambda: embed_project(p, image_size=image_size,
                                                     progress=False),
                   note=f"{image_size} px (no goal; cached from here on)")
        steps.time(n, "embed mirrored",
                   lambda: embed_project(p, image_size=image_size, flip=True, progress=False))
        mv = steps.time(n, "train probe", lambda: wb.train(
            p, mode="probe", image_size=image_size, progress=False))
    steps.time(n, "embeddings from the cache",
               lambda: embed_project(p, image_size=image_size, progress=False),
               note="hashes by file size and time, vectors by hash")
    issues = steps.time(n, "label issues", lambda: wb.label_issues(p, mv),
                        baseline=lambda: _cleanlab_baseline(p, mv))
    truth = dict(zip(paths and [str(path.resolve()) for path in paths],
                     design["planted"], strict=True))
    flagged = issues[issues["is_issue"]] if "is_issue" in issues else issues.head(0)
    planted = int(design["planted"].sum())
    caught = sum(truth.get(str(Path(f).resolve()), False) for f in flagged["filepath"])
    steps.rows[-1]["note"] = (f"{len(flagged):,} flagged; planted wrong labels caught "
                              f"{caught}/{planted}")
    print("    " + steps.rows[-1]["note"], flush=True)
    vectors = embed_project(p, image_size=image_size, progress=False).vectors
    steps.time(n, "near-duplicates",
               lambda: wb.near_duplicates(p, image_size=image_size),
               baseline=(lambda: _sklearn_neighbours(vectors)) if n <= 10_000 else None,
               note="" if n <= 10_000 else "baseline (sklearn brute 2-NN) only to 10k")
    steps.time(n, "outliers", lambda: wb.outliers(p, image_size=image_size))
    steps.time(n, "suggest_labels cover",
               lambda: wb.suggest_labels(p, n=50, strategy="cover",
                                         image_size=image_size),
               baseline=lambda: _kmeans_baseline(vectors))
    steps.time(n, "embedding map", lambda: wb.embedding_map(p, mv),
               baseline=lambda: _pca_baseline(vectors))
    steps.time(n, "datasheet", lambda: wb.datasheet(p),
               baseline=lambda: p.to_pandas()["label"].value_counts())
    batch = [str(path) for path in paths[:500]]
    steps.time(n, "drift check (500)", lambda: wb.drift(p, mv, batch, write=False,
                                                         n_permutations=200))


def _cleanlab_baseline(p: Any, mv: Any) -> None:
    from cleanlab.filter import find_label_issues

    held = wb_held_out(p, mv)
    find_label_issues(held["given"], held["probs"])


def wb_held_out(p: Any, mv: Any) -> dict[str, np.ndarray]:
    from workbench.analyse.classification import held_out

    frame = held_out(p, mv)
    classes = list(mv.classes)
    probs = frame[[f"prob_{c}" if f"prob_{c}" in frame else c for c in classes]].to_numpy(
        float)
    given = frame["given"].map({c: i for i, c in enumerate(classes)}).to_numpy(int)
    return {"given": given, "probs": probs}


def _sklearn_neighbours(vectors: np.ndarray) -> None:
    from sklearn.neighbors import NearestNeighbors

    NearestNeighbors(n_neighbors=2, algorithm="brute", metric="cosine").fit(vectors).kneighbors()


def _kmeans_baseline(vectors: np.ndarray) -> None:
    from sklearn.cluster import MiniBatchKMeans

    MiniBatchKMeans(n_clusters=50, random_state=0, n_init=1).fit(vectors)


def _pca_baseline(vectors: np.ndarray) -> None:
    from sklearn.decomposition import PCA

    PCA(n_components=2, random_state=0).fit_transform(vectors)


def _summary(table: pd.DataFrame, sizes: list[int]) -> None:
    print()
    wide = table.pivot_table(index="step", columns="n", values="seconds", sort=False)
    peak = table.pivot_table(index="step", columns="n", values="peak_mb", sort=False)
    base = table.pivot_table(index="step", columns="n", values="baseline_s", sort=False)
    out = pd.DataFrame(index=wide.index)
    for n in sizes:
        out[f"{n:,} s"] = wide[n].map(lambda v: f"{v:.3f}")
    largest = max(sizes)
    out[f"baseline {largest:,} s"] = base.get(largest, pd.Series(dtype=float)).reindex(
        wide.index).map(lambda v: "-" if pd.isna(v) else f"{v:.3f}")
    out[f"peak MB {largest:,}"] = peak[largest].map(lambda v: f"{v:.0f}")
    low = [n for n in sizes if n < largest]
    if low:
        ref = max(low)
        out[f"growth {ref:,}→{largest:,}"] = [
            f"{math.log(wide.at[s, largest] / wide.at[s, ref]) / math.log(largest / ref):+.2f}"
            if wide.at[s, ref] > 0 else "-" for s in wide.index]
    out["goal"] = [f"< {GOALS[s]:g} s" if s in GOALS else "" for s in wide.index]
    print(out.to_string())
    print(f"\nprocess peak resident memory over the run: "
          f"{table['peak_mb'].max():,.0f} MB (goal < 6,144 MB)")
