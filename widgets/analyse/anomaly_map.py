"""``AnomalyMap``: where an anomaly version sees something wrong, one image at a time.

Render-only: the scores come from ``mv.predict``, the heatmap from ``mv.heatmap`` and the
explanation from ``mv.nearest_normal`` (the image's highest-scoring patch and the normal
patch nearest to it). Images are shown highest score first; **Previous** / **Next** (Tab
to them, Enter or space) move through them, **Heatmap** switches the overlay off and on.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
from PIL import Image, ImageDraw

from workbench.text import escape_html

if TYPE_CHECKING:
    from workbench.train.versions import ModelVersion

#: Displayed width of the image and its overlay, in pixels.
WIDTH = 320
#: Colour of the overlay and of the patch boxes.
HOT = (220, 30, 30)


def overlay(image: Image.Image, values: np.ndarray, *, top: float,
            box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """``image`` with ``values`` (its height x width) laid over in red, opaque at ``top``
    and beyond, and ``box`` outlined."""
    base = image.convert("RGB")
    alpha = np.clip(np.asarray(values, dtype=np.float32) / max(top, 1e-12), 0, 1) * 0.7
    red = np.empty((*alpha.shape, 3), dtype=np.float32)
    red[...] = HOT
    mixed = np.asarray(base, dtype=np.float32) * (1 - alpha[..., None]) + red * alpha[..., None]
    out = Image.fromarray(mixed.astype(np.uint8))
    if box is not None:
        ImageDraw.Draw(out).rectangle(box, outline=HOT, width=max(1, out.width // 160))
    return out


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _shown(image: Image.Image, width: int = WIDTH) -> Image.Image:
    """Scaled to ``width`` pixels wide (nearest: pixels stay pixels when small)."""
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.NEAREST)


class AnomalyMap(widgets.VBox):
    """An anomaly version's images with their heatmap, score and nearest normal patch.

    Parameters
    ----------
    version : ModelVersion
        An anomaly version (``wb.train(p, task="anomaly")``).
    images : sequence of str, optional
        Image files; default: the project's images the version did not learn from (up to
        ``limit``), highest score first.
    limit : int, default 100
    """

    def __init__(self, version: ModelVersion, images: Sequence[str] | None = None, *,
                 limit: int = 100) -> None:
        if version.task != "anomaly":
            raise ValueError(f"AnomalyMap shows an anomaly version; {version.name!r} is a "
                             f"{version.task} model")
        self.version = version
        if images is None:
            images = self._not_learned(limit)
        if not images:
            raise ValueError("no image to show: pass images=[...] (file paths)")
        frame = version.predict([str(p) for p in images], progress=False)
        self.frame = frame.sort_values("anomaly_score", ascending=False,
                                       kind="stable").reset_index(drop=True)
        self.index = 0
        self.header = widgets.HTML()
        self.picture = widgets.Image(format="png", layout=widgets.Layout(width=f"{WIDTH}px"))
        self.normal = widgets.Image(format="png", layout=widgets.Layout(width="160px"))
        self.normal_note = widgets.HTML()
        self.previous = widgets.Button(description="Previous", icon="arrow-left",
                                       tooltip="the image with the next higher score")
        self.next = widgets.Button(description="Next", icon="arrow-right",
                                   tooltip="the image with the next lower score")
        self.toggle = widgets.ToggleButton(value=True, description="Heatmap", icon="fire",
                                           tooltip="show or hide where it looks wrong")
        self.previous.on_click(lambda _: self.show(self.index - 1))
        self.next.on_click(lambda _: self.show(self.index + 1))
        self.toggle.observe(lambda _: self.show(self.index), names="value")
        nearest = widgets.VBox([widgets.HTML("<b>nearest normal patch</b>"), self.normal,
                                self.normal_note])
        super().__init__([
            self.header,
            widgets.HBox([self.previous, self.next, self.toggle]),
            widgets.HBox([self.picture, nearest], layout=widgets.Layout(gap="16px")),
        ])
        self.add_class("loupe-anomaly-map")
        self.show(0)

    def _not_learned(self, limit: int) -> list[str]:
        import workbench as wb

        project = wb.Project.open(self.version.project_name)
        learned = set(self.version.snapshot().query("fold >= 0")["filepath"])
        return [f for f in project.dataset.values("filepath") if f not in learned][:limit]

    @property
    def current(self) -> dict[str, Any]:
        """The shown image's row: filepath, anomaly_score, label, confidence, heatmap."""
        return self.frame.iloc[self.index].to_dict()

    def show(self, index: int) -> None:
        """Show image ``index`` (0 = highest score), clamped to the list."""
        self.index = int(np.clip(index, 0, len(self.frame) - 1))
        row = self.current
        threshold = float(self.version.metrics["threshold"])
        path = row["filepath"]
        found = self.version.nearest_normal(path)
        with Image.open(path) as image:
            picture = image.convert("RGB")
        if self.toggle.value:
            picture = overlay(picture, self.version.heatmap(path), top=2 * threshold,
                              box=found["box"])
        else:
            ImageDraw.Draw(picture).rectangle(found["box"], outline=HOT)
        self.picture.value = _png(_shown(picture))
        verdict = "anomaly" if row["label"] == "anomaly" else f"normal ({row['label']})"
        self.header.value = (
            f'<div class="loupe-anomaly-header"><b>{escape_html(Path(path).name)}</b> · '
            f"image {self.index + 1} of {len(self.frame)} · score "
            f"<b>{row['anomaly_score']:.3g}</b>, {row['anomaly_score'] / threshold:.2f}x "
            f"the threshold {threshold:.3g} → <b>{escape_html(verdict)}</b></div>")
        if found["normal_filepath"] is None:
            self.normal.value = b""
            self.normal_note.value = "<i>this version did not keep where its patches came from</i>"
        else:
            with Image.open(found["normal_filepath"]) as normal:
                crop = normal.convert("RGB").crop(found["normal_box"])
            self.normal.value = _png(_shown(crop, 160))
            source = escape_html(Path(found["normal_filepath"]).name)
            self.normal_note.value = (f"from <code>{source}</code>: the closest thing the "
                                      "good parts have")
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index == len(self.frame) - 1


__all__ = ["AnomalyMap", "overlay"]
