"""Small JPEG thumbnails of project images, cached on disk.

A thumbnail is keyed by the image's absolute path, its modification time and the
requested size, so editing or replacing a file produces a fresh thumbnail while an
unchanged file is read once and then served from the cache. Cache files are written
atomically (a temporary file in the same folder, then :func:`os.replace`), so a reader in
another process (a second Voila kernel) never sees half a JPEG.

:func:`full_image` reads one image for a full-size view (the lightbox of the widgets): the
file as stored when a browser can show it, else upright and capped at 2048 px, never cached.

Pure core: no widget or display imports; the widgets turn the bytes into ``<img>`` tags.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from workbench.store.ingest.images import to_native_mode

#: JPEG quality of cached thumbnails (small files, no visible blocking at 96 px).
JPEG_QUALITY = 85
#: Largest thumbnail side accepted, in pixels.
MAX_SIZE = 2048
#: Decoding and resizing first reduce by whole factors down to this multiple of the target
#: size, then resample (Pillow's ``thumbnail`` default: fast, no visible loss at 96 px).
REDUCING_GAP = 2
#: Bumped when the rendering changes, so old cache entries are not reused.
_CACHE_VERSION = "2"
_ORIENTATION = 0x0112


def thumbnail(path: str | Path, *, size: int = 96, cache_dir: Path) -> bytes:
    """JPEG bytes of a thumbnail of an image, from the disk cache when possible.

    Parameters
    ----------
    path : str or Path
        The image file (any format Pillow reads; EXIF orientation is applied, transparency
        is flattened onto white).
    size : int, default 96
        Length of the thumbnail's longest side in pixels; the aspect ratio is kept.
    cache_dir : Path
        Folder for cached thumbnails (created if missing), e.g.
        ``project.folder / "thumbnails"``.

    Returns
    -------
    bytes
        A baseline JPEG (greyscale images stay greyscale).

    Raises
    ------
    ValueError
        If ``size`` is not an integer between 1 and :data:`MAX_SIZE`.
    FileNotFoundError
        If ``path`` does not exist.
    PIL.UnidentifiedImageError
        If ``path`` is not an image Pillow can read.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"thumbnail size must be an integer from 1 to {MAX_SIZE} pixels, "
                         f"got {size!r}")
    source = Path(path).expanduser().absolute()
    try:
        stat = source.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot make a thumbnail: image {str(source)!r} does not "
                                "exist (was it moved or deleted after import?)") from None
    cache_dir = Path(cache_dir)
    cached = cache_dir / f"{_cache_key(source, stat.st_mtime_ns, size)}.jpg"
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    data = _render(source, size)
    _write_atomically(cached, data)
    return data


def thumbnail_data_uri(path: str | Path, *, size: int = 96, cache_dir: Path) -> str:
    """A thumbnail as a ``data:image/jpeg;base64,…`` URI, ready for an ``<img src>``.

    Parameters are those of :func:`thumbnail`.
    """
    data = thumbnail(path, size=size, cache_dir=cache_dir)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def draw_boxes(data: bytes, boxes: Sequence[dict], *, width: int = 2) -> bytes:
    """Draw boxes on a thumbnail (JPEG bytes in, JPEG bytes out).

    Each box is a dict with ``x``, ``y``, ``w``, ``h`` (relative to the image, as FiftyOne
    stores them), ``color`` (any colour Pillow knows, e.g. ``"#0072B2"``) and optionally
    ``dashed`` (a suggestion rather than a given box) and ``text`` (a caption drawn at the
    box's top-left corner). Boxes with a missing coordinate are skipped.
    """
    from PIL import ImageDraw

    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    draw = ImageDraw.Draw(image)
    side_w, side_h = image.size
    for box in boxes:
        coords = [box.get(k) for k in ("x", "y", "w", "h")]
        if any(c is None or c != c for c in coords):  # None or NaN
            continue
        x, y, w, h = (float(c) for c in coords)
        left, top = x * side_w, y * side_h
        right, bottom = (x + w) * side_w - 1, (y + h) * side_h - 1
        color = box.get("color", "#E69F00")
        if box.get("dashed"):
            _dashed_rectangle(draw, (left, top, right, bottom), color, width)
        else:
            draw.rectangle((left, top, right, bottom), outline=color, width=width)
        if box.get("text"):
            draw.text((left + 2, max(top - 11, 0)), str(box["text"]), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def boxed_data_uri(path: str | Path, boxes: Sequence[dict], *, size: int = 96,
                   cache_dir: Path) -> str:
    """A thumbnail with boxes drawn on it (see :func:`draw_boxes`) as a data URI."""
    data = draw_boxes(thumbnail(path, size=size, cache_dir=cache_dir), boxes,
                      width=max(1, size // 128 + 1))
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def _dashed_rectangle(draw: object, rect: tuple[float, float, float, float], color: str,
                      width: int, dash: int = 5) -> None:
    left, top, right, bottom = rect
    for x0, y0, x1, y1 in ((left, top, right, top), (right, top, right, bottom),
                           (right, bottom, left, bottom), (left, bottom, left, top)):
        length = max(abs(x1 - x0), abs(y1 - y0))
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):
            a, b = i / steps, min(i + 1, steps) / steps
            draw.line((x0 + (x1 - x0) * a, y0 + (y1 - y0) * a,
                       x0 + (x1 - x0) * b, y0 + (y1 - y0) * b), fill=color, width=width)


def build_cache(paths: Sequence[str | Path], *, size: int = 96, cache_dir: Path,
                workers: int | None = None, progress: bool = False) -> dict[str, str]:
    """Make sure every image has a cached thumbnail, several at a time.

    Pillow releases the GIL while it decodes, resizes and encodes, so threads use every
    core. Unreadable files do not stop the others.

    Returns
    -------
    dict of str to str
        Path → reason, for the images that could not be thumbnailed (empty when all were).
    """
    from tqdm.auto import tqdm

    paths = [str(path) for path in paths]
    workers = workers or min(8, os.cpu_count() or 1)
    failed: dict[str, str] = {}

    def one(path: str) -> None:
        try:
            thumbnail(path, size=size, cache_dir=cache_dir)
        except (OSError, ValueError) as err:  # UnidentifiedImageError is an OSError
            failed[path] = str(err)

    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(paths), desc="thumbnails", unit="img", disable=not progress,
                 leave=False) as bar:
        for _ in pool.map(one, paths):
            bar.update()
    return failed


def data_uris(paths: Sequence[str | Path], *, size: int = 96, cache_dir: Path,
              workers: int | None = None) -> list[str | None]:
    """:func:`thumbnail_data_uri` of many images (threads for cache misses); None for an
    image that cannot be read."""
    paths = [str(path) for path in paths]
    if not paths:
        return []

    def one(path: str) -> str | None:
        try:
            return thumbnail_data_uri(path, size=size, cache_dir=cache_dir)
        except (OSError, ValueError):
            return None

    if len(paths) == 1:
        return [one(paths[0])]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, paths))


def cache_path(path: str | Path, *, size: int = 96, cache_dir: Path) -> Path:
    """Where the thumbnail of ``path`` at ``size`` is (or would be) cached."""
    source = Path(path).expanduser().absolute()
    return Path(cache_dir) / f"{_cache_key(source, source.stat().st_mtime_ns, size)}.jpg"


def _cache_key(source: Path, mtime_ns: int, size: int) -> str:
    text = "\0".join((_CACHE_VERSION, str(source), str(mtime_ns), str(size)))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _render(source: Path, size: int) -> bytes:
    with Image.open(source) as image:
        orientation = image.getexif().get(_ORIENTATION, 1)
        if image.format == "JPEG":  # decode at a reduced scale (DCT scaling) when large
            image.draft(None, (size * REDUCING_GAP, size * REDUCING_GAP))
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        image = to_native_mode(image)
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        width, height = image.size
        if max(width, height) > size:
            image.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
        else:  # small images are enlarged: every tile of a grid is the same size
            scale = size / max(width, height)
            image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                 Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        tmp.chmod(0o644)  # mkstemp makes it owner-only; thumbnails are not secret
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: Longest side of a full-size view sent to a browser; larger images are scaled down.
FULL_SIZE_CAP = 2048
#: Formats every browser shows, sent as they are when no scaling or rotation is needed.
_BROWSER_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif",
                    "WEBP": "image/webp"}
_BROWSER_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}


@dataclass(frozen=True)
class FullImage:
    """An image as sent to a browser at full resolution (or scaled to the cap).

    ``data`` is the encoded file (``mime``); ``width`` x ``height`` is what it shows,
    ``original_width`` x ``original_height`` the file's own size (after EXIF rotation).
    """

    data: bytes
    mime: str
    width: int
    height: int
    original_width: int
    original_height: int

    @property
    def data_uri(self) -> str:
        """``data:<mime>;base64,…``, ready for an ``<img src>``."""
        return f"data:{self.mime};base64," + base64.b64encode(self.data).decode("ascii")

    @property
    def scaled(self) -> bool:
        """Whether the image was scaled down to the cap."""
        return (self.width, self.height) != (self.original_width, self.original_height)


def full_image(path: str | Path, *, max_side: int = FULL_SIZE_CAP) -> FullImage:
    """Read an image for a full-size view: the file's own bytes when a browser can show
    them as they are, else decoded, rotated upright, scaled to ``max_side`` on the long side
    and re-encoded (JPEG stays JPEG at quality 95, anything else becomes lossless PNG).

    Parameters
    ----------
    path : str or Path
        The image file.
    max_side : int, default FULL_SIZE_CAP
        Longest side sent, in pixels (1 to 16384); larger images are scaled down.

    Raises
    ------
    ValueError
        If ``max_side`` is not an integer from 1 to 16384.
    FileNotFoundError
        If ``path`` does not exist.
    PIL.UnidentifiedImageError
        If ``path`` is not an image Pillow can read.
    """
    if isinstance(max_side, bool) or not isinstance(max_side, int) \
            or not 1 <= max_side <= 16384:
        raise ValueError(f"full_image: max_side must be an integer from 1 to 16384 pixels, "
                         f"got {max_side!r}")
    source = Path(path).expanduser().absolute()
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot open image {str(source)!r}: it does not exist (was "
                                "it moved or deleted after import?)") from None
    with Image.open(io.BytesIO(raw)) as image:
        orientation = image.getexif().get(_ORIENTATION, 1)
        fmt, mode = image.format, image.mode
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        width, height = image.size
        if max(width, height) <= max_side and orientation == 1 and fmt in _BROWSER_FORMATS \
                and mode in _BROWSER_MODES:
            return FullImage(raw, _BROWSER_FORMATS[fmt], width, height, width, height)
        image = to_native_mode(image)
        if max(width, height) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if fmt == "JPEG":
            image.save(buffer, format="JPEG", quality=95)
            mime = "image/jpeg"
        else:
            image.save(buffer, format="PNG")
            mime = "image/png"
        return FullImage(buffer.getvalue(), mime, image.width, image.height, width, height)


def full_size_data_uri(path: str | Path, *, max_side: int = FULL_SIZE_CAP) -> str:
    """:func:`full_image` as a data URI."""
    return full_image(path, max_side=max_side).data_uri
