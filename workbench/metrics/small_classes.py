"""Small classes said out loud: a per-class figure on a handful of images is a guess.

>>> small_class_notes(["ok", "crazing"], n=[40, 3], correct=[39, 2])
   class  n  recall_low  recall_high  too_few  note
0     ok 40        0.87         1.00    False  None
1 crazing 3        0.21         0.94     True  'crazing' has only 3 labelled images: ...

A class is too small to judge when it has fewer than :data:`MIN_IMAGES` held-out images or
the 95 % Wilson interval of its recall is wider than :data:`MAX_INTERVAL_WIDTH` (cleanlab
#641: a class of a few images cannot be audited).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.metrics.stats import wilson_interval

#: Fewer held-out images of a class than this, and its figures are not shown bare.
MIN_IMAGES = 10
#: A recall interval wider than this (95 %, Wilson) does not mean much either.
MAX_INTERVAL_WIDTH = 0.3


def small_class_notes(classes: Sequence[str], *, n: Sequence[int],
                      correct: Sequence[int]) -> pd.DataFrame:
    """Per class: ``n`` held-out images, the 95 % interval of ``correct / n`` (recall),
    ``too_few`` and a ``note`` in words for the classes too small to judge (None otherwise).
    """
    n_arr = np.asarray(n, dtype=int)
    correct_arr = np.asarray(correct, dtype=int)
    if len(n_arr) != len(classes) or len(correct_arr) != len(classes):
        raise ValueError(f"n and correct need one entry per class ({len(classes)}); got "
                         f"{len(n_arr)} and {len(correct_arr)}.")
    low, high = wilson_interval(correct_arr, n_arr)
    too_few = (n_arr < MIN_IMAGES) | (high - low > MAX_INTERVAL_WIDTH)
    notes = [_note(c, k, ok, lo, hi) if few else None for c, k, ok, lo, hi, few in
             zip(classes, n_arr, correct_arr, low, high, too_few, strict=True)]
    return pd.DataFrame({"class": list(classes), "n": n_arr, "recall_low": low,
                         "recall_high": high, "too_few": too_few,
                         "note": pd.Series(notes, dtype=object)})


def _note(name: str, n: int, correct: int, low: float, high: float) -> str:
    if n == 0:
        return f"{name!r} has no held-out images: nothing here says how well it is recognised."
    more = max(MIN_IMAGES - n, 0)
    label_more = f"; label {more} more for a figure worth reading" if more else ""
    return (f"{name!r} has only {n} held-out image{'s' if n != 1 else ''}: its recall "
            f"{correct / n:.2f} could be anywhere from {low:.2f} to {high:.2f} (95 %)"
            f"{label_more}.")


__all__ = ["MAX_INTERVAL_WIDTH", "MIN_IMAGES", "small_class_notes"]
