"""Choosing what to label: does Loupe's selection reach an accuracy with fewer labels than
random choice?

Usage: ``python bench/selection.py [--data ../shared/data/neu_surface_defect] [--seeds 5]
[--image-size 128] [--held-out 600] [--round 12]``

NEU (1,800 images, six classes) is imported as one unlabelled project; its labels are hidden
and revealed (annotated by ``oracle``) only for the images a strategy chooses. A fixed,
stratified held-out split (``--held-out`` images, seed 1234) is never chosen; the rest is the
pool. For each seed and each label budget (12, 24, 48, 96, then 144, 192, 288 to find where
0.95 is reached) every strategy is scored the same way: a probe head (logistic regression,
:func:`workbench.train.classification.probe.fit_head`) on frozen ``tf_efficientnet_lite0``
embeddings at
``--image-size`` px, fitted on the chosen images, accuracy on the held-out split.

- ``random``: the first ``b`` images of a seeded permutation of the pool.
- ``loupe``: ``wb.suggest_labels(p, n=12, strategy="cover", seed=seed, view=pool)`` for the
  first 12 (TypiClust); then every round asks
  ``wb.suggest_labels(p, n=<round>, strategy="active", seed=seed, view=pool)`` without
  a model: it fits the same probe head (:func:`workbench.train.classification.probe.fit_head`) on
  the images
  labelled so far and picks a diverse batch of the most uncertain. A round is at most
  ``--round`` images (12: an inspector's sitting) up to 96 labels, the budget step after
  that. ``loupe, budget-step rounds``: the same with one round per budget step (12, 24, 48
  more, …), to show what the round size is worth. (A probe version cannot be trained
  while a class has a single label; the head needs none.) All labels are withdrawn after
  each run, so every run starts from an unlabelled project.

Embeddings are computed once (cached in the project folder) and shared by both strategies.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neu import DEFAULT_DATA, machine_line, manifest, throwaway_home

BUDGETS = (12, 24, 48, 96, 144, 192, 288)
GOAL_BUDGET, GOAL_BASE = 48, 96
TARGET = 0.95
SPLIT_SEED = 1234


def held_out_split(labels: np.ndarray, size: int) -> np.ndarray:
    """Mask of a stratified held-out split of about ``size`` images (fixed seed)."""
    rng = np.random.default_rng(SPLIT_SEED)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        mask[rng.choice(rows, round(size * len(rows) / len(labels)), replace=False)] = True
    return mask


class Scorer:
    """Accuracy on the held-out split of a probe head fitted on the chosen images."""

    def __init__(self, vectors: dict[str, np.ndarray], truth: dict[str, str],
                 held: list[str], classes: list[str]) -> None:
        self.vectors, self.truth, self.classes = vectors, truth, classes
        self.x_held = np.stack([vectors[s] for s in held])
        self.y_held = np.array([classes.index(truth[s]) for s in held])

    def __call__(self, chosen: list[str]) -> float:
        from workbench.train.classification.probe import fit_head, head_probabilities

        x = np.stack([self.vectors[s] for s in chosen])
        y = np.array([self.classes.index(self.truth[s]) for s in chosen])
        head = fit_head(x, y, len(self.classes))
        return float((head_probabilities(head, self.x_held).argmax(1) == self.y_held).mean())


def reveal(project, sample_ids: list[str], truth: dict[str, str]) -> None:
    """Annotate the chosen images with their hidden labels (the oracle labels them)."""
    by_label: dict[str, list[str]] = {}
    for sid in sample_ids:
        by_label.setdefault(truth[sid], []).append(sid)
    for label, ids in by_label.items():
        project.annotate(ids, label, annotator="oracle")


def loupe_run(project, pool_view, truth: dict[str, str], score: Scorer, seed: int,
              image_size: int, round_size: int, counters: dict[str, int]) -> list[float]:
    from workbench.improve.selection import suggest_labels

    chosen: list[str] = []
    accuracy = []
    for budget in BUDGETS:
        while len(chosen) < budget:
            step = budget - len(chosen)
            if chosen and round_size and budget <= GOAL_BASE:
                step = min(step, round_size)
            if not chosen:
                pick = suggest_labels(project, n=step, strategy="cover", seed=seed,
                                      view=pool_view, image_size=image_size)
            else:  # no model: suggest_labels fits a probe head on the labels so far
                pick = suggest_labels(project, n=step, strategy="active", seed=seed,
                                      view=pool_view, image_size=image_size)
                counters["active"] += 1
            counters["skipped"] += len(pick.skipped)
            if not pick.sample_ids:
                raise SystemExit(f"seed {seed}: no suggestion at {len(chosen)} labels")
            reveal(project, pick.sample_ids, truth)
            chosen += pick.sample_ids
        accuracy.append(score(chosen))
    project.withdraw(chosen, annotator="oracle")
    return accuracy


def random_run(pool: list[str], score: Scorer, seed: int) -> list[float]:
    order = list(np.random.default_rng(seed).permutation(pool))
    return [score(order[:budget]) for budget in BUDGETS]


def _mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def _reach(curve: list[float]) -> str:
    for budget, value in zip(BUDGETS, curve, strict=True):
        if value >= TARGET:
            return f"{budget} labels"
    return f"not reached by {BUDGETS[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--held-out", type=int, default=600)
    parser.add_argument("--round", type=int, default=12,
                        help="most images per active round up to 96 labels (0: a budget step)")
    parser.add_argument("--embeddings-from", type=Path, default=None,
                        help="copy this embedding cache folder in first (saves re-embedding)")
    args = parser.parse_args()
    root = throwaway_home("loupe-bench-selection-")
    print(machine_line(sys.argv))
    import workbench as wb
    from workbench.train.embeddings import embed_project

    start = time.perf_counter()
    rows = manifest(args.data)[["filepath", "label"]]
    csv = root / "unlabelled.csv"
    rows.assign(label="").to_csv(csv, index=False)
    project = wb.Project.create("neu-selection", classes=sorted(rows["label"].unique()),
                                overwrite=True)
    if args.embeddings_from is not None:  # a cache of an earlier run (content-addressed)
        shutil.copytree(args.embeddings_from, project.folder / "embeddings",
                        dirs_exist_ok=True)
    project.import_csv(csv, progress=False)
    ids, paths = project.dataset.values(["id", "filepath"])
    hidden = dict(zip(rows["filepath"], rows["label"], strict=True))
    source = dict(zip(*project.dataset.values(["id", "source_path"]), strict=True))
    truth = {sid: hidden[source[sid] or path] for sid, path in zip(ids, paths, strict=True)}
    classes = sorted(set(truth.values()))
    embedded = embed_project(project, image_size=args.image_size, progress=False)
    vectors = dict(zip(embedded.sample_ids, embedded.vectors, strict=True))
    print(f"{len(ids)} images, {len(classes)} classes; embedded at {args.image_size} px in "
          f"{time.perf_counter() - start:.0f} s ({embedded.n_computed} computed, the rest "
          "from the cache)")
    held_mask = held_out_split(np.array([truth[s] for s in ids]), args.held_out)
    held = [s for s, h in zip(ids, held_mask, strict=True) if h]
    pool = [s for s, h in zip(ids, held_mask, strict=True) if not h]
    pool_view = project.dataset.select(pool)
    score = Scorer(vectors, truth, held, classes)
    print(f"held-out split {len(held)} images (stratified, seed {SPLIT_SEED}); pool {len(pool)}")

    step_rounds = "loupe, budget-step rounds"
    results: dict[str, list[list[float]]] = {"random": [], "loupe": []}
    if args.round:
        results[step_rounds] = []
    counters = {"active": 0, "skipped": 0}
    for seed in range(args.seeds):
        began = time.perf_counter()
        results["random"].append(random_run(pool, score, seed))
        results["loupe"].append(loupe_run(project, pool_view, truth, score, seed,
                                          args.image_size, args.round, counters))
        if args.round:
            results[step_rounds].append(loupe_run(project, pool_view, truth, score, seed,
                                                  args.image_size, 0, counters))
        print(f"  seed {seed} ({time.perf_counter() - began:.0f} s):")
        for name, runs in results.items():
            print(f"    {name:26s} {' '.join(f'{a:.3f}' for a in runs[-1])}")

    print(f"\nNEU: held-out accuracy (probe on frozen embeddings, {args.image_size} px) after "
          f"labelling b images; mean ± sd over {args.seeds} seeds; loupe's active rounds "
          f"{'of at most ' + str(args.round) + ' images' if args.round else 'of a budget step'}")
    names = list(results)
    print(f"  {'labels':>6} " + " ".join(f"{name:>26s}" for name in names)
          + f" {'Δ loupe - random':>17}")
    means = {name: [statistics.mean(col) for col in zip(*runs, strict=True)]
             for name, runs in results.items()}
    for i, budget in enumerate(BUDGETS):
        cells = [_mean_sd([run[i] for run in results[name]]) for name in names]
        print(f"  {budget:>6} " + " ".join(f"{cell:>26s}" for cell in cells)
              + f" {means['loupe'][i] - means['random'][i]:+17.3f}")
    print(f"\nlabels needed to reach {TARGET:.2f} (mean over seeds): "
          + ", ".join(f"{name} {_reach(means[name])}" for name in names))
    goal = means["random"][BUDGETS.index(GOAL_BASE)]
    fewest = next((b for b, v in zip(BUDGETS, means["loupe"], strict=True) if v >= goal), None)
    reached = means["loupe"][BUDGETS.index(GOAL_BUDGET)]
    print(f"goal: loupe reaches random's {GOAL_BASE}-label accuracy ({goal:.3f}) with <= "
          f"{GOAL_BUDGET} labels: {'MET' if reached >= goal else 'NOT MET'} (loupe at "
          f"{GOAL_BUDGET}: {reached:.3f}; first reached at "
          f"{fewest if fewest is not None else 'none'} labels)")
    print(f"loupe rounds: {args.seeds} cover starts, {counters['active']} active rounds "
          f"(at most {args.round or 'one budget step of'} images each up to {GOAL_BASE}); "
          f"{counters['skipped']} candidates reported as near-duplicates or junk")
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
