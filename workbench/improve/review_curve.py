"""How much accuracy does an hour of label review buy? A review-efficiency curve.

A careful reviewer (the *oracle*: a dict of true labels, or a field holding them) is
simulated correcting the project's labels in the order a strategy proposes — Loupe's
label-issue queue, random review, lowest model confidence first, or any order of yours —
and a model is retrained with the version's configuration after each budget. Accuracy is
measured on a fixed, stratified evaluation split scored against the oracle, which no
strategy may review.

>>> curve = review_curve(p, "v1", "demo_truth", budgets=(0.05, 0.1, 0.2), seeds=3)
>>> curve.summary()      # mean accuracy and recovered share per strategy and budget
>>> curve.plot()         # accuracy against share reviewed, with the noisy and clean lines

The simulation works on a copy of the labels in memory: it never writes labels, histories
or analysis runs to the project (the Loupe order comes from
``label_issues(p, mv, write=False)``). Only the embedding cache may grow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench.analyse.classification import label_issues, resolve
from workbench.keywords import renamed
from workbench.metrics.review_sim import check_budgets, eval_split, simulate_review
from workbench.store import _db as store
from workbench.store.project import Project, ProjectError
from workbench.train.classification.probe import DEFAULT_C

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.train.versions import ModelVersion

#: Built-in strategies: what each orders the pool by.
STRATEGIES = {
    "loupe": "Loupe's label-issue queue (wb.label_issues, worst label first)",
    "random": "a seeded random permutation (a different one per seed)",
    "low_confidence": "the version's out-of-fold confidence (max probability), lowest first",
}
#: Colours of the built-in strategies and the reference lines in :meth:`ReviewCurve.plot`.
COLORS = {"loupe": "#2f6fdf", "random": "#9aa5b1", "low_confidence": "#e8a33d",
          "noisy": "#d64545", "clean": "#2f9e61"}
OTHER_COLORS = ("#7b4fd6", "#1fa2b3", "#c2467e", "#6b8e23")

Strategy = str | tuple[str, Sequence[str]]


@dataclass
class ReviewCurve:
    """The result of :func:`review_curve`.

    Attributes
    ----------
    frame : pd.DataFrame
        One row per strategy, budget and seed (see :meth:`to_frame`).
    baselines : pd.DataFrame
        Per seed: ``seed``, ``noisy_accuracy`` (trained on the labels as they are),
        ``clean_accuracy`` (every pool label the oracle's), ``n_pool``, ``n_eval``,
        ``n_wrong_in_pool``.
    notes : list of str
        How the curve was made (what was retrained, what was never written).
    version : str
        The model version whose configuration was retrained.
    strategies : list of str
        Strategy names, in the order asked.
    eval_ids : dict of int to list of str
        Per seed, the sample ids of the evaluation split.
    """

    frame: pd.DataFrame
    baselines: pd.DataFrame
    notes: list[str]
    version: str
    strategies: list[str]
    eval_ids: dict[int, list[str]] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """``strategy``, ``budget``, ``seed``, ``n_reviewed``, ``labels_fixed`` (reviewed
        samples whose label changed), ``accuracy`` (evaluation split, oracle labels),
        ``recovered_share`` (``(accuracy - noisy) / (clean - noisy)`` of the seed; NaN when
        clean equals noisy)."""
        return self.frame.copy()

    def summary(self) -> pd.DataFrame:
        """Per strategy and budget, means over seeds: ``accuracy``, ``accuracy_std``,
        ``recovered_share`` (NaN seeds left out), ``labels_fixed``, ``n_reviewed``,
        ``n_seeds``, and ``recovered_share_of_means`` (the mean accuracy's share of the gap
        between mean noisy and mean clean accuracy: steadier than the mean of per-seed
        shares when a seed's gap is a sample or two); strategies in the order asked."""
        grouped = self.frame.groupby(["strategy", "budget"], sort=False)
        result = grouped.agg(accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
                             recovered_share=("recovered_share", "mean"),
                             labels_fixed=("labels_fixed", "mean"),
                             n_reviewed=("n_reviewed", "mean"),
                             n_seeds=("seed", "nunique")).reset_index()
        result["accuracy_std"] = result["accuracy_std"].fillna(0.0)
        noisy = float(self.baselines["noisy_accuracy"].mean())
        gap = float(self.baselines["clean_accuracy"].mean()) - noisy
        result["recovered_share_of_means"] = ((result["accuracy"] - noisy) / gap if gap
                                              else np.nan)
        order = {name: i for i, name in enumerate(self.strategies)}
        return result.sort_values(["strategy", "budget"], key=lambda c: c.map(order)
                                  if c.name == "strategy" else c,
                                  kind="stable").reset_index(drop=True)

    def plot(self) -> go.Figure:
        """Accuracy against the share of the pool reviewed: one line per strategy (mean over
        seeds, error bars one standard deviation, starting from the noisy accuracy at 0),
        then horizontal ``noisy`` and ``clean`` lines. One trace each, in that order."""
        import plotly.graph_objects as go

        summary = self.summary()
        noisy = self.baselines["noisy_accuracy"]
        clean = self.baselines["clean_accuracy"]
        top = float(summary["budget"].max()) if len(summary) else 1.0
        figure = go.Figure(layout=go.Layout(
            height=380, margin={"l": 60, "r": 20, "t": 40, "b": 50}, plot_bgcolor="#ffffff",
            xaxis={"title": {"text": "share of the pool reviewed"}, "tickformat": ".0%",
                   "rangemode": "tozero", "gridcolor": "#e4e7eb"},
            yaxis={"title": {"text": "accuracy on the clean evaluation split"},
                   "tickformat": ".0%", "gridcolor": "#e4e7eb"},
            legend={"orientation": "h", "y": 1.12},
            title={"text": f"review efficiency ({self.version}, {len(self.baselines)} "
                           f"seed{'s' if len(self.baselines) != 1 else ''})", "x": 0.01}))
        extra = iter(OTHER_COLORS * 8)
        for name in self.strategies:
            rows = summary[summary["strategy"] == name]
            figure.add_trace(go.Scatter(
                x=[0.0, *rows["budget"]], y=[float(noisy.mean()), *rows["accuracy"]],
                error_y={"type": "data", "array": [float(noisy.std(ddof=1)) if len(noisy) > 1
                                                   else 0.0, *rows["accuracy_std"]],
                         "visible": True, "thickness": 1},
                mode="lines+markers", name=name,
                line={"color": COLORS.get(name) or next(extra), "width": 2.5},
                customdata=np.column_stack([[0.0, *rows["labels_fixed"]],
                                            [0.0, *rows["recovered_share"].fillna(0.0)]]),
                hovertemplate=(f"{name}<br>%{{x:.0%}} reviewed<br>accuracy %{{y:.1%}}<br>"
                               "labels fixed %{customdata[0]:.1f}<br>recovered "
                               "%{customdata[1]:.0%}<extra></extra>")))
        for name, values in (("noisy", noisy), ("clean", clean)):
            figure.add_trace(go.Scatter(
                x=[0.0, top], y=[float(values.mean())] * 2, mode="lines",
                name=f"{name} labels", line={"color": COLORS[name], "dash": "dash", "width": 1.5},
                hovertemplate=f"{name} labels: %{{y:.1%}}<extra></extra>"))
        return figure


@renamed(p="project", mv="version")
def review_curve(project: Project | str, version: ModelVersion | str,
                 oracle: Mapping[str, str] | str, *,
                 budgets: Sequence[float] = (0.02, 0.05, 0.10, 0.20),
                 strategies: Sequence[Strategy] = ("loupe", "random", "low_confidence"),
                 seeds: int = 3, eval_share: float = 0.3,
                 eval_samples: Sequence[str] | Any | None = None,
                 progress: bool = False) -> ReviewCurve:
    """Simulate label review by strategy and budget; measure what each buys in accuracy.

    For each seed, ``eval_share`` of the labelled real samples (stratified by the oracle's
    label) are set aside and scored against the oracle; they are never reviewed nor trained
    on. The rest is the review pool. For each strategy and budget, the first
    ``round(budget * n_pool)`` pool samples in the strategy's order get the oracle's label
    (in memory), a probe head is refitted on the pool, and its accuracy is measured.

    **Nothing is written to the project**: no label, history entry or analysis run (the
    ``loupe`` order is ``label_issues(project, version, write=False)``); only the embedding
    cache may grow. Synthetic samples are left out of pool and evaluation.

    Parameters
    ----------
    project : Project or str
    version : ModelVersion or str
        A k-fold version (``loupe`` and ``low_confidence`` need its out-of-fold
        predictions). Retraining uses its backbone, weights, image size and ``probe_c``:
        a probe head on the project's cached embeddings (also for a fine-tuned version,
        which :attr:`ReviewCurve.notes` then says).
    oracle : dict of str to str, or str
        The true label of every labelled real sample (sample id -> label), or the name of a
        sample field holding it (a string or a Classification, e.g. the demo's
        ``"demo_truth"``).
    budgets : sequence of float in (0, 1], default (0.02, 0.05, 0.10, 0.20)
        Shares of the review pool to review.
    strategies : sequence, default ("loupe", "random", "low_confidence")
        Names of built-in strategies (:data:`STRATEGIES`) or pairs ``(name, sample_ids)``
        giving an order of your own. Pool samples an order does not rank follow it in the
        seed's random order.
    seeds : int, default 3
        Repetitions with another evaluation split and random order (seeds 0 … seeds-1).
    eval_share : float in (0, 1), default 0.3
    eval_samples : sequence of sample ids, or a FiftyOne view, optional
        A fixed evaluation set instead of ``eval_share`` (every seed uses it; seeds then
        vary the random order only): e.g. a large, carefully labelled hold-out that the
        version was not trained on (``wb.train(p, view=...)``), so that the accuracy gap
        between noisy and clean labels is measured on many images. They must be labelled
        real samples the oracle covers.
    progress : bool, default False

    Returns
    -------
    ReviewCurve
        ``.to_frame()``, ``.baselines``, ``.summary()``, ``.plot()``, ``.notes``.

    Raises
    ------
    ValueError
        For an oracle that misses labelled samples, names unknown ids or labels outside the
        project's classes, an absent oracle field, budgets outside (0, 1], an unknown
        strategy, a custom order with unknown or repeated ids, or bad ``seeds`` /
        ``eval_share``. Nothing is written in any case.
    """
    project, version = resolve(project, version)
    budgets = check_budgets(budgets)
    plan = _check_strategies(strategies)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}.")
    if (isinstance(eval_share, bool) or not isinstance(eval_share, int | float)
            or not 0 < eval_share < 1):
        raise ValueError(f"eval_share must be a number in (0, 1), e.g. 0.3; got {eval_share!r}.")
    samples = store.labelled_samples(project.dataset)
    real = [i for i, fake in enumerate(samples["synthetic"]) if not fake]
    ids = [samples["sample_id"][i] for i in real]
    if not ids:
        raise ValueError(f"project {project.name!r} has no labelled real samples to review.")
    paths = [samples["filepath"][i] for i in real]
    noisy = np.array([samples["label"][i] for i in real], dtype=object)
    truth = _oracle_labels(project, oracle, ids)
    row_of = {sid: i for i, sid in enumerate(ids)}
    custom = {name: _custom_rows(name, order, row_of, project) for name, order in plan
              if order is not None}
    config = version.config
    notes = _notes(project, version, config)
    needs_oof = any(order is None and name != "random" for name, order in plan)
    if needs_oof and version.metrics.get("evaluated_on") != "out-of-fold":
        raise ProjectError(f"strategies 'loupe' and 'low_confidence' need out-of-fold "
                           f"predictions; {version.name!r} was validated on a split. Train "
                           "with folds: wb.train(p, folds=5).")
    features = _features(project, config, paths, progress=progress)
    fixed: dict[str, np.ndarray] = dict(custom)
    for name, order in plan:
        if name == "loupe" and order is None:
            ranked = label_issues(project, version, write=False, progress=progress)
            fixed[name] = _known_rows(ranked.sort_values("rank")["sample_id"], row_of)
        elif name == "low_confidence" and order is None:
            held = version.oof_predictions()
            held = held.assign(top=held[version.classes].max(axis=1)).sort_values(
                "top", kind="stable")
            fixed[name] = _known_rows(held["sample_id"], row_of)
    fixed_eval = _fixed_eval(eval_samples, ids)
    frames, baselines, eval_ids = [], [], {}
    for seed in tqdm(range(seeds), desc="review simulation", unit="seed",
                     disable=not progress):
        mask = (fixed_eval if fixed_eval is not None
                else eval_split(truth, share=eval_share, seed=seed))
        shuffled = np.random.default_rng([seed, 11]).permutation(len(ids))
        orders = {name: shuffled if name == "random" and name not in fixed
                  else _completed(fixed[name], shuffled) for name, _ in plan}
        frame = simulate_review(features, noisy, truth, eval_mask=mask, orders=orders,
                                budgets=budgets, c=float(config.get("probe_c", DEFAULT_C)))
        baselines.append({"seed": seed, **{k: frame.attrs[k] for k in (
            "noisy_accuracy", "clean_accuracy", "n_pool", "n_eval", "n_wrong_in_pool")}})
        frame.insert(2, "seed", seed)
        frames.append(frame)
        eval_ids[seed] = [sid for sid, held in zip(ids, mask, strict=True) if held]
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs = {}
    return ReviewCurve(frame=frame, baselines=pd.DataFrame(baselines), notes=notes,
                       version=version.name, strategies=[name for name, _ in plan],
                       eval_ids=eval_ids)


def _fixed_eval(eval_samples: Sequence[str] | Any | None,
               ids: Sequence[str]) -> np.ndarray | None:
    """The evaluation mask over ``ids`` that ``eval_samples`` names (None: use a split)."""
    if eval_samples is None:
        return None
    if hasattr(eval_samples, "values") and hasattr(eval_samples, "_root_dataset"):
        eval_samples = eval_samples.values("id")
    if isinstance(eval_samples, str) or not isinstance(eval_samples, Sequence | np.ndarray):
        raise ValueError("eval_samples must be a sequence of sample ids or a FiftyOne view, "
                         f"got {type(eval_samples).__name__}.")
    wanted = {str(sid) for sid in eval_samples}
    known = set(ids)
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"eval_samples: {len(unknown)} id(s) are not labelled real samples "
                         f"of the project, e.g. {unknown[0]!r}.")
    mask = np.array([sid in wanted for sid in ids])
    if not mask.any() or mask.all():
        raise ValueError("eval_samples must name some, but not all, labelled samples: the "
                         "others are the review pool.")
    return mask


def _check_strategies(strategies: Sequence[Strategy]) -> list[tuple[str, Sequence[str] | None]]:
    """(name, custom order or None) per strategy, checked before any work."""
    if isinstance(strategies, str):
        strategies = [strategies]
    plan: list[tuple[str, Sequence[str] | None]] = []
    for item in strategies:
        if isinstance(item, str):
            if item not in STRATEGIES:
                raise ValueError(f"strategies: unknown strategy {item!r}; choose from "
                                 f"{', '.join(STRATEGIES)} or pass a pair (name, sample_ids) "
                                 "for an order of your own.")
            plan.append((item, None))
        elif (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)
              and item[0] and not isinstance(item[1], str)):
            plan.append((item[0], list(item[1])))
        else:
            raise ValueError(f"strategies: {item!r} is neither a strategy name "
                             f"({', '.join(STRATEGIES)}) nor a pair (name, sample_ids).")
    names = [name for name, _ in plan]
    if not plan or len(set(names)) != len(names):
        raise ValueError(f"strategies must name at least one strategy, each once; got {names}.")
    return plan


def _oracle_labels(project: Project, oracle: Mapping[str, str] | str,
                   ids: list[str]) -> np.ndarray:
    """The oracle's label of each sample id, checked against the project's classes."""
    if isinstance(oracle, str):
        if not project.dataset.has_sample_field(oracle):
            raise ValueError(f"oracle field {oracle!r} does not exist in project "
                             f"{project.name!r}; pass a field holding the true labels or a "
                             "dict sample_id -> label.")
        values = project.dataset.select(ids, ordered=True).values(oracle)
        given = {sid: getattr(v, "label", v) for sid, v in zip(ids, values, strict=True)}
        source = f"oracle field {oracle!r}"
    elif isinstance(oracle, Mapping):
        given = dict(oracle)
        unknown = sorted(set(given) - store.existing_ids(project.dataset, list(given)))
        if unknown:
            raise ValueError(f"oracle names {len(unknown)} sample id(s) not in project "
                             f"{project.name!r}: {', '.join(map(str, unknown[:5]))}"
                             f"{' …' if len(unknown) > 5 else ''}.")
        source = "oracle"
    else:
        raise ValueError(f"oracle must be a dict sample_id -> label or a field name, got "
                         f"{type(oracle).__name__}.")
    missing = [sid for sid in ids if not isinstance(given.get(sid), str)]
    if missing:
        raise ValueError(f"{source} has no label for {len(missing)} of the {len(ids)} labelled "
                         f"real samples (e.g. {', '.join(missing[:3])}); the oracle must "
                         "cover every labelled sample.")
    classes = set(project.classes)
    strange = sorted({given[sid] for sid in ids} - classes)
    if strange:
        raise ValueError(f"{source} gives label(s) {', '.join(map(repr, strange))} that are "
                         f"not classes of project {project.name!r} (classes: "
                         f"{', '.join(project.classes)}).")
    return np.array([given[sid] for sid in ids], dtype=object)


def _custom_rows(name: str, order: Sequence[str], row_of: dict[str, int],
                 project: Project) -> np.ndarray:
    unknown = [sid for sid in order if sid not in row_of]
    if unknown:
        raise ValueError(f"strategy {name!r}: {len(unknown)} sample id(s) are not labelled "
                         f"real samples of project {project.name!r} (e.g. "
                         f"{', '.join(map(str, unknown[:3]))}).")
    if len(set(order)) != len(order):
        raise ValueError(f"strategy {name!r} lists a sample id more than once.")
    return np.array([row_of[sid] for sid in order], dtype=int)


def _known_rows(sample_ids: Sequence[str], row_of: dict[str, int]) -> np.ndarray:
    return np.array([row_of[s] for s in sample_ids if s in row_of], dtype=int)


def _completed(order: np.ndarray, shuffled: np.ndarray) -> np.ndarray:
    """``order`` followed by the rows it does not rank, in ``shuffled``'s order."""
    return np.concatenate([order, shuffled[~np.isin(shuffled, order)]]).astype(int)


def _features(project: Project, config: dict[str, Any], paths: list[str], *,
              progress: bool) -> np.ndarray:
    from workbench.train.embeddings import EmbeddingCache

    weights = config.get("weights", "default")
    if weights in (None, "None", "none", "random"):
        raise ProjectError("review_curve retrains a probe on frozen pretrained embeddings; "
                           f"this version's backbone has weights={weights!r}. Use a version "
                           "trained with pretrained weights.")
    return EmbeddingCache(project.folder / "embeddings").embed(
        paths, backbone=config["backbone"], weights=weights, image_size=config["image_size"],
        progress=progress).vectors


def _notes(project: Project, version: ModelVersion, config: dict[str, Any]) -> list[str]:
    notes = [
        f"Simulated on a copy of the labels in memory: no label, history entry or analysis "
        f"run of project {project.name!r} was written (the Loupe order came from "
        "label_issues(..., write=False)).",
        f"Retrained as {version.name} is configured: a probe head (C="
        f"{config.get('probe_c', DEFAULT_C)}) on frozen {config['backbone']} embeddings at "
        f"{config['image_size']} px, from the project's embedding cache.",
        "Accuracy is measured on a stratified evaluation split per seed, against the oracle's "
        "labels; those samples are never reviewed nor trained on. Synthetic samples are left "
        "out.",
    ]
    if version.mode != "probe":
        notes.append(f"{version.name} is a {version.mode} version; the simulation retrains a "
                     "probe on the same backbone instead (fine-tuning once per strategy, "
                     "budget and seed would take hours on a CPU), so absolute accuracies "
                     "differ from the version's.")
    return notes


__all__ = ["STRATEGIES", "ReviewCurve", "review_curve"]
