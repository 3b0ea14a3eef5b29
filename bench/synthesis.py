"""Targeted synthesis for a starved class: does it lift that class's recall on real images?

Usage: ``python bench/synthesis.py [--data ../shared/data/neu_surface_defect] [--seeds 5]
[--n 60] [--image-size 224]``

Scenario (the issue's): the target class has only 5 labelled images, every other class 20.
For each seed a fresh project holds exactly those labelled images; for each method
(``none``, ``augment``, ``paste``, ``procedural`` where a painter exists) ``wb.synthesize``
adds ``--n`` images of the target, ``wb.train(mode="probe", folds=5)`` trains, and the
version's head scores every real image not drawn (their embeddings are computed once,
by the same backbone); then ``p.remove_synthetic`` restores the project for the next method.
Printed: target recall and macro F1 (mean ± std over seeds) and the lift over ``none``,
which is the baseline of the same run, on the same draws.

Two scenarios: NEU ``scratches`` (painter ``scratch`` on ``pitted_surface`` images, the
smoothest background NEU has) and the demo's ``pit_mark`` (on ``ok`` casings).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from neu import DEFAULT_DATA, machine_line, manifest, project_from_rows, throwaway_home

TARGET_SHOTS, OTHER_SHOTS = 5, 20
METHODS = ("none", "augment", "paste", "procedural")


def draw(labels: pd.Series, target: str, rng: np.random.Generator) -> np.ndarray:
    """Indices of the labelled images: 5 of the target, 20 of every other class."""
    chosen = []
    for label in sorted(labels.unique()):
        pool = np.flatnonzero(labels.to_numpy() == label)
        chosen.append(rng.choice(pool, TARGET_SHOTS if label == target else OTHER_SHOTS,
                                 replace=False))
    return np.sort(np.concatenate(chosen))


def scores(version, vectors: np.ndarray, truth: np.ndarray, target: str) -> tuple[float, float]:
    """Target recall and macro F1 of the version's probe head on real held-back images."""
    from sklearn.metrics import f1_score, recall_score

    from workbench.train.classification.probe import head_probabilities

    head = version.classifier.members[0][1]
    predicted = np.array(version.classes)[head_probabilities(head, vectors).argmax(1)]
    recall = recall_score(truth, predicted, labels=[target], average="macro", zero_division=0)
    return float(recall), float(f1_score(truth, predicted, average="macro", zero_division=0))


def scenario(name: str, rows: pd.DataFrame, target: str, base: str, painter: str | None,
             args: argparse.Namespace, source) -> None:
    import workbench as wb
    from workbench.train.embeddings import EmbeddingCache

    root = Path(wb.Project.open(source.name).folder)
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        chosen = draw(rows["label"], target, rng)
        held = np.setdiff1d(np.arange(len(rows)), chosen)
        project = project_from_rows(f"{name}-{seed}", rows.iloc[chosen], root.parent,
                                    cache_from=source)
        vectors = EmbeddingCache(project.folder / "embeddings").embed(
            list(rows["filepath"].iloc[held]), image_size=args.image_size,
            progress=False).vectors
        truth = rows["label"].to_numpy()[held]
        for method in METHODS:
            if method == "procedural" and painter is None:
                continue
            recipe = None
            if method != "none":
                recipe = wb.synthesize(project, target, n=args.n, base=base, method=method,
                                       seed=seed, painter=painter, progress=False).recipe_id
            version = wb.train(project, mode="probe", folds=5, image_size=args.image_size,
                               seed=seed, progress=False)
            results[method].append(scores(version, vectors, truth, target))
            if recipe is not None:
                project.remove_synthetic(recipe)
        wb.delete_project(project.name)
    base_recall = [r for r, _ in results["none"]]
    base_f1 = [f for _, f in results["none"]]
    print(f"\n{name}: target {target!r} ({TARGET_SHOTS} labelled) vs {OTHER_SHOTS} per other "
          f"class; {args.n} synthetic; {args.seeds} seeds; scored on "
          f"{len(rows) - len(chosen)} real images")
    print(f"  {'method':<11} {'target recall':>15} {'lift':>7} {'macro F1':>15} {'Δ F1':>7}"
          f"  seeds lifted")
    for method, values in results.items():
        if not values:
            print(f"  {method:<11} (no painter for {target!r})")
            continue
        recall = [r for r, _ in values]
        f1 = [f for _, f in values]
        lifted = sum(r > b for r, b in zip(recall, base_recall, strict=True))
        print(f"  {method:<11} {_mean_sd(recall):>15} "
              f"{100 * (statistics.mean(recall) - statistics.mean(base_recall)):+6.1f}pt "
              f"{_mean_sd(f1):>15} {statistics.mean(f1) - statistics.mean(base_f1):+7.3f}"
              f"  {lifted}/{len(values)}")


def _mean_sd(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--only", choices=("neu", "demo"), default=None)
    args = parser.parse_args()
    root = throwaway_home("loupe-bench-synthesis-")
    print(machine_line(sys.argv))
    import workbench as wb
    from workbench.demo import create_demo_project
    from workbench.train.embeddings import embed_project

    start = time.perf_counter()
    if args.only in (None, "neu"):
        rows = manifest(args.data)[["filepath", "label"]]
        neu = project_from_rows("neu-all", rows, root)
        embed_project(neu, image_size=args.image_size, progress=True)
        scenario("NEU", rows, "scratches", "pitted_surface", "scratch", args, neu)
    if args.only in (None, "demo"):
        demo = create_demo_project("demo-all", n_per_class=40, seed=11, duplicates=0,
                                   progress=False)
        embed_project(demo, image_size=args.image_size, progress=True)
        frame = demo.to_pandas()
        truth = dict(zip(*demo.dataset.values(["id", "demo_truth"]), strict=True))
        rows = pd.DataFrame({"filepath": frame["filepath"],
                             "label": frame["sample_id"].map(truth),
                             **{f: frame[f] for f in demo.slice_fields}})
        scenario("demo", rows, "pit_mark", "ok", "pit_mark", args, demo)
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    del wb


if __name__ == "__main__":
    main()
