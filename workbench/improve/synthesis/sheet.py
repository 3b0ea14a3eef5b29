"""Contact sheet: a grid of images with row labels and optional column headers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["contact_sheet"]

_BACKGROUND = (24, 24, 24)
_INK = (230, 230, 230)


def _tile(image: np.ndarray, size: int | None) -> Image.Image:
    """RGB tile from a uint8 grey/colour image or a bool mask, resized to ``size`` px high."""
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(
            f"contact_sheet: images must be uint8 (H, W), (H, W, 3) or bool masks, got "
            f"dtype {arr.dtype} shape {arr.shape}."
        )
    tile = Image.fromarray(arr).convert("RGB")
    if size is not None and tile.height != size:
        width = max(1, round(tile.width * size / tile.height))
        resample = Image.Resampling.NEAREST if np.asarray(image).dtype == bool else None
        tile = tile.resize((width, size), resample or Image.Resampling.BICUBIC)
    return tile


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    labels: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    tile: int | None = 128,
) -> Image.Image:
    """Tile images in a grid, one labelled row per entry of ``rows``.

    Parameters
    ----------
    rows : sequence of sequences of ndarray
        Images per row: uint8 ``(H, W)`` or ``(H, W, 3)``, or bool masks (drawn white).
    labels : sequence of str
        One label per row, drawn left of it.
    columns : sequence of str, optional
        Column headers drawn above the first row.
    tile : int or None, default=128
        Height every image is resized to (masks with nearest neighbour); ``None`` keeps
        sizes and uses the largest as the cell.

    Returns
    -------
    PIL.Image.Image
        RGB contact sheet.

    Raises
    ------
    ValueError
        If ``rows`` is empty, ``labels`` does not match it, or an image is not uint8/bool.
    """
    if not rows or not any(len(r) for r in rows):
        raise ValueError("contact_sheet: rows must hold at least one image.")
    if len(labels) != len(rows):
        raise ValueError(
            f"contact_sheet: labels must give one label per row, got {len(labels)} labels "
            f"for {len(rows)} rows."
        )
    if tile is not None and tile < 8:
        raise ValueError(f"contact_sheet: tile must be >= 8 px or None, got {tile!r}.")
    tiles = [[_tile(im, tile) for im in row] for row in rows]
    cell_w = max(t.width for row in tiles for t in row)
    cell_h = max(t.height for row in tiles for t in row)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max(probe.textlength(str(s), font=font) for s in labels)) + 10
    head = 16 if columns else 0
    pad = 3
    n_cols = max(len(row) for row in tiles)
    sheet = Image.new(
        "RGB",
        (label_w + n_cols * (cell_w + pad) + pad, head + len(tiles) * (cell_h + pad) + pad),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(columns or ()):
        x = label_w + pad + j * (cell_w + pad)
        draw.text((x + 2, 3), str(text), fill=_INK, font=font)
    for i, (row, text) in enumerate(zip(tiles, labels, strict=True)):
        y = head + pad + i * (cell_h + pad)
        draw.text((5, y + cell_h // 2 - 6), str(text), fill=_INK, font=font)
        for j, t in enumerate(row):
            sheet.paste(t, (label_w + pad + j * (cell_w + pad), y))
    return sheet
