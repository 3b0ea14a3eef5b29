"""The full-size view behind a thumbnail, without a browser: what the store reads and what
the lightbox widget answers for a key (real files, a real project for a grid's tiles)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

import workbench as wb
from widgets._base.lightbox import Lightbox, grid_lightbox, thumb_attributes
from workbench.store.thumbnails import FULL_SIZE_CAP, full_image, full_size_data_uri


def _noise(path, width: int, height: int, *, seed: int = 0, mode: str = "RGB") -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode=mode).save(path)
    return pixels


def _decode(uri: str) -> Image.Image:
    header, payload = uri.split(",", 1)
    assert header.endswith(";base64")
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


def test_a_small_image_is_sent_as_the_file_itself(tmp_path):
    path = tmp_path / "pit_mark_017.png"
    _noise(path, 640, 480)

    image = full_image(path)

    assert image.data == path.read_bytes()  # every pixel as stored, nothing re-encoded
    assert (image.mime, image.width, image.height) == ("image/png", 640, 480)
    assert not image.scaled
    assert full_size_data_uri(path) == image.data_uri
    assert _decode(image.data_uri).size == (640, 480)


def test_a_large_image_is_capped_on_its_long_side(tmp_path):
    path = tmp_path / "panorama.png"
    pixels = np.tile(np.linspace(0, 255, 2600, dtype=np.uint8), (500, 1))
    Image.fromarray(pixels).save(path)

    image = full_image(path)

    assert (image.original_width, image.original_height) == (2600, 500)
    assert image.width == FULL_SIZE_CAP and image.height == round(500 * FULL_SIZE_CAP / 2600)
    assert image.scaled and image.mime == "image/png"  # a lossless file stays lossless
    assert _decode(image.data_uri).size == (image.width, image.height)
    assert full_image(path, max_side=300).width == 300


def test_exif_rotation_and_16_bit_images_are_shown_upright_and_viewable(tmp_path):
    rotated = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show it rotated by 90 degrees
    Image.new("RGB", (200, 100), (90, 90, 90)).save(rotated, exif=exif.tobytes())
    deep = tmp_path / "xray.png"
    Image.fromarray(np.full((60, 80), 3000, dtype=np.uint16)).save(deep)

    upright = full_image(rotated)
    eight_bit = full_image(deep)

    assert (upright.width, upright.height, upright.mime) == (100, 200, "image/jpeg")
    assert _decode(upright.data_uri).size == (100, 200)
    assert _decode(eight_bit.data_uri).mode in ("L", "RGB")
    assert (eight_bit.width, eight_bit.height) == (80, 60)


def test_bad_input_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gone\.png"):
        full_image(tmp_path / "gone.png")
    with pytest.raises(ValueError, match="max_side"):
        full_image(tmp_path / "gone.png", max_side=0)
    with pytest.raises(ValueError, match="max_side"):
        Lightbox(max_side=True)


def test_the_lightbox_answers_a_registered_key_with_the_full_image(tmp_path):
    path = tmp_path / "dent_015.png"
    pixels = _noise(path, 300, 200, seed=2)
    lightbox = Lightbox()
    key = lightbox.register("k1", path, caption="predicted pit_mark · 97%")

    reply = lightbox.message(key)

    assert reply["type"] == "image" and reply["key"] == "k1"
    assert (reply["name"], reply["caption"]) == ("dent_015.png", "predicted pit_mark · 97%")
    assert (reply["width"], reply["original_width"]) == (300, 300)
    assert np.array_equal(np.asarray(_decode(reply["src"]).convert("RGB")), pixels)
    # as the browser asks (model.send): the handler answers without raising
    lightbox._handle_custom_msg({"type": "open", "key": key}, [])
    lightbox._handle_custom_msg({"type": "something else"}, [])


def test_unknown_keys_and_unreadable_files_answer_an_error_not_a_file(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    lightbox = Lightbox()
    lightbox.register("bad", broken)

    unknown = lightbox.message("/etc/passwd")  # a key is never a path
    unreadable = lightbox.message("bad")

    assert "src" not in unknown and "not available" in unknown["error"]
    assert "src" not in unreadable and "cannot read broken.png" in unreadable["error"]
    lightbox.clear()
    assert "src" not in lightbox.message("bad")


def test_boxes_are_drawn_on_the_full_image(tmp_path):
    path = tmp_path / "plate.png"
    Image.new("RGB", (400, 300), (128, 128, 128)).save(path)
    lightbox = Lightbox()
    lightbox.register("p", path, boxes=[{"x": 0.25, "y": 0.25, "w": 0.5, "h": 0.5,
                                         "color": "#ff0000"}])

    drawn = np.asarray(_decode(lightbox.message("p")["src"]).convert("RGB")).astype(int)

    assert drawn.shape == (300, 400, 3)
    left_edge = drawn[150, 101]  # on the box's left side (x = 100 .. 101)
    assert left_edge[0] > 200 and left_edge[1] < 80  # red
    assert abs(drawn[150, 200] - 128).max() < 12  # the inside is untouched


def test_thumbnail_attributes_make_it_focusable_and_escape_the_caption():
    attrs = thumb_attributes('k"1', name="a.png", caption='"><img src=x onerror=alert(1)>',
                             size=96)

    assert 'tabindex="0"' in attrs and 'role="button"' in attrs
    assert 'data-loupe-open="k&quot;1"' in attrs
    assert "<img" not in attrs and "&lt;img src=x" in attrs  # whole caption, as text
    assert "width:96px" in attrs


@pytest.fixture
def tiny_demo(request):
    from workbench.demo import create_demo_project

    name = "lightbox-" + request.node.name[:40].replace("_", "-")
    p = create_demo_project(name, n_per_class=2, seed=4, overwrite=True, duplicates=0,
                            progress=False)
    yield p
    wb.delete_project(name)


def test_a_grid_tile_opens_its_own_file_with_label_and_caption(tiny_demo):
    from widgets.label.grid import LabelingGrid

    ids, paths = tiny_demo.dataset.values(["id", "filepath"])
    grid = LabelingGrid(tiny_demo, sample_ids=ids[:3], captions={ids[0]: "predicted dent · 91%"})
    lightbox = grid_lightbox(grid)

    reply = lightbox.message(ids[0])
    outside = lightbox.message(ids[5])  # a sample of the project the grid does not show

    with Image.open(paths[0]) as original:
        assert (reply["width"], reply["height"]) == original.size
    assert reply["name"] == paths[0].rsplit("/", 1)[-1]
    label = grid.items[0]["label"]
    assert reply["caption"] == f"label {label} · predicted dent · 91%"
    assert "error" in outside and "src" not in outside


@pytest.mark.slow
def test_drift_thumbnails_open_the_files_they_show_with_captions_in_words(tiny_demo, tmp_path):
    import re

    from PIL import ImageEnhance

    from widgets.monitor.drift_monitor import DriftMonitor

    version = wb.train(tiny_demo, mode="probe", folds=2, image_size=64, progress=False)
    for i, path in enumerate(tiny_demo.dataset.values("filepath")):
        with Image.open(path) as image:
            ImageEnhance.Brightness(image).enhance(0.4).save(tmp_path / f"dark_{i}.png")
    wb.drift(tiny_demo, version, tmp_path)

    monitor = DriftMonitor(tiny_demo, version, n_images=4)

    html = monitor.detail.value
    keys = re.findall(r'data-loupe-open="([^"]+)"', html)
    assert len(keys) == 4 == len(monitor.selected)
    assert monitor.lightbox in monitor.children
    for key, path in zip(keys, monitor.selected, strict=True):
        reply = monitor.lightbox.message(key)
        with Image.open(path) as shown:
            assert (reply["width"], reply["height"]) == shown.size
        assert reply["name"] == path.rsplit("/", 1)[-1]
        assert re.fullmatch(r"(⚠ )?ood \d\.\d\d · predicted \w+ \d+%", reply["caption"])
        assert f'title="{reply["name"]} — {reply["caption"]}"' in html  # the whole caption
