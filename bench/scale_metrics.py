"""Scale: the pure analyses of ``workbench.metrics`` on 1,000 to 100,000 embeddings (issue 28).

Usage: ``python bench/scale_metrics.py [--sizes 1000 10000 100000] [--steps duplicates map]
[--baseline-max 10000] [--timeout 300]``

Generates clustered synthetic embeddings like efficientnet-lite0's (1,280-d float32, L2
normalised): 6 Gaussian clusters, each spread along 24 directions of decaying size plus a
little isotropic noise (nearest-neighbour cosine distance ~0.06, within-cluster ~0.25,
between clusters ~0.6, PCA-128 keeps ~97 % of the variance; measured on 1,000 real
efficientnet-lite0 embeddings: 0.05, 0.38 and 96 %), plus 20 planted near-duplicate pairs
(cosine distance ~0.002), 20 off-cluster outliers and 5 % flipped labels. Then times each step
at each size, every step in its own child process (so peak memory is the step's own), and
beside it a baseline in the same run:

==============  ==============================================  ==========================
step            ours                                            baseline
==============  ==============================================  ==========================
duplicates      ``find_duplicates``                             sklearn ``NearestNeighbors``
                                                                brute ``radius_neighbors``
outliers        ``outlier_scores`` (k=10)                        sklearn brute kNN
junk            ``junk_outliers``                               sklearn brute kNN
typicality      ``typicality`` (k=20)                           sklearn brute kNN
k_center        ``k_center_greedy`` (50 picks, 1 % labelled)    plain NumPy greedy k-center
greedy_score    ``greedy_by_score`` (50 picks, 1 % labelled)    plain NumPy greedy k-center
cover           the core of ``suggest_labels(strategy="cover")``  sklearn KMeans + brute kNN
                (``junk_outliers`` + ``typical_clusters``, 50)    (TypiClust by hand)
diverse_top     ``diverse_top`` (50 picks)                      (none)
probe           ``probe_probabilities`` (5 folds, 6 classes)    sklearn ``LogisticRegression``
knn_probs       ``knn_probabilities`` (5 folds)                 sklearn brute kNN per fold
rank_issues     ``rank_label_issues`` (probe + kNN estimates)    cleanlab ``find_label_issues``
linear_head     ``fit_softmax_head``                            sklearn ``LogisticRegression``
map             ``project_2d`` (cosine)                         sklearn ``TSNE`` / ``PCA``
drift           ``combined_test`` + ``knn_ood_scores`` against   sklearn brute kNN
                a 10,000-image reference, a batch of 500
==============  ==============================================  ==========================

Baselines quadratic in n (brute kNN, exact t-SNE-style fits, logistic regression over all
folds) run only up to ``--baseline-max`` (default 10,000); the output says so. Printed per
step and size: wall seconds, CPU seconds (both cores together), peak resident memory of the
child process (the data included) and its rise during the step, and a check (planted copies
found, planted outliers ranked first, flipped labels flagged). At the end, the growth exponent
``log(t_100k / t_10k) / log 10`` of each step and baseline (1 = linear; n log n from 10k to
100k is about 1.1). A step that runs past ``--timeout`` or past ``--memory-cap`` is stopped
and shown as ``>``.

Goals (issue 28, on the 2-core machine): duplicates, cover and label issues < 60 s and the
map < 120 s at 100,000; peak memory well under 6 GB; no growth exponent above ~1.2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIMS = 1280
CLUSTERS = 6
RANK = 24
PLANTED_PAIRS = 20
PLANTED_OUTLIERS = 20
FLIPPED = 0.05
PICKS = 50
LABELLED = 0.01
REFERENCE = 10_000
DRIFT_BATCH = 500
STEPS = ("duplicates", "outliers", "junk", "typicality", "k_center", "greedy_score", "cover",
         "diverse_top", "probe", "knn_probs", "rank_issues", "linear_head", "map", "drift")


# -- data --------------------------------------------------------------------------------------
def clustered(n: int, seed: int, dims: int = DIMS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit float32 vectors in :data:`CLUSTERS` low-rank Gaussian clusters, and the
    cluster of each."""
    rng = np.random.default_rng(1000)  # the same clusters for every n and the reference
    common = rng.normal(size=dims)
    common /= np.linalg.norm(common)
    centres = rng.normal(size=(CLUSTERS, dims))
    centres = centres / np.linalg.norm(centres, axis=1, keepdims=True) + common
    scales = 0.45 / np.sqrt(np.arange(1, RANK + 1))
    bases = [rng.normal(size=(RANK, dims)).astype(np.float32) / np.sqrt(dims)
             for _ in range(CLUSTERS)]
    draw = np.random.default_rng(seed)
    truth = draw.integers(CLUSTERS, size=n)
    out = np.empty((n, dims), np.float32)
    for c, basis in enumerate(bases):
        rows = np.flatnonzero(truth == c)
        spread = (draw.normal(size=(len(rows), RANK)) * scales).astype(np.float32)
        noise = draw.normal(scale=0.12 / np.sqrt(dims), size=(len(rows), dims))
        out[rows] = centres[c] + spread @ basis + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, truth


def make_data(n: int, folder: Path) -> Path:
    """Vectors with planted copies, outliers and flipped labels, saved under ``folder``."""
    path = folder / f"data-{n}.npz"
    if path.is_file():
        return path
    rng = np.random.default_rng(7)
    vectors, truth = clustered(n, seed=n)
    originals = rng.choice(n // 2, PLANTED_PAIRS, replace=False)
    copies = n // 2 + rng.choice(n - n // 2 - PLANTED_OUTLIERS, PLANTED_PAIRS, replace=False)
    nudge = rng.normal(size=(PLANTED_PAIRS, vectors.shape[1]))
    nudge *= 0.06 / np.linalg.norm(nudge, axis=1, keepdims=True)  # distance ~ 0.06² / 2
    vectors[copies] = vectors[originals] + nudge
    truth[copies] = truth[originals]
    outliers = np.arange(n - PLANTED_OUTLIERS, n)
    vectors[outliers] = rng.normal(size=(PLANTED_OUTLIERS, vectors.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    given = truth.copy()
    flipped = rng.choice(n - PLANTED_OUTLIERS, int(FLIPPED * n), replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, CLUSTERS, len(flipped))) % CLUSTERS
    labelled = np.zeros(n, dtype=bool)
    labelled[rng.choice(n, max(2, int(LABELLED * n)), replace=False)] = True
    reference, _ = clustered(REFERENCE, seed=12345)
    np.savez(path, vectors=vectors.astype(np.float32), truth=truth, given=given,
             originals=originals, copies=copies, outliers=outliers, flipped=flipped,
             folds=rng.permutation(np.arange(n) % 5), labelled=labelled,
             scores=rng.random(n), reference=reference)
    return path


# -- steps (run in the child) --------------------------------------------------------------------
def planted_pairs_found(data: dict, i: np.ndarray, j: np.ndarray) -> str:
    pairs = {frozenset(p) for p in zip(i.tolist(), j.tolist(), strict=True)}
    found = sum(frozenset(p) in pairs for p in zip(data["originals"].tolist(),
                                                    data["copies"].tolist(), strict=True))
    return f"{found}/{PLANTED_PAIRS} planted copies, {len(pairs)} pairs"


def outliers_first(data: dict, order: np.ndarray) -> str:
    top = set(order[:2 * PLANTED_OUTLIERS].tolist())
    return f"{len(top & set(data['outliers'].tolist()))}/{PLANTED_OUTLIERS} planted outliers " \
           f"in the top {2 * PLANTED_OUTLIERS}"


def brute_knn(queries: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(reference)
    return nn.kneighbors(queries, return_distance=True)[0]


def numpy_k_center(vectors: np.ndarray, centres: np.ndarray, picks: int) -> list[int]:
    dist = np.full(len(vectors), np.inf)
    for start in range(0, int(centres.sum()), 2048):
        block = vectors[np.flatnonzero(centres)[start:start + 2048]]
        dist = np.minimum(dist, 1.0 - (vectors @ block.T).max(axis=1))
    dist[centres] = -np.inf
    chosen = []
    for _ in range(picks):
        row = int(np.argmax(dist))
        chosen.append(row)
        dist = np.minimum(dist, 1.0 - vectors @ vectors[row])
        dist[row] = -np.inf
    return chosen


def run_step(step: str, data: dict, baseline: bool) -> str:
    from workbench.metrics import (
        coverage,
        drift_tests,
        duplicates,
        label_issues,
        linear_head,
        outliers,
        projection,
    )

    x, n = data["vectors"], len(data["vectors"])
    ids = [f"s{i}" for i in range(n)]
    if step == "duplicates":
        if baseline:
            from sklearn.neighbors import NearestNeighbors

            nn = NearestNeighbors(radius=0.05, algorithm="brute", metric="cosine").fit(x)
            found = nn.radius_neighbors(x, return_distance=False)
            i = np.repeat(np.arange(n), [len(f) for f in found])
            j = np.concatenate(found)
            return planted_pairs_found(data, i[i != j], j[i != j])
        pairs = duplicates.find_duplicates(ids, x)
        i = pairs["sample_id"].str[1:].astype(int).to_numpy()
        j = pairs["other_id"].str[1:].astype(int).to_numpy()
        return planted_pairs_found(data, i, j) + f", threshold {pairs.attrs['threshold']:.4f}"
    if step in ("outliers", "junk", "typicality"):
        k = {"outliers": 10, "junk": 3, "typicality": 20}[step]
        if baseline:
            score = brute_knn(x, x, k + 1)[:, 1:].mean(axis=1)
        elif step == "outliers":
            score = outliers.outlier_scores(ids, x, k=k).sort_values("sample_id", key=lambda s:
                                                                     s.str[1:].astype(int))[
                "ood_score"].to_numpy()
        elif step == "junk":
            junk = outliers.junk_outliers(x)
            flagged = set(np.flatnonzero(junk["is_junk"]).tolist())
            return f"{len(flagged & set(data['outliers'].tolist()))}/{PLANTED_OUTLIERS} " \
                   f"planted outliers flagged junk, {len(flagged)} flagged"
        else:
            score = -coverage.typicality(x)
        return outliers_first(data, np.argsort(-score, kind="stable"))
    if step in ("k_center", "greedy_score"):
        if baseline:
            chosen = numpy_k_center(x, data["labelled"], PICKS)
        elif step == "k_center":
            frame = coverage.k_center_greedy(x, PICKS, centres_mask=data["labelled"])
            chosen = frame.loc[frame["status"] == "picked", "row"].tolist()
        else:
            frame = coverage.greedy_by_score(x, data["scores"], PICKS,
                                             centres_mask=data["labelled"])
            chosen = frame.loc[frame["status"] == "picked", "row"].tolist()
        return f"{len(chosen)} picks, {len(set(chosen) & set(data['outliers'].tolist()))} " \
               "planted outliers among them"
    if step == "cover":
        if baseline:
            from sklearn.cluster import KMeans

            k = min(int(data["labelled"].sum()) + PICKS, n)
            cells = KMeans(k, n_init=1, random_state=0).fit_predict(x)
            covered = np.bincount(cells[data["labelled"]], minlength=k)
            chosen = []
            for cell in np.argsort(covered, kind="stable")[:PICKS]:
                rows = np.flatnonzero(cells == cell)
                if len(rows) > 1:
                    typ = brute_knn(x[rows], x[rows], min(21, len(rows)))[:, 1:].mean(axis=1)
                    chosen.append(int(rows[np.argmin(typ)]))
            return f"{len(chosen)} picks (TypiClust by hand)"
        junk = outliers.junk_outliers(x)
        allowed = ~junk["is_junk"].to_numpy() & ~data["labelled"]
        frame = coverage.typical_clusters(x, PICKS, centres_mask=data["labelled"],
                                          candidates_mask=allowed, seed=0)
        chosen = frame.loc[frame["status"] == "picked"]
        return f"{len(chosen)} picks from groups of median size " \
               f"{int(chosen['cluster_size'].median())}, {int(junk['is_junk'].sum())} junk"
    if step == "diverse_top":
        frame = coverage.diverse_top(x, data["scores"], PICKS, centres_mask=data["labelled"])
        return f"{int((frame['status'] == 'picked').sum())} picks"
    if step in ("probe", "knn_probs", "rank_issues"):
        given, folds = data["given"], data["folds"]
        if baseline and step == "probe":
            from sklearn.linear_model import LogisticRegression

            probs = np.zeros((n, CLUSTERS))
            for fold in range(5):
                held = folds == fold
                model = LogisticRegression(max_iter=2000).fit(x[~held], given[~held])
                probs[held] = model.predict_proba(x[held])
        elif baseline and step == "knn_probs":
            for fold in range(5):
                brute_knn(x[folds == fold], x[folds != fold], 10)
            return "brute kNN per fold"
        elif baseline:
            from cleanlab.filter import find_label_issues

            probs = np.eye(CLUSTERS)[data["truth"]] * 0.8 + 0.2 / CLUSTERS
            issues = np.flatnonzero(find_label_issues(given, probs,
                                                      filter_by="prune_by_noise_rate"))
            return f"{len(set(issues.tolist()) & set(data['flipped'].tolist()))}/" \
                   f"{len(data['flipped'])} flips flagged (probabilities from the truth)"
        elif step == "probe":
            probs = label_issues.probe_probabilities(x, given, folds=folds, n_classes=CLUSTERS)
        elif step == "knn_probs":
            probs = label_issues.knn_probabilities(x, given, folds=folds, n_classes=CLUSTERS)
        else:
            start = time.perf_counter()
            estimates = [label_issues.probe_probabilities(x, given, folds=folds,
                                                          n_classes=CLUSTERS),
                         label_issues.knn_probabilities(x, given, folds=folds,
                                                        n_classes=CLUSTERS)]
            middle = time.perf_counter()
            classes = [f"c{c}" for c in range(CLUSTERS)]
            frame = label_issues.rank_label_issues(ids, [classes[g] for g in given], estimates,
                                                   classes=classes)
            flagged = {int(s[1:]) for s in frame.loc[frame["is_issue"], "sample_id"]}
            return f"{len(flagged & set(data['flipped'].tolist()))}/{len(data['flipped'])} " \
                   f"flips flagged, {len(flagged)} flagged; estimates " \
                   f"{middle - start:.1f} s + ranking {time.perf_counter() - middle:.1f} s"
        accuracy = float((probs.argmax(axis=1) == data["truth"]).mean())
        return f"out-of-fold accuracy against the true labels {accuracy:.3f}"
    if step == "linear_head":
        if baseline:
            from sklearn.linear_model import LogisticRegression

            LogisticRegression(max_iter=3000).fit(x, data["given"])
            return "sklearn fit"
        weight, bias = linear_head.fit_softmax_head(x, data["given"], CLUSTERS)
        probs = linear_head.softmax_probabilities(weight, bias, x)
        return f"training accuracy against the true labels " \
               f"{float((probs.argmax(axis=1) == data['truth']).mean()):.3f}"
    if step == "map":
        if baseline == "pca":
            from sklearn.decomposition import PCA

            xy = PCA(2, random_state=0).fit_transform(x)
        elif baseline:
            from sklearn.decomposition import PCA
            from sklearn.manifold import TSNE

            xy = TSNE(2, init="pca", learning_rate="auto", random_state=0).fit_transform(
                PCA(50, random_state=0).fit_transform(x))
        else:
            xy = projection.project_2d(x, metric="cosine")
        return map_quality(xy, data["truth"])
    if step == "drift":
        import pandas as pd

        ref = data["reference"]
        if baseline:
            brute_knn(x[-DRIFT_BATCH:], ref, 5)
            brute_knn(ref, ref, 6)
            return "brute kNN of the batch and the reference"
        rng = np.random.default_rng(0)
        batch = x[-DRIFT_BATCH:]  # the planted outliers are the last rows
        props = {name: pd.DataFrame(rng.normal(size=(rows, len(drift_tests.PROPERTIES))),
                                    columns=list(drift_tests.PROPERTIES))
                 for name, rows in (("ref", len(ref)), ("batch", len(batch)))}
        tests = drift_tests.combined_test(ref, batch, props["ref"], props["batch"])
        scores, threshold = drift_tests.knn_ood_scores(ref, batch)
        planted = float((scores[-PLANTED_OUTLIERS:] > threshold).mean())
        return f"p = {tests.attrs['p_value']:.3g}; {planted:.0%} of planted outliers out of " \
               "distribution"
    raise ValueError(f"unknown step {step!r}")


def map_quality(xy: np.ndarray, truth: np.ndarray) -> str:
    """Share of points whose 2-D nearest neighbour is in their own cluster (on <= 5,000)."""
    rows = np.random.default_rng(0).choice(len(xy), min(len(xy), 5000), replace=False)
    pts = xy[rows]
    dist = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    same = float((truth[rows][dist.argmin(axis=1)] == truth[rows]).mean())
    return f"{xy.shape[0]} points, 2-D nearest neighbour in the same cluster {same:.1%}"


def child(step: str, path: str, baseline: str) -> None:
    import psutil

    with np.load(path) as saved:
        data = {key: saved[key] for key in saved.files}
    import workbench.metrics  # noqa: F401  (imports outside the timing)

    before = psutil.Process().memory_info().rss
    wall, cpu = time.perf_counter(), time.process_time()
    check = run_step(step, data, baseline if baseline != "none" else False)
    print("RESULT " + json.dumps({"wall": time.perf_counter() - wall,
                                  "cpu": time.process_time() - cpu, "rss_before": before,
                                  "check": check}), flush=True)


# -- parent ------------------------------------------------------------------------------------
def measure(step: str, path: Path, baseline: str, timeout: float, cap: float) -> dict:
    """Run one step in a child, sampling its resident memory; stop it past the limits."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--child", step, str(path), baseline],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watch, peak, started, stopped = psutil.Process(proc.pid), 0, time.perf_counter(), ""
    while proc.poll() is None:
        try:
            peak = max(peak, watch.memory_info().rss)
        except psutil.Error:
            break
        if time.perf_counter() - started > timeout + 30:  # imports and loading
            stopped = f">{timeout:.0f} s"
        elif peak > cap:
            stopped = f">{cap / 2**30:.0f} GiB"
        if stopped:
            proc.kill()
            break
        time.sleep(0.05)
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if stopped or not lines:
        return {"stopped": stopped or f"failed: {err.strip().splitlines()[-1:]}",
                "peak": peak}
    result = json.loads(lines[-1][len("RESULT "):])
    if result["wall"] > timeout:
        result["stopped"] = f">{timeout:.0f} s"
    result["peak"] = peak
    return result


def shown(result: dict | None) -> str:
    if result is None:
        return "(not run)"
    if "stopped" in result:
        return f"{result['stopped']:>9} (stopped; peak {result['peak'] / 2**20:,.0f} MB)"
    rise = (result["peak"] - result["rss_before"]) / 2**20
    return (f"{result['wall']:7.1f} s wall {result['cpu']:7.1f} s cpu  peak "
            f"{result['peak'] / 2**20:6,.0f} MB (+{rise:,.0f})")


BASELINES = {"duplicates": "sklearn brute radius_neighbors", "outliers": "sklearn brute kNN",
             "junk": "sklearn brute kNN", "typicality": "sklearn brute kNN",
             "k_center": "plain NumPy greedy", "greedy_score": "plain NumPy greedy",
             "cover": "sklearn KMeans + brute kNN", "probe": "sklearn LogisticRegression",
             "knn_probs": "sklearn brute kNN per fold", "rank_issues": "cleanlab alone",
             "linear_head": "sklearn LogisticRegression", "map": "sklearn TSNE",
             "drift": "sklearn brute kNN"}
#: Baselines cheap enough to run at every size.
LINEAR_BASELINES = {"k_center", "greedy_score", "rank_issues"}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        child(*argv[1:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--baseline-max", type=int, default=10_000,
                        help="largest n at which quadratic baselines run")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per step")
    parser.add_argument("--memory-cap", type=float, default=12, help="GiB per step")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder for the generated data (default: a temporary folder)")
    args = parser.parse_args(argv)
    import psutil

    folder = args.data or Path(tempfile.mkdtemp(prefix="loupe-scale-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} "
          f"GiB, load average {os.getloadavg()[0]:.1f}; command: {' '.join(sys.argv)}")
    print(f"data: {DIMS}-d float32, {CLUSTERS} clusters, {PLANTED_PAIRS} planted copy pairs, "
          f"{PLANTED_OUTLIERS} outliers, {FLIPPED:.0%} flipped labels; folder {folder}")
    table: dict[tuple[str, int, str], dict] = {}
    for n in sorted(args.sizes):
        path = make_data(n, folder)
        print(f"\n== n = {n:,} (load average {os.getloadavg()[0]:.1f})", flush=True)
        for step in args.steps:
            result = measure(step, path, "none", args.timeout, args.memory_cap * 2**30)
            table[step, n, "ours"] = result
            print(f"{step:<13} ours      {shown(result)}  {result.get('check', '')}", flush=True)
            if args.no_baselines or step not in BASELINES:
                continue
            kinds = ["tsne", "pca"] if step == "map" else ["baseline"]
            for kind in kinds:
                name = "sklearn PCA" if kind == "pca" else BASELINES[step]
                if kind != "pca" and step not in LINEAR_BASELINES and n > args.baseline_max:
                    print(f"{'':<13} baseline  (not run above --baseline-max "
                          f"{args.baseline_max:,}: quadratic or too slow) {name}")
                    continue
                result = measure(step, path, kind, args.timeout, args.memory_cap * 2**30)
                table[step, n, kind] = result
                print(f"{'':<13} baseline  {shown(result)}  {name}: "
                      f"{result.get('check', '')}", flush=True)
    sizes = sorted(args.sizes)
    if len(sizes) >= 2:
        low, high = sizes[-2], sizes[-1]
        print(f"\n== growth exponent log(t_{high} / t_{low}) / log({high} / {low}) "
              "(1 = linear, n log n ~ 1.1)")
        for step in args.steps:
            for kind in ("ours", "baseline", "tsne", "pca"):
                a, b = table.get((step, low, kind)), table.get((step, high, kind))
                if a and b and "stopped" not in a:
                    if "stopped" in b and b["stopped"].endswith(" s"):
                        at_least = float(b["stopped"].strip("> s")) / a["wall"]
                        text = f"> {math.log(at_least) / math.log(high / low):.2f}"
                    elif "stopped" in b:
                        text = f"({b['stopped']})"
                    else:
                        text = f"{math.log(b['wall'] / a['wall']) / math.log(high / low):.2f}"
                    print(f"{step:<13} {kind:<9} {text}")


if __name__ == "__main__":
    main(sys.argv[1:])
