"""Single-file checks on real good and broken files."""

from __future__ import annotations

import numpy as np
import pytest
from images_factory import png_with_declared_size, truncated_copy, write_image
from PIL import Image

from workbench.store.ingest.images import ImageRejectedError, check_image, read_bytes


def reason(path) -> str:
    with pytest.raises(ImageRejectedError) as info:
        check_image(read_bytes(path))
    return info.value.reason


def test_plain_rgb_and_grey_images_are_kept_as_they_are(tmp_path):
    for mode in ("RGB", "L"):
        checked = check_image(read_bytes(write_image(tmp_path / f"a{mode}.png", mode=mode)))
        assert checked.converted is None
        assert (checked.width, checked.height) == (64, 48)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageRejectedError, match="empty file"):
        read_bytes(tmp_path / "empty.jpg")


def test_non_image(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture at all")
    assert "not an image" in reason(tmp_path / "notes.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files(tmp_path, fmt):
    good = write_image(tmp_path / f"good.{fmt.lower()}", size=(128, 128), fmt=fmt)
    bad = truncated_copy(good, tmp_path / f"cut.{fmt.lower()}", keep=0.5)
    assert "truncated" in reason(bad) or "corrupt" in reason(bad)


def test_decompression_bomb_declared_in_header(tmp_path):
    bomb = png_with_declared_size(tmp_path / "bomb.png", 60_000, 60_000)
    assert bomb.stat().st_size < 200
    assert "decompression bomb" in reason(bomb)


def test_image_over_loupe_pixel_limit(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (8000, 6000)).save(big)  # 48 MP > 40 MP limit, below Pillow's own
    assert "exceeds the limit" in reason(big)


@pytest.mark.parametrize(("mode", "stored"), [("CMYK", "RGB"), ("P", "RGB"), ("RGBA", "RGB"),
                                              ("I;16", "L"), ("1", "L"), ("LA", "RGB")])
def test_unusual_modes_are_converted_not_rejected(tmp_path, mode, stored):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = write_image(tmp_path / f"img.{fmt.lower()}", mode=mode, fmt=fmt)
    checked = check_image(read_bytes(path))
    assert checked.converted is not None and checked.converted.mode == stored
    assert "converted from mode" in checked.conversion


def test_sixteen_bit_keeps_its_contrast(tmp_path):
    ramp = (np.arange(256 * 16, dtype=np.uint16).reshape(16, 256) * 16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    converted = np.asarray(check_image(read_bytes(path)).converted)
    assert converted.min() <= 1 and converted.max() >= 254


def test_exif_rotated_image_is_stored_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (60, 30), "white")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image.save(path, exif=exif)
    checked = check_image(read_bytes(path))
    assert (checked.width, checked.height) == (30, 60)
    assert "EXIF orientation 6" in checked.conversion
