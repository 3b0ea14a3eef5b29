"""Finding wrong labels on NEU: wb.label_issues against cleanlab's and FiftyOne's defaults.

Usage: ``python bench/label_issues.py [--data ../shared/data/neu_surface_defect]
[--seeds 5] [--noise 0.05 0.1 0.2] [--per-class 50] [--skip-annotators]``

For each noise level and seed: draw ``--per-class`` images per class (300 in all), flip that
share of their labels to another class at random, import them as a project, train
``wb.train(p, mode="probe", folds=5)`` and rank with ``wb.label_issues(p, mv)``. In the same
run and on the same noisy labels, two baselines:

(a) ``cleanlab.filter.find_label_issues`` on 5-fold out-of-fold probabilities of frozen
    ``tf_efficientnet_lite0`` embeddings + scikit-learn ``LogisticRegression`` (defaults);
(b) FiftyOne Brain's ``compute_mistakenness`` on the same probabilities, flagging
    mistakenness > 0.5 (its boundary: the prediction disagrees with the label).

Printed: precision, recall and F1 of the flagged set against the flipped set (mean ± std
over seeds), and precision at k = the number of flips (the ranking alone, no threshold).
Then three simulated annotators (careful; 5 % random slips; one who calls half of
``crazing`` ``rolled-in_scale`` and back): consensus accuracy of CROWDLAB (``wb.agreement``
with the version) against majority vote, and where the bad annotator ranks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import neu

CONFUSED = ("crazing", "rolled-in_scale")


def baseline_probabilities(vectors: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """5-fold out-of-fold probabilities of a default LogisticRegression on the embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LogisticRegression's default max_iter=100
        return cross_val_predict(LogisticRegression(), vectors, labels, cv=folds,
                                 method="predict_proba")


def mistakenness_flags(project, probs: np.ndarray, classes: list[str],
                       ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """FiftyOne Brain's mistakenness of each sample (flag > 0.5, and the score itself)."""
    import fiftyone.brain as fob

    from workbench.store import _db as store

    store.set_predictions(project.dataset, "baseline", {
        sid: {"label": classes[int(row.argmax())], "confidence": float(row.max()),
              "probabilities": row.tolist(), "fold": 0}
        for sid, row in zip(ids, probs, strict=True)}, classes)
    fob.compute_mistakenness(project.dataset, "baseline", label_field="ground_truth",
                             mistakenness_field="mistakenness", progress=False)
    by_id = dict(zip(*project.dataset.values(["id", "mistakenness"]), strict=True))
    score = np.array([by_id[s] for s in ids])
    return score > 0.5, score


def precision_at_k(order: np.ndarray, truth: np.ndarray) -> float:
    """Share of true issues among the first k of a ranking, k = number of true issues."""
    k = int(truth.sum())
    return float(truth[order[:k]].mean()) if k else 0.0


def noise_run(table, master, vectors_all, noise: float, seed: int, folder: Path) -> dict:
    from cleanlab.filter import find_label_issues

    import workbench as wb

    rng = np.random.default_rng([seed, int(noise * 1000)])
    truth_all = table["label"].to_numpy()
    chosen = neu.draw(truth_all, ARGS.per_class, rng)
    truth = truth_all[chosen]
    noisy, flipped = neu.flip_labels(truth, noise, rng)
    rows = pd.DataFrame({"filepath": table["filepath"].to_numpy()[chosen], "label": noisy})
    p = neu.project_from_rows(f"noisy-{int(noise * 100)}-{seed}", rows, folder,
                              cache_from=master)
    by_path = dict(zip(*p.dataset.values(["filepath", "id"]), strict=True))
    ids = [by_path[f] for f in rows["filepath"]]
    result = {}

    start = time.perf_counter()
    mv = wb.train(p, mode="probe", folds=5, seed=seed, progress=False)
    issues = wb.label_issues(p, mv).set_index("sample_id").loc[ids]
    seconds = time.perf_counter() - start
    result["loupe"] = (issues["is_issue"].to_numpy(),
                       np.argsort(issues["label_quality"].to_numpy(), kind="stable"), seconds)

    classes = sorted(set(truth))
    coded = np.array([classes.index(c) for c in noisy])
    start = time.perf_counter()
    probs = baseline_probabilities(vectors_all[chosen], coded, seed)
    flags = find_label_issues(coded, probs)
    ranked = np.argsort(probs[np.arange(len(coded)), coded], kind="stable")
    result["cleanlab"] = (flags, ranked, time.perf_counter() - start)
    start = time.perf_counter()
    flags, score = mistakenness_flags(p, probs, classes, ids)
    result["mistakenness"] = (flags, np.argsort(-score, kind="stable"),
                              time.perf_counter() - start)
    wb.delete_project(p.name)
    return {name: (*neu.precision_recall_f1(f, flipped), precision_at_k(order, flipped), s)
            for name, (f, order, s) in result.items()}


def annotator_run(table, master, seed: int, folder: Path) -> dict:
    """Three simulated annotators on 300 images; CROWDLAB consensus vs majority vote."""
    import workbench as wb

    rng = np.random.default_rng([seed, 99])
    truth_all = table["label"].to_numpy()
    chosen = neu.draw(truth_all, ARGS.per_class, rng)
    truth = truth_all[chosen]
    classes = np.unique(truth)
    given = {"careful": truth.copy(), "slips": truth.copy(), "confuser": truth.copy()}
    slips = rng.random(len(truth)) < 0.05
    given["slips"][slips] = [rng.choice(classes[classes != t]) for t in truth[slips]]
    swap = np.isin(truth, CONFUSED) & (rng.random(len(truth)) < 0.5)
    given["confuser"][swap] = [CONFUSED[1 - CONFUSED.index(t)] for t in truth[swap]]
    paths = table["filepath"].to_numpy()[chosen]
    rows = pd.concat([pd.DataFrame({"filepath": paths, "label": labels, "annotator": who})
                      for who, labels in given.items()])
    p = neu.project_from_rows(f"annotators-{seed}", rows, folder, cache_from=master)
    truth_by_path = dict(zip(paths, truth, strict=True))
    ids, filepaths, majority = p.dataset.values(["id", "filepath", "ground_truth.label"])
    true_of = {sid: truth_by_path[f] for sid, f in zip(ids, filepaths, strict=True)}
    majority_accuracy = float(np.mean([m == true_of[s] for s, m in zip(ids, majority,
                                                                       strict=True)]))
    mv = wb.train(p, mode="probe", folds=5, seed=seed, progress=False)
    report = wb.agreement(p, mv)
    crowdlab = report.samples.set_index("sample_id")["consensus"]
    crowdlab_accuracy = float(np.mean([crowdlab[s] == true_of[s] for s in ids]))
    order = list(report.annotators["annotator"])
    votes_order = list(wb.agreement(p, write=False).annotators["annotator"])
    wb.delete_project(p.name)
    return {"majority": majority_accuracy, "crowdlab": crowdlab_accuracy,
            "last": order[-1], "last_without_model": votes_order[-1],
            "quality": dict(zip(report.annotators["annotator"], report.annotators["quality"],
                                strict=True))}


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=neu.DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--skip-annotators", action="store_true")
    ARGS = parser.parse_args()
    if not ARGS.data.is_dir():
        sys.exit(f"no data folder {ARGS.data} (see its SOURCE.md)")
    root = neu.throwaway_home("loupe-bench-issues-")
    import workbench as wb
    from workbench.train.embeddings import embed_project

    print(neu.machine_line(sys.argv), flush=True)
    table = neu.manifest(ARGS.data)
    start = time.perf_counter()
    master = neu.project_from_rows("neu-all", table[["filepath", "label"]], root)
    vectors = embed_project(master, progress=False).vectors
    embed_project(master, progress=False, flip=True)
    by_path = dict(zip(master.dataset.values("filepath"), range(len(master)), strict=True))
    vectors = vectors[[by_path[f] for f in table["filepath"]]]
    print(f"imported and embedded {len(master)} images (and their mirrors) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)

    for noise in ARGS.noise:
        runs = [noise_run(table, master, vectors, noise, seed, root) for seed in
                range(ARGS.seeds)]
        print(f"\nnoise {noise:.0%}: {ARGS.per_class} images per class, "
              f"{round(noise * ARGS.per_class * 6)} flipped, {ARGS.seeds} seeds")
        print("| method | precision | recall | F1 | precision at k | s per run |")
        print("|---|---:|---:|---:|---:|---:|")
        names = {"loupe": "`wb.label_issues` (probe v1, 5 folds)",
                 "cleanlab": "(a) cleanlab `find_label_issues`, LR probs",
                 "mistakenness": "(b) FiftyOne `compute_mistakenness` > 0.5"}
        for key, label in names.items():
            cells = []
            for i in range(4):
                values = [run[key][i] for run in runs]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
            seconds = statistics.mean(run[key][4] for run in runs)
            print(f"| {label} | {' | '.join(cells)} | {seconds:.1f} |", flush=True)
        wins = sum(run["loupe"][2] > max(run["cleanlab"][2], run["mistakenness"][2])
                   for run in runs)
        print(f"Loupe's F1 ahead of both baselines in {wins} of {len(runs)} seeds", flush=True)

    if not ARGS.skip_annotators:
        runs = [annotator_run(table, master, seed, root) for seed in range(ARGS.seeds)]
        print(f"\nthree annotators on {ARGS.per_class * 6} images, {ARGS.seeds} seeds "
              f"(careful; 5 % slips; 'confuser' swaps {CONFUSED[0]} ↔ {CONFUSED[1]} half the "
              "time)")
        for key in ("majority", "crowdlab"):
            values = [run[key] for run in runs]
            print(f"consensus accuracy, {key:>8}: {statistics.mean(values):.4f} ± "
                  f"{statistics.stdev(values) if len(values) > 1 else 0.0:.4f}")
        print("annotator ranked last (CROWDLAB / votes only): " + ", ".join(
            f"{run['last']}/{run['last_without_model']}" for run in runs))
        print("mean quality: " + ", ".join(
            f"{who} {statistics.mean(run['quality'][who] for run in runs):.3f}"
            for who in ("careful", "slips", "confuser")))
    wb.delete_project(master.name)


ARGS: argparse.Namespace
if __name__ == "__main__":
    main()
