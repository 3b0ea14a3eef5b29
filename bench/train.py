"""Few-shot training on NEU and KolektorSDD: wb.train's modes against a frozen-embedding
baseline.

Usage: ``python bench/train.py [--set neu|kolektor] [--data ../shared/data/neu_surface_defect]
[--shots 50] [--seeds 5] [--modes auto probe finetune cached] [--seeds-of auto 2]
[--folds 5] [--epochs N] [--image-size 224]``

``auto`` is the default (issue 29: fold models on the feature cache of 4 frozen stages, 10
epochs; the final model every layer on pixels). ``previous`` is the default before issue 29
(fold models trained like the final model, on pixels with early stopping:
``FinetuneSettings(fold_frozen_blocks=None, fold_epochs=None)``), ``cached`` everything on
the cache (``FinetuneSettings(frozen_blocks=4, fold_epochs=None, patience=None)``, 20
epochs); the figures compare each with ``previous`` in the same run. ``--seeds-of MODE N``
runs a mode on the first N seeds only (``previous`` takes ~6 minutes a run). Each run's
seconds are split into training (``wb.train``) and predicting the scored images.

``--set kolektor`` (``../shared/data/kolektor_sdd``, 347 ok and 52 cracked commutator
surfaces): each seed labels 40 ok + 10 defect images (``--shots`` is ignored) and the score
is the average precision of the ``defect`` class on every other image, from the kept
model's probabilities (the baseline's from its ``predict_proba``).

All 1,800 NEU images go into one throwaway project (a temporary FiftyOne database and Loupe
home). For each seed, ``--shots`` images are drawn stratified by class; ``wb.train`` sees
only those (a view), and the model kept is scored on every other image. The baseline, in the
same process and on the same draws: frozen ``tf_efficientnet_lite0`` embeddings at the same
size + scikit-learn ``LogisticRegression()`` with default settings. Printed per mode: mean ±
std accuracy over seeds, wall time per run and peak resident memory during the run; then
the wall time of a 5-fold probe on 300 images (embedding cache cold and warm), and the
embedding pipeline's throughput against the raw forward (see bench/embeddings.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = {"neu": ROOT.parent / "shared" / "data" / "neu_surface_defect",
        "kolektor": ROOT.parent / "shared" / "data" / "kolektor_sdd"}
DEFAULT_DATA = DATA["neu"]
#: KolektorSDD: labelled images per class in each seed's draw.
KOLEKTOR_SHOTS = {"ok": 40, "defect": 10}


class PeakMemory:
    """Peak resident memory of this process (MiB) while the block runs, sampled at 20 Hz."""

    def __enter__(self) -> PeakMemory:
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return self.peak / 2**20


def draw(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` samples stratified by label (as equal per class as possible)."""
    from sklearn.model_selection import train_test_split

    chosen, _ = train_test_split(np.arange(len(labels)), train_size=shots, stratify=labels,
                                 random_state=seed)
    return np.sort(chosen)


def draw_counts(labels: np.ndarray, counts: dict[str, int], seed: int) -> np.ndarray:
    """Indices of ``counts[c]`` samples of each class ``c``, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), n, replace=False)
                                   for c, n in counts.items()]))


def score(truth: np.ndarray, predicted: np.ndarray, defect: np.ndarray | None) -> float:
    """Accuracy, or with ``defect`` probabilities the defect class's average precision."""
    if defect is None:
        return float((predicted == truth).mean())
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth == "defect", defect))


def baseline_score(vectors: np.ndarray, labels: np.ndarray, chosen: np.ndarray,
                   kolektor: bool) -> float:
    from sklearn.linear_model import LogisticRegression

    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    model = LogisticRegression(max_iter=3000).fit(vectors[chosen], labels[chosen])
    defect = model.predict_proba(vectors[rest])[:, list(model.classes_).index("defect")] \
        if kolektor else None
    return score(labels[rest], model.predict(vectors[rest]), defect)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(DATA), default="neu")
    parser.add_argument("--data", type=Path, default=None,
                        help="the data folder (default: the set's in ../shared/data)")
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only-seeds", type=int, nargs="+", default=None,
                        help="run these seeds instead of 0 … --seeds - 1")
    parser.add_argument("--modes", nargs="+", default=["auto", "probe", "previous"],
                        choices=["auto", "probe", "finetune", "cached", "previous"])
    parser.add_argument("--seeds-of", nargs=2, action="append", default=[],
                        metavar=("MODE", "N"), help="run MODE on the first N seeds only")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None,
                        help="most fine-tune epochs (default: wb.train's)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--skip-speed", action="store_true",
                        help="skip the 300-image probe timing and the throughput ratio")
    args = parser.parse_args()
    args.data = args.data or DATA[args.set]
    kolektor = args.set == "kolektor"
    if not args.data.is_dir():
        sys.exit(f"no data folder {args.data} (see ../shared/data/SOURCE.md)")

    root = Path(tempfile.mkdtemp(prefix="loupe-bench-train-"))
    os.environ["FIFTYONE_DATABASE_DIR"] = str(root / "db")
    os.environ["LOUPE_HOME"] = str(root / "home")
    import workbench as wb  # after the environment points at the throwaway folders
    from workbench.train.classification.finetune import FinetuneSettings
    from workbench.train.embeddings import embed_project

    print(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} "
          f"GiB; command: {' '.join(sys.argv)}", flush=True)
    p = wb.Project.create(f"bench-train-{args.set}-{os.getpid()}")  # a database named by
    # FIFTYONE_DATABASE_URI outlives this run: a name of its own, never a user's project
    report = p.import_folder(args.data, "class_folders",
                             exclude=["annotations/*", "polygons/*"],
                             progress=False)
    print(f"imported: {report.summary()}", flush=True)
    ids, paths, truth = p.dataset.values(["id", "filepath", "ground_truth.label"])
    ids, paths, truth = np.array(ids), np.array(paths), np.array(truth)
    vectors = embed_project(p, image_size=args.image_size, progress=False).vectors

    metric = "defect AP" if kolektor else "accuracy"
    results: dict[str, list[tuple[float, float, float]]] = {"baseline": []}
    seeds = args.only_seeds or list(range(args.seeds))
    limits = {mode: int(n) for mode, n in args.seeds_of}
    for seed in seeds:
        chosen = draw_counts(truth, KOLEKTOR_SHOTS, seed) if kolektor else \
            draw(truth, args.shots, seed)
        rest = np.setdiff1d(np.arange(len(truth)), chosen)
        results["baseline"].append((baseline_score(vectors, truth, chosen, kolektor), 0.0,
                                    0.0))
        view = p.dataset.select(list(ids[chosen]))
        for mode in args.modes:
            if seed >= limits.get(mode, len(seeds) + max(seeds)):
                continue
            options = {"mode": mode, "epochs": args.epochs}
            if mode == "cached":
                options = {"mode": "auto", "epochs": 20 if args.epochs is None else args.epochs,
                           "settings": FinetuneSettings(frozen_blocks=4, fold_epochs=None,
                                                        patience=None)}
            elif mode == "previous":
                options = {"mode": "auto", "epochs": args.epochs, "settings": FinetuneSettings(
                    fold_frozen_blocks=None, fold_epochs=None)}
            start = time.perf_counter()
            with PeakMemory() as memory:
                mv = wb.train(p, folds=args.folds, image_size=args.image_size, seed=seed,
                              view=view, progress=False, **options)
                trained = time.perf_counter()
                frame = mv.predict(list(paths[rest]), progress=False)
            seconds = time.perf_counter() - start
            accuracy = score(truth[rest], frame["label"].to_numpy(),
                             frame["defect"].to_numpy() if kolektor else None)
            results.setdefault(mode, []).append((accuracy, seconds, memory.mib,
                                                 trained - start))
            extra = f" [{mv.selection['reason']}]" if mv.selection else ""
            print(f"seed {seed} {mode:>8}: {metric} {accuracy:.4f} on {len(rest)} images, "
                  f"train {trained - start:.0f} s + predict {seconds - trained + start:.0f} s, "
                  f"peak {memory.mib:.0f} MiB; kept {mv.mode}, "
                  f"{mv.metrics['evaluated_on']} {mv.metrics['accuracy']:.3f}{extra}",
                  flush=True)
        print(f"seed {seed} baseline: {metric} {results['baseline'][-1][0]:.4f}", flush=True)

    shots = "40 ok + 10 defect" if kolektor else f"{args.shots}-shot"
    print(f"\n{shots} {args.set}, seeds {seeds}, {args.image_size} px, "
          f"folds={args.folds}, epochs={args.epochs}")
    print(f"| contestant | {metric} (mean ± std) | per seed | s training | s per run "
          "(train + predict) | peak MiB |")
    print("|---|---:|---|---:|---:|---:|")
    for name, rows in results.items():
        acc = [r[0] for r in rows]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        label = {"baseline": "baseline: frozen lite0 + LogisticRegression",
                 "cached": "everything on the feature cache (frozen_blocks=4, 20 epochs)",
                 "previous": "the default before issue 29 (folds like the final model)",
                 }.get(name, f"`wb.train(mode={name!r})`")
        base = name == "baseline"
        timing = "—" if base else f"{statistics.mean(r[1] for r in rows):.0f}"
        training = "—" if base else f"{statistics.mean(r[3] for r in rows):.0f}"
        peak = "—" if base else f"{max(r[2] for r in rows):.0f}"
        seeds = " ".join(f"{a:.3f}" for a in acc)
        print(f"| {label} | {statistics.mean(acc):.4f} ± {std:.4f} | {seeds} | {training} "
              f"| {timing} | {peak} |")
    for name in ("auto", "cached"):
        if name not in results or "previous" not in results:
            continue
        paired = min(len(results[name]), len(results["previous"]))  # seeds both ran
        for column, what in ((3, "training"), (1, "train + predict")):
            mine = statistics.mean(r[column] for r in results[name][:paired])
            previous = statistics.mean(r[column] for r in results["previous"][:paired])
            print(f"{name} / previous default, {what}, first {paired} seeds: {mine:.0f} s / "
                  f"{previous:.0f} s = {mine / previous:.2f}")
    if not args.skip_speed and not kolektor:
        speed(p, ids, truth, args.image_size)
    wb.delete_project(p.name)


def speed(p, ids: np.ndarray, truth: np.ndarray, image_size: int) -> None:
    """5-fold probe on 300 images (cold and warm cache), and pipeline/raw throughput."""
    import shutil

    import workbench as wb

    sys.path.insert(0, str(Path(__file__).parent))
    import embeddings as embedding_bench  # bench/embeddings.py

    view = p.dataset.select(list(ids[draw(truth, 300, 0)]))
    shutil.rmtree(p.folder / "embeddings")
    times = []
    for _ in ("cold", "warm"):
        start = time.perf_counter()
        wb.train(p, mode="probe", folds=5, image_size=image_size, view=view, progress=False)
        times.append(time.perf_counter() - start)
    print(f"\n5-fold probe on 300 images: {times[0]:.1f} s with the embedding cache cold, "
          f"{times[1]:.1f} s warm (goal < 60 s)")
    sys.argv = [sys.argv[0], "--repeats", "1"]
    embedding_bench.main()


if __name__ == "__main__":
    main()
