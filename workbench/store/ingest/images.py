"""Reading one image file safely: hash it, decode it fully, convert what models cannot read.

Every function here works on a single file and knows nothing of projects or FiftyOne, so
the checks are easy to test with real broken files. A file that cannot be used raises
:class:`ImageRejectedError` with a reason a person can act on.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from workbench.errors import LoupeError

#: Largest image accepted, in pixels (width × height). Larger files are treated as
#: decompression bombs: a few kilobytes on disk that would need gigabytes to decode.
MAX_PIXELS = 40_000_000

#: Largest image file read, in bytes (128 MiB: an uncompressed 8-bit RGB image at the pixel
#: limit fits). Checked before reading, so a 2 GB file named ``.jpg`` costs nothing; set
#: ``workbench.store.ingest.images.MAX_FILE_BYTES`` to read larger files.
MAX_FILE_BYTES = 128 * 1024 * 1024

#: What a path that is not a regular file is, for messages.
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))

#: Modes stored as they are; every other mode is converted to one of these.
NATIVE_MODES = ("L", "RGB")

_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "TIFF": "image/tiff",
         "WEBP": "image/webp", "GIF": "image/gif"}


class ImageRejectedError(LoupeError, ValueError):
    """A file that cannot become a sample; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckedImage:
    """What import needs to know about one readable image.

    ``converted`` holds the image to store instead of the original (and ``conversion``
    says why) when the original cannot be used as it is.
    """

    content_hash: str
    size_bytes: int
    width: int
    height: int
    mode: str
    mime_type: str
    converted: Image.Image | None = None
    conversion: str | None = None

    @property
    def num_channels(self) -> int:
        """Channels of the image as stored (1 for grey, 3 for colour)."""
        mode = self.converted.mode if self.converted is not None else self.mode
        return 1 if mode == "L" else 3


def read_bytes(path: Path, *, max_bytes: int | None = None) -> bytes:
    """Read a regular file whole, turning every OS failure into an :class:`ImageRejectedError`.

    Only regular files are opened (a FIFO would block forever, ``/dev/zero`` never ends, also
    behind a link), and only up to ``max_bytes`` (default :data:`MAX_FILE_BYTES`): the size
    is checked before reading, and again on the file actually opened.
    """
    limit = MAX_FILE_BYTES if max_bytes is None else max_bytes
    regular_file(path, max_bytes=limit)  # before opening: opening a device can block
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise _os_rejection(err) from None
    with os.fdopen(descriptor, "rb") as file:
        _check_regular(os.fstat(descriptor), limit)  # the file opened is the file checked
        try:
            data = file.read(limit + 1)
        except OSError as err:
            raise _os_rejection(err) from None
    if len(data) > limit:
        raise ImageRejectedError(_too_large(len(data), limit))
    if not data:
        raise ImageRejectedError("empty file (0 bytes)")
    return data


def regular_file(path: str | os.PathLike[str], *, max_bytes: int | None = None
                 ) -> os.stat_result:
    """Check, without opening it, that ``path`` (links followed) is a regular file of at most
    ``max_bytes`` (default :data:`MAX_FILE_BYTES`); :class:`ImageRejectedError` if not."""
    try:
        info = Path(path).stat()
    except OSError as err:
        raise _os_rejection(err) from None
    _check_regular(info, MAX_FILE_BYTES if max_bytes is None else max_bytes)
    return info


def _check_regular(info: os.stat_result, limit: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise ImageRejectedError("is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _SPECIAL_KINDS if test(info.st_mode)), "special")
        raise ImageRejectedError(f"not a regular file (FIFO/device/socket): {kind}; only "
                                 "regular image files are read")
    if info.st_size > limit:
        raise ImageRejectedError(_too_large(info.st_size, limit))


def _too_large(size: int, limit: int) -> str:
    return (f"file too large: {size / 2**20:,.1f} MiB exceeds the limit of "
            f"{limit / 2**20:,.1f} MiB per image "
            "(workbench.store.ingest.images.MAX_FILE_BYTES); not read")


def _os_rejection(err: OSError) -> ImageRejectedError:
    if isinstance(err, IsADirectoryError):
        return ImageRejectedError("is a folder, not a file")
    if isinstance(err, FileNotFoundError):
        return ImageRejectedError("cannot read: file not found (a dangling link?)")
    if isinstance(err, PermissionError):
        return ImageRejectedError("cannot read: permission denied")
    return ImageRejectedError(f"cannot read: {err.strerror or err}")


def content_hash(data: bytes) -> str:
    """SHA-256 of the file's bytes: the identity used to find duplicates."""
    return hashlib.sha256(data).hexdigest()


def check_image(data: bytes, *, max_pixels: int = MAX_PIXELS,
                thorough: bool = False, digest: str | None = None) -> CheckedImage:
    """Check that ``data`` is a complete image and decide whether it can be stored as it is.

    Parameters
    ----------
    data : bytes
        The whole file.
    max_pixels : int, keyword-only
        Images with more pixels are rejected before decoding (decompression bombs).
    thorough : bool, keyword-only
        Decode every pixel. The default check parses the header, runs Pillow's ``verify``
        (PNG chunk checksums) and checks that a JPEG's data ends with its end-of-image
        marker: the truncations that happen in practice, at a fraction of a full decode.
    digest : str, keyword-only, optional
        ``content_hash(data)`` when the caller has it already (not computed again).

    Returns
    -------
    CheckedImage
        With ``converted`` set for CMYK, 16-bit, palette, alpha and rotated-by-EXIF images.

    Raises
    ------
    ImageRejectedError
        For anything that is not a complete, decodable image of acceptable size.
    """
    digest = digest or content_hash(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejectedError("not an image (no image format recognises its contents)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejectedError(
            f"decompression bomb: more than {max_pixels:,} pixels declared in its header"
        ) from None
    except Exception as err:  # Pillow raises many types for malformed headers
        raise ImageRejectedError(f"corrupt image header: {err}") from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageRejectedError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageRejectedError(
            f"decompression bomb: {width}x{height} = {width * height:,} pixels exceeds the "
            f"limit of {max_pixels:,} (workbench.store.ingest.images.MAX_PIXELS)"
        )
    fmt = image.format or "PNG"
    try:
        if thorough:
            image.load()
        converted, why = _convert_if_needed(image)  # a conversion decodes every pixel
        if not thorough and converted is None:
            _quick_integrity_check(image, data)
    except Exception as err:
        raise ImageRejectedError(f"truncated or corrupt image data: {err}") from None
    return CheckedImage(
        content_hash=digest, size_bytes=len(data), width=(converted or image).width,
        height=(converted or image).height, mode=image.mode,
        mime_type=_MIME.get(fmt, f"image/{fmt.lower()}"), converted=converted, conversion=why,
    )


def _quick_integrity_check(image: Image.Image, data: bytes) -> None:
    """Cheap structural checks; a failed one raises (caught by the caller)."""
    if image.format == "JPEG":
        if b"\xff\xd9" not in data[-1024:]:
            raise OSError("JPEG data ends before its end-of-image marker (file cut short)")
    else:  # PNG: every chunk's checksum and the end chunk; other formats: what Pillow checks
        image.verify()  # on the image opened once (not loaded: verify must come first)


def _convert_if_needed(image: Image.Image) -> tuple[Image.Image | None, str | None]:
    """Return (converted image, reason) or (None, None) when ``image`` can be kept."""
    orientation = image.getexif().get(0x0112, 1) if "exif" in image.info else 1
    if image.mode in NATIVE_MODES and orientation == 1:
        return None, None
    image.load()
    reasons = []
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
        reasons.append(f"rotated upright (EXIF orientation {orientation})")
    if image.mode not in NATIVE_MODES:
        reasons.append(f"converted from mode {image.mode} to {_target_mode(image.mode)}")
        image = to_native_mode(image)
    return image, "; ".join(reasons)


def _target_mode(mode: str) -> str:
    return "L" if mode in ("1", "I", "F") or mode.startswith("I;16") else "RGB"


def to_native_mode(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit grey (``L``) or ``RGB``."""
    mode = image.mode
    if mode == "1":
        return image.convert("L")
    if mode in ("I", "F") or mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 4095.0 if pixels.max(initial=0) <= 4095 else (65535.0 if mode != "F" else 1.0)
        if mode == "F" and pixels.max(initial=0) > 1.0:
            top = float(pixels.max())
        scaled = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    if mode in ("RGBA", "LA", "PA", "P", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


class ImageReadError(LoupeError, ValueError):
    """An image file that cannot be read or decoded; the message names the file."""


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to an RGB array of shape (H, W, 3), uint8.

    Raises :class:`ImageReadError` naming the file when it is missing or not an image.
    """
    try:
        data = read_bytes(Path(path))
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except ImageRejectedError as error:
        raise ImageReadError(f"cannot read image {str(path)!r}: {error.reason}") from None
    except Exception as error:  # Pillow raises many types for corrupt data
        raise ImageReadError(f"cannot decode image {str(path)!r} "
                             f"({type(error).__name__}: {error})") from None
