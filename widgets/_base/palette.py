"""One colour per class, the same in every widget (grid borders, chart bars, map points)."""

from __future__ import annotations

from collections.abc import Sequence

#: Colour-blind-safe categorical palette (Okabe–Ito, then Tableau 10 for more classes).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442",
           "#4E79A7", "#F28E2B", "#59A14F", "#B07AA1", "#FF9DA7", "#9C755F", "#BAB0AC")
#: Colour of a sample without a label.
UNLABELLED_COLOR = "#9E9E9E"


def label_colors(classes: Sequence[str]) -> dict[str, str]:
    """Class → hex colour, by the class's position in the project's class list.

    The project's class order is stable (new classes are appended), so a class keeps its
    colour across widgets, sessions and retrains. Beyond the palette, colours repeat.
    """
    return {label: PALETTE[index % len(PALETTE)] for index, label in enumerate(classes)}


def color_of(label: str | None, colors: dict[str, str]) -> str:
    """The colour of ``label``; grey for None or a label outside ``colors``."""
    return colors.get(label, UNLABELLED_COLOR) if label is not None else UNLABELLED_COLOR
