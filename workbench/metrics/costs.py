"""Pass or reject by the cost of a mistake: escapes, false rejects and expected cost per
10,000 parts over thresholds on a defect score, with bootstrap 95 % intervals.

A part is rejected when its score (``P(not normal)``, or a detector's best box) is at or
above the threshold. Rates are counted among the normal and among the defective images
apart and recombined at the line's base rate ``defect_rate``, so a validation set with a
different defect share than the line still gives the line's figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import norm

from workbench.errors import LoupeError
from workbench.metrics.stats import wilson_interval

#: Figures are per this many parts.
PER = 10_000
#: Fewest normal and fewest defective images a stated point needs.
MIN_EACH = 8
#: Most score midpoints added to the 0.01 grid of thresholds.
MAX_THRESHOLDS = 500
#: Columns of :func:`cost_table`.
TABLE_COLUMNS = ("threshold", "escapes", "escapes_low", "escapes_high", "false_rejects",
                 "false_rejects_low", "false_rejects_high", "cost", "cost_low", "cost_high",
                 "cost_smoothed")


class NotEnoughEvidenceError(LoupeError, ValueError):
    """Too few normal or defective images to state a cost; the message gives the counts
    and how many images an interval of a stated width needs."""


def images_for_width(half_width: float, *, rate: float = 0.5, confidence: float = 0.95) -> int:
    """Images needed for a ``±half_width`` interval on a proportion near ``rate``."""
    z = norm.ppf(0.5 + confidence / 2)
    return int(np.ceil(z * z * rate * (1 - rate) / half_width ** 2))


def check_evidence(n_normal: int, n_defect: int, *, what: str = "out-of-fold predictions"
                   ) -> None:
    """Raise :class:`NotEnoughEvidenceError` when either side has fewer than :data:`MIN_EACH`."""
    if n_normal >= MIN_EACH and n_defect >= MIN_EACH:
        return
    short = [f"{n} {side} image{'s' if n != 1 else ''}" for n, side in
             ((n_defect, "defective"), (n_normal, "normal")) if n < MIN_EACH]
    raise NotEnoughEvidenceError(
        f"the {what} hold {n_normal} normal and {n_defect} defective images: "
        f"only {' and '.join(short)} to choose a threshold (at least {MIN_EACH} of each). "
        f"A ±10-point 95 % interval on the escape and false-reject rates needs about "
        f"{images_for_width(0.10)} images of each kind (±5 points: "
        f"{images_for_width(0.05)}); label more, then train again.")


@dataclass(frozen=True)
class Costs:
    """The cost of one escape (per defect class) and of one false reject."""

    escape: dict[str, float]
    false_reject: float

    @classmethod
    def parse(cls, costs: Mapping[str, object], defect_classes: list[str]) -> Costs:
        """From ``{"escape": 50 or {class: cost}, "false_reject": 1}``; raises ValueError
        naming the key at fault."""
        if not isinstance(costs, Mapping):
            raise ValueError('costs must be a dict such as {"escape": 50, "false_reject": 1}')
        unknown = set(costs) - {"escape", "false_reject"}
        if unknown or not {"escape", "false_reject"} <= set(costs):
            raise ValueError('costs needs exactly the keys "escape" and "false_reject" '
                             f"(got {sorted(map(str, costs))})")
        false_reject = _positive(costs["false_reject"], 'costs["false_reject"]')
        escape = costs["escape"]
        if isinstance(escape, Mapping):
            stray = sorted(set(escape) - set(defect_classes))
            if stray:
                raise ValueError(f'costs["escape"] names {stray}, which are not defect classes '
                                 f"of this version ({defect_classes})")
            missing = [c for c in defect_classes if c not in escape]
            if missing:
                raise ValueError(f'costs["escape"] gives no cost for the defect classes '
                                 f"{missing}; give every defect class one, or one number")
            per_class = {c: _positive(escape[c], f'costs["escape"]["{c}"]')
                         for c in defect_classes}
        else:
            one = _positive(escape, 'costs["escape"]')
            per_class = dict.fromkeys(defect_classes, one)
        return cls(per_class, false_reject)

    def to_json(self) -> dict[str, object]:
        values = set(self.escape.values())
        escape: object = values.pop() if len(values) == 1 else dict(self.escape)
        return {"escape": escape, "false_reject": self.false_reject}


def _positive(value: object, name: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a number > 0 (a cost per mistake), got {value!r}")
    return number


def default_thresholds(scores: ArrayLike) -> np.ndarray:
    """A 0.01 grid on [0, 1] with the midpoints between neighbouring scores (every place
    where a decision changes; at most :data:`MAX_THRESHOLDS` of them), and 1.0 + ε (reject
    nothing)."""
    scores = np.unique(np.clip(np.asarray(scores, dtype=np.float64), 0, 1))
    middles = (scores[1:] + scores[:-1]) / 2 if len(scores) > 1 else np.zeros(0)
    if len(middles) > MAX_THRESHOLDS:  # many images: every quantile step, not every image
        middles = middles[np.linspace(0, len(middles) - 1, MAX_THRESHOLDS).astype(int)]
    return np.unique(np.concatenate([np.linspace(0, 1, 101), middles, [1.0 + 1e-9]]))


def cost_table(scores: ArrayLike, given: ArrayLike, *, normal: str, costs: Costs,
               defect_rate: float | None = None, thresholds: ArrayLike | None = None,
               n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Escapes, false rejects and cost per :data:`PER` parts at each threshold.

    Parameters
    ----------
    scores : array-like, shape (n,)
        The defect score of each image (reject when ``score >= threshold``).
    given : array-like of str, shape (n,)
        Each image's class; ``normal`` is the good one, every other a defect.
    defect_rate : float, optional
        The line's share of defective parts, in (0, 1); the images' share by default.
    n_boot : int
        Bootstrap resamples (normal and defective images resampled apart); the rate
        intervals are never narrower than Wilson's score interval (so a count of zero
        still has an upper bound).

    Returns
    -------
    pd.DataFrame
        :data:`TABLE_COLUMNS`, one row per threshold, ascending; ``cost_smoothed`` is
        :func:`smoothed_cost`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    given = np.asarray(given).astype(str)
    if scores.shape != given.shape:
        raise ValueError(f"scores and given differ in length ({len(scores)} vs {len(given)})")
    is_normal = given == normal
    n_normal, n_defect = int(is_normal.sum()), int((~is_normal).sum())
    check_evidence(n_normal, n_defect)
    rate = n_defect / len(given) if defect_rate is None else float(defect_rate)
    t = np.asarray(default_thresholds(scores) if thresholds is None else thresholds, float)
    reject = scores[:, None] >= t[None, :]                         # (n, T)
    weight = np.array([costs.escape.get(g, 0.0) for g in given[~is_normal]])
    passed_defects = ~reject[~is_normal]                           # (n_defect, T)
    false_rejects = reject[is_normal]                              # (n_normal, T)

    def figures(w_normal: np.ndarray, w_defect: np.ndarray) -> tuple[np.ndarray, ...]:
        miss = (w_defect @ passed_defects) / n_defect
        miss_cost = (w_defect * weight) @ passed_defects / n_defect
        fr = (w_normal @ false_rejects) / n_normal
        return (PER * rate * miss, PER * (1 - rate) * fr,
                PER * (rate * miss_cost + (1 - rate) * fr * costs.false_reject))

    escapes, frs, cost = figures(np.ones(n_normal), np.ones(n_defect))
    rng = np.random.default_rng(seed)
    boot_normal = rng.multinomial(n_normal, np.full(n_normal, 1 / n_normal), size=n_boot)
    boot_defect = rng.multinomial(n_defect, np.full(n_defect, 1 / n_defect), size=n_boot)
    b_escapes, b_frs, b_cost = figures(boot_normal.astype(float), boot_defect.astype(float))
    tail = (1 - confidence) / 2
    table = {"threshold": t, "escapes": escapes, "false_rejects": frs, "cost": cost}
    for name, boot in (("escapes", b_escapes), ("false_rejects", b_frs), ("cost", b_cost)):
        table[f"{name}_low"] = np.quantile(boot, tail, axis=0)
        table[f"{name}_high"] = np.quantile(boot, 1 - tail, axis=0)
    for name, counts, n, share in (
            ("escapes", passed_defects.sum(axis=0), n_defect, rate),
            ("false_rejects", false_rejects.sum(axis=0), n_normal, 1 - rate)):
        low, high = wilson_interval(counts, n, confidence=confidence)
        table[f"{name}_low"] = np.minimum(table[f"{name}_low"], PER * share * low)
        table[f"{name}_high"] = np.maximum(table[f"{name}_high"], PER * share * high)
    table["cost_smoothed"] = smoothed_cost(scores, given, t, normal=normal, costs=costs,
                                           defect_rate=rate)
    return pd.DataFrame(table)[list(TABLE_COLUMNS)]


def best_threshold(table: pd.DataFrame, column: str = "cost") -> float:
    """The threshold of least ``column`` (``"cost"``: on the labelled images as they are;
    ``"cost_smoothed"``: with their scores spread, what :func:`~workbench.operating_point`
    chooses); where several tie, the middle one of the widest run of tied thresholds (the
    choice least sensitive to a shifted score)."""
    cost = table[column].to_numpy()
    best = np.isclose(cost, cost.min(), rtol=1e-9, atol=1e-9)
    runs, start = [], None
    for i, flag in enumerate([*best, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((i - start, start, i - 1))
            start = None
    _, first, last = max(runs)
    return float(table["threshold"].iloc[(first + last) // 2])


def smoothed_cost(scores: ArrayLike, given: ArrayLike, thresholds: ArrayLike, *, normal: str,
                  costs: Costs, defect_rate: float | None = None) -> np.ndarray:
    """Expected cost per :data:`PER` parts at each threshold with every score spread by a
    Gaussian kernel in logit space (Silverman's bandwidth, per side): the chance that a
    part *like* a labelled one falls on the other side, not only the labelled one itself.
    A threshold just below the lowest defect scored is then no longer free."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 1e-6, 1 - 1e-6)
    given = np.asarray(given).astype(str)
    is_normal = given == normal
    rate = float((~is_normal).mean()) if defect_rate is None else float(defect_rate)
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-6, 1 - 1e-6)
    logit_t = np.log(t / (1 - t))

    def below(side: np.ndarray) -> np.ndarray:  # (n_side, T): P(a part like it scores < t)
        z = np.log(side / (1 - side))
        spread = np.std(z) if len(z) > 1 else 1.0
        width = max(1.06 * spread * len(z) ** -0.2, 0.05)
        return norm.cdf((logit_t[None, :] - z[:, None]) / width)

    weight = np.array([costs.escape.get(g, 0.0) for g in given[~is_normal]])
    miss_cost = (weight @ below(scores[~is_normal])) / max(int((~is_normal).sum()), 1)
    false_reject = 1.0 - below(scores[is_normal]).mean(axis=0)
    cost = PER * (rate * miss_cost + (1 - rate) * false_reject * costs.false_reject)
    cost[np.asarray(thresholds, dtype=np.float64) > 1] = PER * rate * float(weight.mean())
    return cost


def realised(scores: ArrayLike, given: ArrayLike, threshold: float, *, normal: str,
             costs: Costs, defect_rate: float | None = None) -> dict[str, float]:
    """Escapes, false rejects and cost per :data:`PER` parts that ``threshold`` gives on
    labelled images (no interval): for checking a point on images it was not chosen on."""
    scores = np.asarray(scores, dtype=np.float64)
    given = np.asarray(given).astype(str)
    is_normal = given == normal
    if is_normal.all() or not is_normal.any():
        raise ValueError("realised needs normal and defective images")
    rate = float((~is_normal).mean()) if defect_rate is None else float(defect_rate)
    passed = scores[~is_normal] < threshold
    weight = np.array([costs.escape.get(g, 0.0) for g in given[~is_normal]])
    fr = float((scores[is_normal] >= threshold).mean())
    return {"escapes": PER * rate * float(passed.mean()), "false_rejects": PER * (1 - rate) * fr,
            "cost": PER * (rate * float((weight * passed).mean())
                           + (1 - rate) * fr * costs.false_reject)}

__all__ = ["MIN_EACH", "PER", "TABLE_COLUMNS", "Costs", "NotEnoughEvidenceError", "best_threshold",
           "check_evidence", "cost_table", "default_thresholds", "images_for_width",
           "realised", "smoothed_cost"]
