"""``Lightbox``: thumbnails open at full size, to zoom into and pan over.

A hidden anywidget (``static/lightbox.js``) put among the children of the box that shows
thumbnails (:func:`attach`). In the page it answers two kinds of thumbnail inside that
box:

- any element with ``data-loupe-open="<key>"`` (HTML galleries: :func:`thumb_attributes`
  writes the attribute, ``tabindex`` and a ``title`` with the whole caption): a click, Enter
  or space opens it;
- the tiles of a :class:`~widgets.label.grid.LabelingGrid` (a click there selects): the ⤢
  button on a tile, a double click, or Enter on the grid's focused tile opens it.

The browser asks for the key; Python reads the file on demand
(:func:`workbench.store.thumbnails.full_image`, capped at ``max_side`` on the long side) and
answers with a data URI, so a page never carries every full image up front. Only keys the
widget knows are opened (registered ones, or the project's sample ids through ``resolve``):
the browser cannot name a file.

In the lightbox: wheel or +/− zoom, drag or arrows pan, 0 fits, Esc or × closes (focus goes
back to the thumbnail).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import traitlets as t
from PIL import Image, UnidentifiedImageError

from widgets._base import STATIC
from workbench.store.thumbnails import FULL_SIZE_CAP, FullImage, draw_boxes, full_image
from workbench.text import escape_html

#: Class of the box whose thumbnails a lightbox answers (added by :func:`attach`).
SCOPE_CLASS = "loupe-lightbox-scope"


@dataclass(frozen=True)
class LightboxImage:
    """What a key opens: the file, its name and caption, and boxes to draw on it (dicts as
    :func:`workbench.store.thumbnails.draw_boxes` takes, relative coordinates)."""

    path: str
    name: str
    caption: str = ""
    boxes: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)


Resolver = Callable[[str], "LightboxImage | None"]


class Lightbox(anywidget.AnyWidget):
    """Opens the thumbnails of the box it is attached to at full size.

    Parameters
    ----------
    resolve : callable, optional
        ``resolve(key) -> LightboxImage | None`` for keys not registered with
        :meth:`register` (e.g. the sample ids of a grid's tiles).
    max_side : int, default 2048
        Longest side sent to the browser, in pixels; larger images are scaled down.
    """

    _esm = STATIC / "lightbox.js"
    _css = STATIC / "lightbox.css"

    max_side = t.Int(FULL_SIZE_CAP).tag(sync=True)

    def __init__(self, *, resolve: Resolver | None = None,
                 max_side: int = FULL_SIZE_CAP) -> None:
        if isinstance(max_side, bool) or not isinstance(max_side, int) \
                or not 64 <= max_side <= 16384:
            raise ValueError(f"Lightbox: max_side must be an integer from 64 to 16384 "
                             f"pixels, got {max_side!r}")
        super().__init__(max_side=max_side)
        self._resolve = resolve
        self._images: dict[str, LightboxImage] = {}
        self.on_msg(self._on_front_message)

    def register(self, key: str, path: str | Path, *, name: str | None = None,
                 caption: str = "", boxes: Sequence[Mapping[str, Any]] = ()) -> str:
        """Let the browser open ``path`` under ``key`` (returns the key)."""
        self._images[str(key)] = LightboxImage(str(path), name or Path(path).name,
                                               caption, tuple(boxes))
        return str(key)

    def clear(self) -> None:
        """Forget every registered key (a gallery was redrawn)."""
        self._images.clear()

    def message(self, key: str) -> dict[str, Any]:
        """What the browser is sent for ``key``: ``type`` "image" with ``src`` (data URI),
        ``name``, ``caption``, ``width``/``height`` (sent) and ``original_width``/
        ``original_height``; or ``type`` "image" with ``error`` (unknown key, unreadable
        file)."""
        key = str(key)
        found = self._images.get(key)
        if found is None and self._resolve is not None:
            found = self._resolve(key)
        if found is None:
            return {"type": "image", "key": key, "error": "this image is not available here "
                    "any more; redraw the thumbnails"}
        reply = {"type": "image", "key": key, "name": found.name, "caption": found.caption}
        try:
            image = full_image(found.path, max_side=self.max_side)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            return {**reply, "error": f"cannot read {found.name}: {err}"}
        if found.boxes:
            image = _with_boxes(image, found.boxes)
        return {**reply, "src": image.data_uri, "width": image.width, "height": image.height,
                "original_width": image.original_width,
                "original_height": image.original_height}

    def send_image(self, key: str) -> dict[str, Any]:
        """Send the full-size image of ``key`` to the browser (what a click asks for);
        returns the message sent."""
        reply = self.message(key)
        self.send(reply)
        return reply

    def _on_front_message(self, _widget: Any, content: Mapping[str, Any],
                          _buffers: Sequence[bytes]) -> None:
        if content.get("type") == "open":
            self.send_image(str(content.get("key", "")))


def attach(box: widgets.Box, lightbox: Lightbox) -> Lightbox:
    """Put ``lightbox`` last among ``box``'s children and let it answer the box's
    thumbnails; returns the lightbox."""
    box.children = (*box.children, lightbox)
    box.add_class(SCOPE_CLASS)
    return lightbox


def grid_lightbox(grid: Any, **kwargs: Any) -> Lightbox:
    """A lightbox for the tiles of a :class:`~widgets.label.grid.LabelingGrid`: a tile's
    sample id opens its file, captioned with its label and the grid's caption."""

    def resolve(sample_id: str) -> LightboxImage | None:
        found = grid.project.dataset.select([sample_id]).values("filepath") \
            if sample_id in grid.sample_ids else []
        if not found:
            return None
        item = next((i for i in grid.items if i.get("id") == sample_id), {})
        label = item.get("label") or "unlabelled"
        caption = f"label {label}" + (f" · {item['caption']}" if item.get("caption") else "")
        return LightboxImage(found[0], Path(found[0]).name, caption)

    return Lightbox(resolve=resolve, **kwargs)


def thumb_attributes(key: str, *, name: str, caption: str = "", size: int | None = None) -> str:
    """The attributes that make an HTML thumbnail open in the box's lightbox: the key,
    keyboard focus, a name for screen readers, the whole caption as a tooltip, and (with
    ``size``) a width that makes its caption wrap under the image."""
    title = f"{name} — {caption}" if caption else name
    width = f' style="width:{int(size)}px"' if size else ""
    return (f'data-loupe-open="{escape_html(str(key))}" tabindex="0" role="button" '
            f'aria-label="{escape_html(f"open {name} full size")}" '
            f'title="{escape_html(title)}"{width}')


def _with_boxes(image: FullImage, boxes: Sequence[Mapping[str, Any]]) -> FullImage:
    """``image`` with ``boxes`` drawn on it, lines thick enough to see at full size."""
    width = max(2, max(image.width, image.height) // 300)
    data = draw_boxes(image.data, [dict(box) for box in boxes], width=width)
    with Image.open(io.BytesIO(data)) as drawn:
        size = drawn.size
    return FullImage(data, "image/jpeg", *size, image.original_width, image.original_height)
