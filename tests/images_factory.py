"""Real image files, good and broken, written on demand for tests (nothing at import time)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, *, seed: int = 0, size: tuple[int, int] = (64, 48),
                mode: str = "RGB", fmt: str | None = None) -> Path:
    """A small image with random content (distinct per seed), in any Pillow mode."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode in ("I;16", "I"):
        image = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    image.save(path, format=fmt)
    return path


def png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))
    return path


def truncated_copy(source: Path, target: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` share of ``source``'s bytes (a download cut short)."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (64, 64)) -> bytes:
    """Bytes of a small random JPEG."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(
        buffer, format="JPEG")
    return buffer.getvalue()
