"""Shortcuts: image properties and slice fields that travel with the labels.

A model trained where one class was photographed under other light, focus or size can learn
the light instead of the defect. :func:`image_properties` measures how each image was taken
(not what it shows); :func:`shortcut_table` tests each property and slice field against the
labels and, with a model version's held-out errors, against its mistakes.

>>> props = image_properties(images)                 # brightness, sharpness, size, aspect
>>> shortcut_table(props.assign(lighting=lighting), labels, errors=errors).head()

Both are pure: arrays and DataFrames in, DataFrames out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import ndimage, stats

__all__ = ["MIN_ASSOCIATION", "PROPERTIES", "image_properties", "shortcut_table"]

#: Columns of :func:`image_properties`.
PROPERTIES = ("brightness", "sharpness", "size", "aspect")
#: Tiles per side over which sharpness is measured (each at least ``_MIN_TILE`` px).
TILES = 4
_MIN_TILE = 8
#: Scale (px) of the Laplacian of Gaussian: finer, and sensor noise would read as focus.
_FOCUS_SIGMA = 1.0
#: Scale (px) of the local grey level that divides it: exposure and tint are not focus.
_LOCAL_SIGMA = 4.0
_GREY = np.array([0.299, 0.587, 0.114])
#: Smallest effect size that makes a shortcut, by kind: epsilon² ≥ 0.06 for numbers (between
#: "small", 0.01, and "medium", 0.08) and Cramér's V ≥ 0.25 (V² ≈ 0.06) for categories.
MIN_ASSOCIATION = {"numeric": 0.06, "categorical": 0.25}
#: A slice field with more distinct values than this share of the images is not tested.
MAX_LEVEL_SHARE = 0.2
#: What a numeric property stands for, and its words for lower and higher values.
_WORDS = {
    "brightness": ("lighting", "darker", "brighter"),
    "sharpness": ("focus", "blurrier", "sharper"),
    "size": ("image size", "smaller", "larger"),
    "aspect": ("image shape", "taller", "wider"),
}
_COLUMNS = ["property", "kind", "association", "p_value", "error_association",
            "error_p_value", "is_shortcut", "note"]


def image_properties(images: Iterable[ArrayLike]) -> pd.DataFrame:
    """How each image was taken: lighting, focus and size, robust to the defect it shows.

    Parameters
    ----------
    images : iterable of array-like of shape (height, width) or (height, width, channels)
        Grey or RGB(A) pixels, 0–255 for 8-bit images; read one at a time, so a generator
        keeps memory flat.

    Returns
    -------
    pd.DataFrame, one row per image
        ``brightness``: median grey level (a small bright scratch does not move it);
        ``sharpness``: fine detail, ``|Laplacian of Gaussian|`` (σ = 1 px) over the local
        grey level, its median in each tile of a ``TILES`` × ``TILES`` grid, then the median
        over the tiles (focus, not exposure or sensor noise; a thin scratch or a few pits
        barely move it);
        ``size``: width × height in pixels; ``aspect``: width / height.
    """
    rows = [_properties(np.asarray(image)) for image in images]
    return pd.DataFrame(rows, columns=list(PROPERTIES)).astype(
        {"brightness": float, "sharpness": float, "size": np.int64, "aspect": float})


def _properties(pixels: np.ndarray) -> tuple[float, float, int, float]:
    if pixels.ndim == 3 and pixels.shape[2] >= 3:
        grey = pixels[..., :3].astype(np.float64) @ _GREY
    elif pixels.ndim == 3 and pixels.shape[2] in (1, 2):
        grey = pixels[..., 0].astype(np.float64)
    elif pixels.ndim == 2:
        grey = pixels.astype(np.float64)
    else:
        raise ValueError(f"images must be arrays of shape (height, width) or (height, width, "
                         f"channels); got one of shape {pixels.shape}.")
    height, width = grey.shape
    if not height or not width:
        raise ValueError(f"images must not be empty; got one of shape {pixels.shape}.")
    detail = (np.abs(ndimage.gaussian_laplace(grey, _FOCUS_SIGMA))
              / (ndimage.gaussian_filter(grey, _LOCAL_SIGMA) + 1.0))
    tiles = max(1, min(TILES, height // _MIN_TILE, width // _MIN_TILE))
    rows = np.linspace(0, height, tiles + 1).astype(int)
    cols = np.linspace(0, width, tiles + 1).astype(int)
    per_tile = [np.median(detail[r0:r1, c0:c1]) for r0, r1 in pairwise(rows)
                for c0, c1 in pairwise(cols)]
    return float(np.median(grey)), float(np.median(per_tile)), height * width, width / height


def shortcut_table(properties: pd.DataFrame, labels: Sequence | ArrayLike,
                   errors: Sequence | ArrayLike | None = None, *,
                   alpha: float = 0.01) -> pd.DataFrame:
    """How strongly each property goes with the labels (and with the model's errors).

    Parameters
    ----------
    properties : pd.DataFrame of shape (n_samples, n_properties)
        One column per property: numeric columns (:func:`image_properties`, a numeric slice
        field) are tested with Kruskal–Wallis, others (slice fields such as ``lighting``)
        with a chi-square test of independence. Missing values leave that row out of that
        column's tests.
    labels : array-like of shape (n_samples,)
        Class of each image (None or NaN: unlabelled, left out).
    errors : array-like of bool or None, shape (n_samples,), optional
        Whether a model's held-out prediction of the image is wrong (None: not held out).
        Numeric properties are tested with Kruskal–Wallis on two groups (the Mann–Whitney U
        test), categorical ones with chi-square.
    alpha : float, default 0.01
        Adjusted p-value under which an association counts.

    Returns
    -------
    pd.DataFrame, one row per property
        ``property``; ``kind`` (``numeric`` or ``categorical``); ``association`` with the
        labels in 0..1 (numeric: epsilon² = H / (n − 1), the share of rank variance the
        classes explain; categorical: Cramér's V); ``p_value``; ``error_association`` and
        ``error_p_value`` the same against the errors (NaN without ``errors``);
        ``is_shortcut`` (``p_value < alpha`` and ``association`` at least
        ``MIN_ASSOCIATION[kind]``); ``note`` in plain words. P-values are Holm-adjusted for
        the number of properties tested, separately for labels and errors; a property with
        a single value has no test (NaN). Most suspicious first: shortcuts, then by
        ``p_value``, ``error_p_value``. ``attrs`` holds ``alpha``, ``correction``
        (``"holm"``), ``min_association``, ``n_labelled`` and ``n_predicted``.
    """
    if not isinstance(properties, pd.DataFrame):
        raise ValueError(f"properties must be a DataFrame with one column per property; got "
                         f"{type(properties).__name__}.")
    if isinstance(alpha, bool) or not isinstance(alpha, float | int) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a significance level in (0, 1); got {alpha!r}.")
    repeated = properties.columns[properties.columns.duplicated()]
    if len(repeated):
        raise ValueError(f"properties must name each column once; {list(repeated)} repeat.")
    n = len(properties)
    labels = _column(labels, "labels", n)
    classes = labels.dropna().unique()
    if len(classes) < 2:
        raise ValueError(f"labels must hold at least two classes to compare; got "
                         f"{len(classes)} ({', '.join(map(repr, classes)) or 'none'}).")
    wrong = None if errors is None else _errors(_column(errors, "errors", n))
    frame = properties.reset_index(drop=True)
    rows = [_row(str(name), frame[name], labels, wrong) for name in frame.columns]
    table = pd.DataFrame(rows, columns=[*_COLUMNS, "_label", "_error"])
    table["p_value"] = _holm(table["p_value"].to_numpy(float))
    table["error_p_value"] = _holm(table["error_p_value"].to_numpy(float))
    minimum = table["kind"].map(MIN_ASSOCIATION)
    table["is_shortcut"] = (table["p_value"] < alpha) & (table["association"] >= minimum)
    table["note"] = [_note(row, alpha) for row in table.to_dict("records")]
    table = table.assign(_p=table["p_value"].fillna(2.0), _e=table["error_p_value"].fillna(2.0))
    table = table.sort_values(["is_shortcut", "_p", "_e", "association"],
                              ascending=[False, True, True, False], kind="stable")
    table = table[_COLUMNS].reset_index(drop=True)
    table.attrs.update(alpha=float(alpha), correction="holm", min_association=MIN_ASSOCIATION,
                       n_labelled=int(labels.notna().sum()),
                       n_predicted=0 if wrong is None else int(wrong.notna().sum()))
    return table


def _column(values: Sequence | ArrayLike, name: str, n: int) -> pd.Series:
    if isinstance(values, str) or not hasattr(values, "__len__") or len(values) != n:
        got = len(values) if hasattr(values, "__len__") else type(values).__name__
        raise ValueError(f"{name} must hold one entry per row of properties ({n}); got "
                         f"{got!r}.")
    series = pd.Series(list(values), dtype=object)
    return series.where(series.notna(), None)


def _errors(values: pd.Series) -> pd.Series:
    bad = [v for v in values.dropna() if not isinstance(v, bool | np.bool_)]
    if bad:
        raise ValueError(f"errors must be True (wrong), False (right) or None (no held-out "
                         f"prediction); got {bad[0]!r}.")
    return values


def _row(name: str, values: pd.Series, labels: pd.Series, wrong: pd.Series | None) -> list:
    numeric = (pd.api.types.is_numeric_dtype(values)
               and not pd.api.types.is_bool_dtype(values))
    kind = "numeric" if numeric else "categorical"
    test = _numeric if numeric else _categorical
    label = test(name, values, labels)
    error = (test(name, values, wrong.map({True: "wrong", False: "right", None: None}))
             if wrong is not None else _untested(""))
    return [name, kind, label["effect"], label["p"], error["effect"], error["p"], False, "",
            label, error]


def _untested(why: str) -> dict:
    return {"effect": math.nan, "p": math.nan, "why": why}


def _numeric(name: str, values: pd.Series, groups: pd.Series) -> dict:
    keep = values.notna() & groups.notna()
    x, g = values[keep].astype(float).to_numpy(), groups[keep].to_numpy()
    levels = pd.unique(g)
    if len(levels) < 2:
        return _untested(f"only one group ({levels[0]!r})" if len(levels) else "no values")
    if np.ptp(x) == 0:
        return _untested(f"the same {name} ({_fmt(x[0])}) for every image: nothing to test")
    h, p = stats.kruskal(*[x[g == level] for level in levels])
    ranks = stats.rankdata(x)
    # The group whose mean rank strays furthest from the rest (in rank units, size-weighted).
    stray = [(abs(ranks[g == lv].mean() - ranks[g != lv].mean()) * math.sqrt((g == lv).sum()),
              lv) for lv in levels]
    level = max(stray, key=lambda s: s[0])[1]
    inside, outside = x[g == level], x[g != level]
    return {"effect": float(h / (len(x) - 1)), "p": float(p), "why": "", "level": level,
            "median": float(np.median(inside)), "rest": float(np.median(outside)),
            "lower": bool(ranks[g == level].mean() < ranks[g != level].mean())}


def _categorical(name: str, values: pd.Series, groups: pd.Series) -> dict:
    keep = values.notna() & groups.notna()
    table = pd.crosstab(groups[keep].astype(str).to_numpy(),
                        values[keep].astype(str).to_numpy())
    n = int(table.to_numpy().sum())
    if table.shape[0] < 2:
        return _untested("only one group" if n else "no values")
    if table.shape[1] < 2:
        only = table.columns[0] if table.shape[1] else None
        return _untested(f"one {name} ({only!r}) for every image: nothing to test")
    if table.shape[1] > max(2, MAX_LEVEL_SHARE * n):
        return _untested(f"{table.shape[1]} distinct values among {n} images: too many to "
                         "test (a slice field should group images)")
    chi2, p, _, expected = stats.chi2_contingency(table.to_numpy(), correction=False)
    v = math.sqrt(chi2 / (n * (min(table.shape) - 1)))
    residual = (table.to_numpy() - expected) / np.sqrt(expected)
    r, c = np.unravel_index(int(np.argmax(residual)), residual.shape)
    group, value = table.index[r], table.columns[c]
    share = table.iloc[r, c] / table.iloc[r].sum()
    others = table.drop(index=group)
    return {"effect": float(v), "p": float(p), "why": "", "level": group, "value": value,
            "share": float(share), "rest": float(others[value].sum() / others.to_numpy().sum()),
            "table": table}


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of the finite p-values (NaN stays NaN)."""
    out = np.full_like(p, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for step, index in enumerate(order):
        running = max(running, min(1.0, (m - step) * p[index]))
        out[index] = running
    return out


def _note(row: dict, alpha: float) -> str:
    name, kind, label, error = row["property"], row["kind"], row["_label"], row["_error"]
    topic = _WORDS.get(name, (name,))[0]
    if label["why"]:
        text = label["why"]
    elif row["is_shortcut"]:
        text = f"the model may be reading the {topic}, not the defect: {_label_words(name, label)}"
    elif row["p_value"] < alpha:
        effect = "epsilon²" if kind == "numeric" else "Cramér's V"
        text = (f"a weak association with the labels ({effect} {row['association']:.2f}, "
                f"below {MIN_ASSOCIATION[kind]}): {_label_words(name, label)}")
    else:
        text = f"no clear association with the labels (adjusted p = {row['p_value']:.2g})"
    if row["error_p_value"] < alpha:
        lead = ("and the model's errors follow it" if row["is_shortcut"] else
                "not a shortcut, but the model's errors follow it")
        text += f"; {lead}: {_error_words(name, error)}"
    return text


def _label_words(name: str, found: dict) -> str:
    if "table" in found:
        return (f"{found['share']:.0%} of {found['level']!r} images have {name} "
                f"{found['value']!r} vs {found['rest']:.0%} of the others")
    words = _WORDS.get(name, (name, f"lower in {name}", f"higher in {name}"))
    return (f"{found['level']!r} images are {words[1] if found['lower'] else words[2]} "
            f"(median {name} {_fmt(found['median'])} vs {_fmt(found['rest'])} for the other "
            "classes)")


def _error_words(name: str, found: dict) -> str:
    if "table" in found:  # the value whose images the model gets wrong most often, vs the rest
        table = found["table"]
        wrong = table.loc["wrong"]
        rate = wrong / table.sum()
        value = rate.idxmax()
        rest = wrong.drop(value).sum() / table.drop(columns=value).to_numpy().sum()
        return (f"it gets {rate[value]:.0%} of the {name} {value!r} images wrong vs "
                f"{rest:.0%} of the others")
    words = _WORDS.get(name, (name, f"lower in {name}", f"higher in {name}"))
    lower = found["lower"] if found["level"] == "wrong" else not found["lower"]
    wrong, right = ((found["median"], found["rest"]) if found["level"] == "wrong"
                    else (found["rest"], found["median"]))
    return (f"images it gets wrong are {words[1] if lower else words[2]} (median {name} "
            f"{_fmt(wrong)} vs {_fmt(right)} for those it gets right)")


def _fmt(value: float) -> str:
    value = float(value)
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
