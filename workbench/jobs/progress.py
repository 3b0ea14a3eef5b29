"""A training's progress, read from the progress bars it opens.

The trainers report through ``tqdm`` bars: ``hashing`` / ``embedding (…)`` / ``decoding``
(images), ``folds`` (unit ``fold``), one bar per fold's fine-tune (``fold i/k``, unit
``epoch``) and ``final model`` (unit ``epoch``). tqdm keeps the open bars of a process in
``tqdm._instances``; :class:`BarProgress` reads them from another thread and turns them
into one figure (images 0–10 %, folds 10–90 %, the final model 90–100 %) that never goes
back, plus the stage in words and a log line per finished epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm


@dataclass(frozen=True)
class Bar:
    """What one open bar says."""

    desc: str
    unit: str
    n: float
    total: float | None

    @property
    def share(self) -> float:
        """Done share of this bar (0 without a total)."""
        return min(1.0, self.n / self.total) if self.total else 0.0

    def __str__(self) -> str:
        total = "?" if self.total is None else f"{self.total:g}"
        return f"{self.desc} {self.n:g}/{total} {self.unit}".strip()


def open_bars() -> list[Bar]:
    """The bars open in this process, oldest first."""
    with tqdm.get_lock():
        bars = sorted(tqdm._instances, key=lambda bar: getattr(bar, "pos", 0))
    return [Bar(str(bar.desc or ""), str(bar.unit or ""), float(bar.n),
                None if bar.total is None else float(bar.total)) for bar in bars]


class BarProgress:
    """Progress of one training, from successive looks at its bars."""

    def __init__(self, start: float = 0.0) -> None:
        self.progress = float(start)  # a resumed job goes on from where it was
        self.folds: Bar | None = None
        self.final_started = False
        self._epochs: dict[str, float] = {}

    def look(self, bars: list[Bar] | None = None) -> tuple[float, str, list[str]]:
        """Progress (0–0.99 until done), the stage in words, and new log lines."""
        bars = open_bars() if bars is None else bars
        lines = []
        images = next((b for b in bars if b.unit == "image"), None)
        epochs = next((b for b in bars if b.unit == "epoch"), None)
        for bar in bars:
            if bar.unit == "fold":
                self.folds = bar
        if epochs is not None:
            if not epochs.desc.startswith("fold"):
                self.final_started = True
            if epochs.n > self._epochs.get(epochs.desc, 0):
                lines.append(f"{epochs.desc}: epoch {epochs.n:g} of at most "
                             f"{epochs.total or 0:g} done")
                self._epochs[epochs.desc] = epochs.n
        if self.final_started:
            estimate = 0.9 + 0.1 * (epochs.share if epochs else 1.0)
        elif self.folds is not None and self.folds.total:
            inner = epochs.share if epochs is not None else 0.0
            estimate = 0.1 + 0.8 * min(1.0, (self.folds.n + inner) / self.folds.total)
        elif images is not None:
            estimate = 0.1 * images.share
        else:
            estimate = self.progress
        self.progress = max(self.progress, min(0.99, estimate))
        stage = "; ".join(str(b) for b in bars if b.unit in ("image", "fold", "epoch"))
        return self.progress, stage, lines


__all__ = ["Bar", "BarProgress", "open_bars"]
