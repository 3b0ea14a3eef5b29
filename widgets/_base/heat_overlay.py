"""An anomaly heatmap PNG (``mv.predict``'s grey one, white at twice the threshold) as a
red, see-through overlay for a thumbnail."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

#: The overlay's colour, and its opacity where the heatmap is white.
RED = (220, 30, 30)
MOST_OPAQUE = 0.7


def overlay_uri(heatmap_png: str, size: int) -> str:
    """A PNG data URI: red wherever the heatmap is hot, transparent where normal, with the
    image's aspect ratio and its longest side at ``size`` pixels."""
    with Image.open(heatmap_png) as grey:
        grey = grey.convert("L")
        scale = size / max(grey.size)
        grey = grey.resize((max(1, round(grey.width * scale)),
                            max(1, round(grey.height * scale))), Image.Resampling.BILINEAR)
    alpha = (np.asarray(grey, dtype=np.float32) * MOST_OPAQUE).astype(np.uint8)
    rgba = np.empty((*alpha.shape, 4), dtype=np.uint8)
    rgba[..., :3] = RED
    rgba[..., 3] = alpha
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


__all__ = ["overlay_uri"]
