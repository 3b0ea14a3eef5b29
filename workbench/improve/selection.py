"""Choosing what to label: first the images that cover the data, then the ones that would
teach the model most.

>>> pick = suggest_labels(p, n=50, strategy="cover")        # before any model
>>> pick.to_frame()          # sample_id, filepath, reason, score, rank (1 = label first)
>>> LabelingGrid(p, view=pick.view())                        # opens exactly these, in order
>>> pick = suggest_labels(p, n=20, strategy="active", model="v2")   # after a model
>>> pick = suggest_labels(p, n=20, strategy="active")   # a head fitted on the labels so far
>>> pick.second_opinion      # labelled images that deserve another annotator's label
>>> next_to_label(p)         # the stored suggestion, the images still unlabelled

Candidates are the unlabelled, real (never synthetic) images of the project or of ``view``.
Both strategies leave out near-duplicates (of a labelled image or of an earlier pick) and
images that look like junk (far from every other image), and report them in
``pick.skipped`` so a person can decide. Every call stores its suggestion as the run
``suggest_labels`` (replacing the previous one), which dashboards read back with
:func:`next_to_label`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from workbench.metrics.coverage import (
    JUNK_NEIGHBOURS,
    disagreement_scores,
    diverse_top,
    junk_outliers,
    margin_scores,
    stratified_allocation,
    typical_clusters,
)
from workbench.store import _db as store
from workbench.store.coerce import as_project
from workbench.store.project import Project, ProjectError
from workbench.train.backbones import DEFAULT_BACKBONE

if TYPE_CHECKING:
    import fiftyone as fo

    from workbench.train.versions import ModelVersion

Strategy = Literal["cover", "active"]
#: Run key of the stored suggestion (one, replaced by every call).
RUN_KEY = "suggest_labels"
#: Image side for ``cover`` without a model (the default backbone's cached embeddings).
DEFAULT_IMAGE_SIZE = 128
#: ``active``: weights of the model's uncertainty and the fold models' disagreement (without
#: folds, uncertainty alone).
UNCERTAINTY_WEIGHT, DISAGREEMENT_WEIGHT = 0.6, 0.4

COLUMNS = ["sample_id", "filepath", "reason", "score", "rank"]
SKIPPED_COLUMNS = ["sample_id", "filepath", "reason", "kind"]


@dataclass
class LabelSuggestion:
    """Which images to label next, best first (what :func:`suggest_labels` returns).

    Attributes
    ----------
    strategy : {"cover", "active"}
    seed : int
    n : int
        How many were asked for (``len(pick)`` says how many were found).
    picks : pd.DataFrame
        ``sample_id``, ``filepath``, ``reason``, ``score`` (higher = more worth labelling:
        for ``cover`` the share of images its k-means group holds over one plus the labels
        the group has, for ``active`` the informativeness), ``rank`` (1 = label first).
    skipped : pd.DataFrame
        Candidates left out: ``sample_id``, ``filepath``, ``reason``, ``kind``
        (``"near_duplicate"`` or ``"junk"``).
    second_opinion : pd.DataFrame
        ``active`` with several annotators: labelled images that deserve another label,
        columns as :attr:`picks` (``score`` is ``1 - ActiveLab score``): those ActiveLab
        ranks above the ``n``-th suggested unlabelled image, and those whose annotators are
        tied; at most ``n``, most in need first. Empty otherwise.
    notes : list of str
        What was done differently from the usual (fewer candidates than ``n``, no folds…).
    model : str or None
        The model version used.
    """

    strategy: str
    seed: int
    n: int
    project: Project = field(repr=False)
    picks: pd.DataFrame = field(repr=False)
    skipped: pd.DataFrame = field(repr=False)
    second_opinion: pd.DataFrame = field(repr=False)
    notes: list[str] = field(default_factory=list)
    model: str | None = None

    @property
    def sample_ids(self) -> list[str]:
        """The suggested sample ids, rank order."""
        return list(self.picks["sample_id"])

    def to_frame(self) -> pd.DataFrame:
        """The suggestion: sample_id, filepath, reason, score, rank (1 = label first)."""
        return self.picks.copy()

    def view(self) -> fo.DatasetView:
        """A FiftyOne view of exactly the suggested samples, in rank order."""
        return self.project.dataset.select(self.sample_ids, ordered=True)

    def __len__(self) -> int:
        return len(self.picks)

    def __repr__(self) -> str:
        extra = f", {len(self.second_opinion)} for a second opinion" \
            if len(self.second_opinion) else ""
        return (f"LabelSuggestion({self.strategy}: {len(self)} of {self.n} asked, "
                f"{len(self.skipped)} skipped{extra})")


def suggest_labels(project: Project | str, n: int = 50, strategy: Strategy = "cover",
                   model: ModelVersion | str | None = None, *, seed: int = 0,
                   view: fo.DatasetView | None = None,
                   slice_fields: list[str] | str | None = None, image_size: int | None = None,
                   write: bool = True, progress: bool = False) -> LabelSuggestion:
    """Which unlabelled images to label next.

    Parameters
    ----------
    project : Project or str
    n : int, default 50
        How many to suggest; with fewer candidates, all of them (``pick.notes`` says so).
    strategy : {"cover", "active"}, default "cover"
        ``cover`` (TypiClust): k-means on the embeddings of candidates and labelled images
        into ``n_labelled + n`` groups (at most
        :data:`~workbench.metrics.coverage.MAX_CLUSTERS` per stratum, TypiClust's cap); from
        each group without a labelled image (then the least covered), largest first, its
        most typical candidate (densest neighbourhood); stratified over the slice
        fields (``n`` shared in proportion to each slice's size, at least one each where
        possible). ``active``: the model's uncertainty (top-two margin) and the
        disagreement of heads refitted on the version's folds; the ``2 n`` most uncertain
        are grouped by k-means into ``n`` and each group gives its most uncertain-and-typical
        image. With several annotators, ActiveLab scores join in and fill
        ``pick.second_opinion``.
    model : ModelVersion or str, optional
        A version of this project for ``active``; its backbone and image size are used for
        the embeddings. Without one, ``active`` fits a probe head (logistic regression,
        :func:`workbench.train.classification.probe.fit_head`) on the embeddings of the labelled
        images (at least
        two classes needed), no folds.
    seed : int, default 0
        Seeds k-means. Same seed, same picks.
    view : FiftyOne view of the project, optional
        Suggest from these samples only (every labelled image still counts as covered).
    slice_fields : str or list of str, optional
        Fields to stratify ``cover`` over; default all of the project's, ``[]`` none.
    image_size : int, optional
        Embedding size for ``cover`` without a model (default
        :data:`DEFAULT_IMAGE_SIZE`); with a model, its own size is used.
    write : bool, default True
        Store the suggestion as the run ``suggest_labels`` (see :func:`next_to_label`).
    progress : bool, default False

    Returns
    -------
    LabelSuggestion

    Raises
    ------
    ProjectError
        For ``n < 1``, an unknown strategy, ``active`` without a model and without labelled
        images of two classes, a model of another
        project, a view of another dataset or unknown slice fields; nothing is stored then.
    """
    project = as_project(project)
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ProjectError(f"n must be an integer >= 1 (how many images to suggest); got {n!r}.")
    if strategy not in _STRATEGIES:
        raise ProjectError(f"strategy={strategy!r} is not one of {list(_STRATEGIES)}.")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ProjectError(f"seed must be a non-negative integer; got {seed!r}.")
    version = _version(project, model, strategy)
    fields = _fields(project, slice_fields) if strategy == "cover" else []
    embedding = _embedding_setup(version, image_size)
    rows = _rows(project, view)
    notes: list[str] = []
    pool = _Pool(project, rows, embedding, progress)
    picks, skipped, second = _STRATEGIES[strategy](pool, int(n), int(seed), version, fields,
                                                   notes)
    if len(picks) < n:
        notes.append(f"asked for {n}, found {len(picks)}: the project has "
                     f"{int(rows['candidate'].sum())} unlabelled real image(s) to choose from"
                     f"{f', {len(skipped)} left out (see pick.skipped)' if len(skipped) else ''}"
                     ".")
    result = LabelSuggestion(strategy=strategy, seed=int(seed), n=int(n), project=project,
                             picks=picks, skipped=skipped, second_opinion=second, notes=notes,
                             model=None if version is None else version.name)
    if write:
        _store(project, result, embedding, fields, view)
    return result


def next_to_label(project: Project | str) -> pd.DataFrame:
    """The stored suggestion (the last :func:`suggest_labels` call), still-unlabelled images
    only, rank order: sample_id, filepath, reason, score, rank. Empty when there is none."""
    project = as_project(project)
    dataset = project.dataset
    dataset.reload()
    if RUN_KEY not in store.analysis_runs(dataset) or not dataset.has_sample_field(RUN_KEY):
        return pd.DataFrame(columns=COLUMNS)
    keys = ["id", "filepath", f"{RUN_KEY}.reason", f"{RUN_KEY}.score", f"{RUN_KEY}.rank",
            f"{RUN_KEY}.kind", "ground_truth.label"]
    values = dataset.exists(RUN_KEY).values(keys)
    frame = pd.DataFrame(dict(zip([*COLUMNS, "kind", "label"], values, strict=True)))
    frame = frame[(frame["kind"] == "label") & frame["label"].isna()]
    frame = frame.sort_values("rank", kind="stable")[COLUMNS].reset_index(drop=True)
    return frame.astype({"rank": int, "score": float}) if len(frame) else frame


# -- inputs ------------------------------------------------------------------------------------
def _version(project: Project, model: ModelVersion | str | None,
             strategy: str) -> ModelVersion | None:
    if model is None:
        if strategy == "active":
            labels = project.to_pandas()["label"].dropna()
            if labels.nunique() < 2:
                raise ProjectError("strategy='active' needs model= (a version of this project, "
                                   "e.g. model='v1') or labelled images of at least two classes "
                                   f"(found {labels.nunique()}); use strategy='cover' first.")
        return None
    from workbench.analyse.classification import resolve

    if not isinstance(model, str) and not hasattr(model, "project_name"):
        raise ProjectError(f"model must be a ModelVersion or a version name like 'v1'; got "
                           f"{type(model).__name__}.")
    return resolve(project, model)[1]


def _fields(project: Project, slice_fields: list[str] | str | None) -> list[str]:
    if slice_fields is None:
        return project.slice_fields
    if isinstance(slice_fields, list | tuple) and not slice_fields:
        return []
    from workbench.analyse.classification import check_slice_fields

    return check_slice_fields(project, slice_fields)


@dataclass(frozen=True)
class _Embedding:
    backbone: str
    weights: str
    image_size: int


def _embedding_setup(version: ModelVersion | None, image_size: int | None) -> _Embedding:
    if image_size is not None and (isinstance(image_size, bool)
                                   or not isinstance(image_size, Integral) or image_size < 16):
        raise ProjectError(f"image_size must be an integer >= 16; got {image_size!r}.")
    if version is None or version.record.get("spec", {}).get("weights_source") == "random":
        return _Embedding(DEFAULT_BACKBONE, "default", int(image_size or DEFAULT_IMAGE_SIZE))
    size = int(version.config["image_size"])
    if image_size is not None and image_size != size:
        raise ProjectError(f"image_size={image_size} differs from model {version.name!r}'s "
                           f"{size} px; leave image_size out when passing a model.")
    return _Embedding(version.config["backbone"], version.config.get("weights", "default"),
                      size)


def _rows(project: Project, view: fo.DatasetView | None) -> pd.DataFrame:
    """Candidates then centres (labelled real images): the project's frame, flagged."""
    frame = project.to_pandas()
    synthetic = frame["tags"].map(lambda tags: store.SYNTHETIC_TAG in (tags or []))
    labelled = frame["label"].notna()
    if view is not None:
        if getattr(view, "dataset_name", None) != project.name:
            raise ProjectError(f"view must be a view of project {project.name!r}'s dataset; got "
                               f"a {type(view).__name__} of "
                               f"{getattr(view, 'dataset_name', None)!r}.")
        in_view = frame["sample_id"].isin(set(view.values("id")))
    else:
        in_view = pd.Series(True, index=frame.index)
    frame["candidate"] = ~labelled & ~synthetic & in_view
    frame["centre"] = labelled & ~synthetic
    return pd.concat([frame[frame["candidate"]], frame[frame["centre"]]], ignore_index=True)


class _Pool:
    """Candidates and centres with their embeddings and the junk screen (computed lazily)."""

    def __init__(self, project: Project, rows: pd.DataFrame, embedding: _Embedding,
                 progress: bool) -> None:
        self.project, self.rows, self.embedding, self.progress = project, rows, embedding, \
            progress
        self.candidates = rows["candidate"].to_numpy(dtype=bool)
        self.centres = rows["centre"].to_numpy(dtype=bool)
        self._vectors: np.ndarray | None = None
        self.ood = np.full(len(rows), np.nan)

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            from workbench.train.embeddings import embed_project

            ids = list(self.rows["sample_id"])
            self._vectors = embed_project(
                self.project, backbone=self.embedding.backbone, weights=self.embedding.weights,
                image_size=self.embedding.image_size,
                view=self.project.dataset.select(ids, ordered=True),
                progress=self.progress).vectors
        return self._vectors

    def screen(self) -> tuple[np.ndarray, pd.DataFrame]:
        """Candidates that may be picked, and the junk left out (skipped rows)."""
        if not self.candidates.any():
            return self.candidates.copy(), _skipped_frame([])
        junk = junk_outliers(self.vectors, rows=np.flatnonzero(self.candidates))
        self.ood = junk["ood_score"].to_numpy()
        flagged = junk["is_junk"].to_numpy() & self.candidates
        cutoff = junk.attrs["cutoff"]
        skipped = [(self.rows.at[i, "sample_id"], self.rows.at[i, "filepath"],
                    f"looks like junk: far from every other image (mean distance "
                    f"{junk.at[i, 'ood_score']:.2f} to its {JUNK_NEIGHBOURS} nearest; usual "
                    f"at most {cutoff:.2f})", "junk") for i in np.flatnonzero(flagged)]
        return self.candidates & ~flagged, _skipped_frame(skipped)


def _skipped_frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def _duplicates(pool: _Pool, decided: pd.DataFrame) -> list[tuple]:
    ids = pool.rows["sample_id"]
    return [(ids[r.row], pool.rows.at[r.row, "filepath"],
             f"near-duplicate of {ids[r.nearest]} "
             f"({'labelled' if pool.centres[r.nearest] else 'suggested'}; cosine distance "
             f"{r.distance:.3f})", "near_duplicate")
            for r in decided[decided["status"] == "near_duplicate"].itertuples()]


# -- cover -------------------------------------------------------------------------------------
def _cover(pool: _Pool, n: int, seed: int, version: ModelVersion | None, fields: list[str],
           notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    allowed, junk = pool.screen()
    if not allowed.any():
        return pd.DataFrame(columns=COLUMNS), junk, pd.DataFrame(columns=COLUMNS)
    rows = pool.rows
    keys = rows[fields].astype(object).where(rows[fields].notna(), "(none)").astype(str) \
        if fields else pd.DataFrame(index=rows.index)
    groups, quotas = np.zeros(len(rows), dtype=int), None
    if fields:
        strata = _tuples(keys[allowed])
        order = sorted(set(strata))
        code = {key: i for i, key in enumerate(order)}
        groups[allowed] = [code[k] for k in strata]
        sizes = np.bincount(groups[allowed], minlength=len(order))
        quotas = stratified_allocation(sizes, n, keys=order)
        # labelled images cover their own stratum (code len(order): a stratum without
        # candidates, quota 0)
        groups[pool.centres] = [code.get(k, len(order)) for k in
                                _tuples(keys[pool.centres])] \
            if pool.centres.any() else []
        quotas = np.append(quotas, 0)
    decided = typical_clusters(pool.vectors, n, centres_mask=pool.centres,
                               candidates_mask=allowed, seed=seed,
                               groups=groups if fields else None, quotas=quotas)
    seen = {(f, v) for f in fields for v in keys.loc[pool.centres, f]}
    picks = []
    total = int(allowed.sum() + pool.centres.sum())
    for r in decided[decided["status"] == "picked"].itertuples():
        covered = ("no labelled image" if not r.cluster_covered else
                   f"only {r.cluster_covered} labelled or suggested")
        reason = f"most typical of a group of {r.cluster_size} similar images with {covered}"
        if np.isfinite(r.distance):
            reason += f" (distance {r.distance:.2f} to the nearest labelled or suggested)"
        new = [f"{f}={keys.at[r.row, f]}" for f in fields if (f, keys.at[r.row, f]) not in seen]
        seen |= {(f, keys.at[r.row, f]) for f in fields}
        if new:
            reason += f"; covers {', '.join(new)}"
        score = r.cluster_size / max(total, 1) / (1 + r.cluster_covered)
        picks.append((rows.at[r.row, "sample_id"], rows.at[r.row, "filepath"], reason,
                      float(score), int(r.rank)))
    skipped = pd.concat([junk, _skipped_frame(_duplicates(pool, decided))], ignore_index=True)
    if fields:
        notes.append(f"stratified over {', '.join(fields)}: {len(quotas) - 1} slice "
                     f"combination(s), {int((quotas > 0).sum())} given picks.")
    return pd.DataFrame(picks, columns=COLUMNS), skipped, pd.DataFrame(columns=COLUMNS)


def _tuples(frame: pd.DataFrame) -> list[tuple]:
    """Each row's values as a tuple (``apply(tuple, axis=1)`` without a call per row)."""
    return list(zip(*(frame[column].tolist() for column in frame.columns), strict=True))


# -- active ------------------------------------------------------------------------------------
def _active(pool: _Pool, n: int, seed: int, version: ModelVersion | None, fields: list[str],
            notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    allowed, junk = pool.screen()
    rows = pool.rows
    cand = np.flatnonzero(allowed)
    if version is None:
        classes, probs = _head_probabilities(pool, cand, notes)
    else:
        classes = version.classes
        probs = np.zeros((0, len(classes)))
        if len(cand):
            probs = version.predict(list(rows["filepath"].iloc[cand]), progress=pool.progress)[
                classes].to_numpy(dtype=np.float64)
    margins = margin_scores(probs) if len(classes) >= 2 and len(cand) else None
    uncertainty = margins["uncertainty"].to_numpy() if margins is not None else np.zeros(len(cand))
    members = _fold_probabilities(pool, version, cand, notes) \
        if version is not None and len(cand) else None
    disagreement = disagreement_scores(members) if members is not None else None
    activelab = _activelab(pool.project, version, probs, n, notes) \
        if version is not None else None
    if activelab is not None and len(cand):
        uncertainty = (uncertainty + 1.0 - activelab[1]) / 2
    weight_u = UNCERTAINTY_WEIGHT if disagreement is not None else 1.0
    base = np.zeros(len(rows))
    base[cand] = weight_u * uncertainty + (
        DISAGREEMENT_WEIGHT * disagreement["disagreement"].to_numpy()
        if disagreement is not None else 0.0)
    picks: list[tuple] = []
    decided = pd.DataFrame(columns=["row", "status"])
    if len(cand):
        decided = diverse_top(pool.vectors, base, n, centres_mask=pool.centres,
                              candidates_mask=allowed, seed=seed)
        where = {row: i for i, row in enumerate(cand)}
        for r in decided[decided["status"] == "picked"].itertuples():
            i = where[r.row]
            parts = []
            if margins is not None:
                m = margins.iloc[i]
                parts.append((weight_u * uncertainty[i],
                              f"model unsure: {classes[int(m['first'])]} {m['p_first']:.2f} vs "
                              f"{classes[int(m['second'])]} {m['p_second']:.2f}"))
            if disagreement is not None and disagreement.at[i, "n_labels"] > 1:
                parts.append((DISAGREEMENT_WEIGHT * disagreement.at[i, "disagreement"],
                              f"fold models disagree ({disagreement.at[i, 'n_labels']} labels "
                              f"among {len(members)} folds)"))
            reason = "; ".join(text for _, text in sorted(parts, key=lambda p: -p[0]))
            if activelab is not None:
                reason += f" (ActiveLab {activelab[1][i]:.2f})"
            picks.append((rows.at[r.row, "sample_id"], rows.at[r.row, "filepath"],
                          reason or "least covered image", float(r.gain), int(r.rank)))
    skipped = pd.concat([junk, _skipped_frame(_duplicates(pool, decided))], ignore_index=True)
    second = activelab[0] if activelab is not None else pd.DataFrame(columns=COLUMNS)
    return pd.DataFrame(picks, columns=COLUMNS), skipped, second


def _head_probabilities(pool: _Pool, cand: np.ndarray,
                        notes: list[str]) -> tuple[list[str], np.ndarray]:
    """No model given: a probe head fitted on the labelled images' embeddings (the classes
    they carry), and its probabilities for the candidates."""
    from workbench.train.classification.probe import fit_head, head_probabilities

    labels = pool.rows.loc[pool.centres, "label"].astype(str)
    classes = sorted(labels.unique())
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy()
    head = fit_head(pool.vectors[pool.centres], y, len(classes))
    notes.append(f"no model given: a probe head (logistic regression on {pool.embedding.backbone} "
                 f"embeddings, {pool.embedding.image_size} px) fitted on the {len(y)} labelled "
                 f"images of {len(classes)} classes; no folds, so no fold disagreement.")
    if not len(cand):
        return classes, np.zeros((0, len(classes)))
    return classes, head_probabilities(head, pool.vectors[cand]).astype(np.float64)


def _fold_probabilities(pool: _Pool, version: ModelVersion, cand: np.ndarray,
                        notes: list[str]) -> np.ndarray | None:
    """Probabilities (n_folds, n_candidates, n_classes) of probe heads refitted on each
    fold's training rows of the version's snapshot, on cached embeddings."""
    from workbench.train.classification.probe import DEFAULT_C, fit_head, head_probabilities
    from workbench.train.embeddings import EmbeddingCache

    folds = int(version.config.get("folds", 1))
    if folds < 2 or pool.embedding.backbone != version.config.get("backbone"):
        notes.append(f"model {version.name!r} was not trained with folds >= 2 on pretrained "
                     "features: no fold disagreement, uncertainty and coverage only.")
        return None
    snapshot = version.snapshot()
    snapshot = snapshot[[Path(p).is_file() for p in snapshot["filepath"]]]
    classes = version.classes
    snapshot = snapshot[snapshot["label"].isin(classes)].reset_index(drop=True)
    vectors = EmbeddingCache(pool.project.folder / "embeddings").embed(
        list(snapshot["filepath"]), backbone=pool.embedding.backbone,
        weights=pool.embedding.weights, image_size=pool.embedding.image_size,
        progress=pool.progress).vectors
    y = snapshot["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    fold = snapshot["fold"].to_numpy()
    c = float(version.config.get("probe_c", DEFAULT_C))
    members = []
    for f in range(folds):
        train = fold != f
        if len(np.unique(y[train])) < 1:
            continue
        head = fit_head(vectors[train], y[train], len(classes), c=c)
        members.append(head_probabilities(head, pool.vectors[cand]))
    return np.stack(members) if len(members) >= 2 else None


def _activelab(project: Project, version: ModelVersion, probs_unlabelled: np.ndarray, n: int,
               notes: list[str]) -> tuple[pd.DataFrame, np.ndarray] | None:
    """ActiveLab where several annotators labelled some image: the second-opinion frame and
    the unlabelled candidates' scores (lower = label next), or None."""
    from cleanlab.multiannotator import get_active_learning_scores

    from workbench.analyse.data import annotations

    long = annotations(project)
    per_sample = long.groupby("sample_id")["annotator"].nunique()
    if long["annotator"].nunique() < 2 or not (per_sample > 1).any():
        return None
    classes = version.classes
    oof = version.oof_predictions().set_index("sample_id")
    current = project.to_pandas().set_index("sample_id")["label"]
    long = long[long["sample_id"].isin(oof.index) & long["label"].isin(classes)
                & long["sample_id"].map(current).notna()]
    if long.empty:
        return None
    index = {c: i for i, c in enumerate(classes)}
    matrix = long.assign(code=long["label"].map(index)).pivot(
        index="sample_id", columns="annotator", values="code").astype(float)
    matrix = matrix.dropna(axis=1, how="all")
    pred = np.array(oof.loc[matrix.index, classes], dtype=np.float64)
    pred /= pred.sum(axis=1, keepdims=True)
    unlabelled = probs_unlabelled / probs_unlabelled.sum(axis=1, keepdims=True) \
        if len(probs_unlabelled) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores, scores_unlabelled = get_active_learning_scores(matrix, pred, unlabelled)
    except (ValueError, AssertionError) as error:
        notes.append(f"ActiveLab could not score these annotations ({error}); second "
                     "opinions left out.")
        return None
    notes.append(f"{matrix.shape[1]} annotators: ActiveLab scores join the uncertainty and "
                 "fill pick.second_opinion.")
    bar = np.sort(scores_unlabelled)[min(n, len(scores_unlabelled)) - 1] \
        if len(scores_unlabelled) else np.inf
    votes_of = {sid: group.value_counts() for sid, group in long.groupby("sample_id")["label"]}
    tied = {sid for sid, votes in votes_of.items()
            if len(votes) > 1 and votes.iloc[0] == votes.iloc[1]}
    order = np.argsort(scores, kind="stable")
    chosen = [i for i in order if scores[i] < bar or matrix.index[i] in tied][:n]
    filepaths = project.to_pandas().set_index("sample_id")["filepath"]
    rows = []
    for rank, i in enumerate(chosen, start=1):
        sid = matrix.index[i]
        votes = votes_of[sid]
        said = (f"annotators split: {', '.join(f'{c} {k}' for c, k in votes.items())}"
                if len(votes) > 1 else f"annotators agree on {votes.index[0]} "
                f"({int(votes.iloc[0])} vote{'s' if votes.iloc[0] > 1 else ''})")
        best = int(pred[i].argmax())
        rows.append((sid, filepaths[sid], f"{said}; model says {classes[best]} "
                     f"{pred[i, best]:.2f} (ActiveLab {scores[i]:.2f})",
                     float(1.0 - scores[i]), rank))
    return pd.DataFrame(rows, columns=COLUMNS), np.asarray(scores_unlabelled, dtype=float)


_STRATEGIES = {"cover": _cover, "active": _active}


# -- the stored run ------------------------------------------------------------------------------
def _store(project: Project, result: LabelSuggestion, embedding: _Embedding,
           fields: list[str], view: fo.DatasetView | None) -> None:
    values = {row.sample_id: {"rank": int(row.rank), "score": float(row.score),
                              "reason": row.reason, "kind": "label"}
              for row in result.picks.itertuples(index=False)}
    values.update({row.sample_id: {"rank": int(row.rank), "score": float(row.score),
                                   "reason": row.reason, "kind": "second_opinion"}
                   for row in result.second_opinion.itertuples(index=False)})
    config = {"strategy": result.strategy, "n": result.n, "seed": result.seed,
              "model": result.model, "backbone": embedding.backbone,
              "image_size": embedding.image_size, "slice_fields": fields,
              "view": None if view is None else [repr(s) for s in getattr(view, "_stages", [])],
              "n_picked": len(result.picks), "n_second_opinion": len(result.second_opinion),
              "notes": list(result.notes)}
    store.write_run(project.dataset, RUN_KEY, values, method="suggest_labels", config=config)


__all__ = ["COLUMNS", "DEFAULT_IMAGE_SIZE", "RUN_KEY", "LabelSuggestion", "next_to_label",
           "suggest_labels"]
