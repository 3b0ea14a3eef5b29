"""Synthetic defects: procedural painters, Poisson paste, augmentation, the docs sheet.

Painters run on grey and colour, square and non-square images from 32x32 to 768x1024; each
must keep shape and dtype, mask exactly what it changed, be visible against the image's
own texture, and replay bit for bit from its JSON params.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from workbench.demo.render import render_casing
from workbench.improve.synthesis import (
    PAINTERS,
    Painted,
    augment,
    contact_sheet,
    defect_region,
    paint,
    paste,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHEET = REPO_ROOT / "docs" / "img" / "synthesis_painters.png"

#: name -> (kind of base, height, width)
CASES = {
    "grey-32x32": ("neu", 32, 32),
    "colour-32x32": ("casing", 32, 32),
    "colour-96x160-dim": ("dim", 96, 160),
    "grey-480x640": ("neu", 480, 640),
    "colour-480x640": ("casing", 480, 640),
    "grey-768x1024": ("neu", 768, 1024),
}


def _neu(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """NEU-like hot-rolled steel: grey, horizontally streaky, mottled, grainy."""
    k = min(h, w) / 128
    streaks = ndimage.gaussian_filter(rng.standard_normal((h, w)), (1.0 * k, 6.0 * k))
    mottle = ndimage.gaussian_filter(rng.standard_normal((h, w)), 8.0 * k)
    img = 0.45 + 0.06 * streaks / streaks.std() + 0.05 * mottle / mottle.std()
    img += 0.025 * rng.standard_normal((h, w))
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


@cache
def _base(case: str) -> np.ndarray:
    kind, h, w = CASES[case]
    rng = np.random.default_rng(7)
    if kind == "neu":
        img = _neu(rng, h, w)
    else:
        lighting = "dim" if kind == "dim" else "bright"
        img = render_casing(rng, "ok", size=max(h, w), lighting=lighting)[:h, :w]
    img.flags.writeable = False
    return img


@cache
def _painted(kind: str, case: str, seed: int) -> Painted:
    return PAINTERS[kind](_base(case), np.random.default_rng(seed))


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel largest absolute channel difference, shape (H, W)."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return d.max(axis=2) if d.ndim == 3 else d


PAINT_CASES = [(kind, case) for kind in PAINTERS for case in CASES]
PAINT_IDS = [f"{kind}-{case}" for kind, case in PAINT_CASES]


# --- painters --------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "case"), PAINT_CASES, ids=PAINT_IDS)
def test_painter_keeps_shape_and_masks_what_it_changed(kind, case):
    base, out = _base(case), _painted(kind, case, 0)
    assert out.image.dtype == np.uint8
    assert out.image.shape == base.shape
    assert out.mask.dtype == bool and out.mask.shape == base.shape[:2]
    assert out.mask.any()
    assert out.mask.mean() < 0.3  # a defect, not the whole image
    changed = _change(out.image, base) > 0
    assert (changed & ~out.mask).mean() <= 0.01


@pytest.mark.parametrize(("kind", "case"), PAINT_CASES, ids=PAINT_IDS)
def test_painter_defect_is_visible_against_the_texture(kind, case):
    base, out = _base(case), _painted(kind, case, 0)
    inside = _change(out.image, base)[out.mask].mean()
    assert inside >= max(0.4 * base.std(), 6.0)


@pytest.mark.parametrize(("kind", "case"), PAINT_CASES, ids=PAINT_IDS)
def test_painter_replays_from_json_params(kind, case):
    out = _painted(kind, case, 0)
    params = json.loads(json.dumps(out.params))
    again = paint(kind, _base(case), np.random.default_rng(12345), **params)
    np.testing.assert_array_equal(again.image, out.image)
    np.testing.assert_array_equal(again.mask, out.mask)
    assert again.params == params


@pytest.mark.parametrize("kind", list(PAINTERS))
@pytest.mark.parametrize("case", ["grey-32x32", "colour-480x640"])
def test_painter_seeds_differ(kind, case):
    a, b = _painted(kind, case, 0), _painted(kind, case, 1)
    assert not np.array_equal(a.image, b.image)
    assert a.params != b.params


@pytest.mark.parametrize("kind", list(PAINTERS))
@pytest.mark.parametrize("level", [10, 128, 245])
def test_painter_adapts_contrast_to_flat_dark_and_bright_images(kind, level):
    base = np.full((64, 80, 3), level, np.uint8)
    out = paint(kind, base, np.random.default_rng(3))
    assert _change(out.image, base)[out.mask].mean() >= 6.0


@pytest.mark.parametrize("kind", list(PAINTERS))
def test_painter_sizes_scale_with_the_short_side(kind):
    small = np.full((100, 150), 120, np.uint8)
    large = np.full((400, 600), 120, np.uint8)
    recipe = paint(kind, small, np.random.default_rng(5)).params
    area_small = paint(kind, small, np.random.default_rng(0), **recipe).mask.sum()
    area_large = paint(kind, large, np.random.default_rng(0), **recipe).mask.sum()
    assert 16 / 3 < area_large / area_small < 16 * 1.5


def test_scratch_is_thin_and_long():
    out = paint("scratch", _base("grey-480x640"), np.random.default_rng(2),
                scratches=[{"center": [0.5, 0.5], "angle": 30.0, "length": 0.6, "bend": 0.1,
                            "width": 0.008, "taper": 0.0}])
    area = out.mask.sum()
    length = 0.6 * 480
    assert length * 2 < area < length * 12  # a few pixels wide
    assert out.params["polarity"] in ("bright", "dark")


def test_pit_marks_are_separate_dark_spots():
    base = np.full((256, 256), 150, np.uint8)
    out = paint("pit_mark", base, np.random.default_rng(4))
    dark = out.image < 150 - 0.5 * out.params["depth"] * 255
    _, n = ndimage.label(dark)
    assert n == len(out.params["pits"]) >= 3


def test_dent_is_shaded_from_one_side():
    base = np.full((128, 128), 128, np.uint8)
    out = paint("dent", base, np.random.default_rng(0), center=[0.5, 0.5], radius=0.2,
                aspect=1.0, angle=0.0, light=0.0, pinch=0.0)
    delta = out.image.astype(int) - 128
    # Light from +x: the wall near the light (right) is darker than the far wall (left).
    assert delta[64, 64 + 15] < -5 < 5 < delta[64, 64 - 15]


def test_discoloration_shifts_hue_on_colour_and_tone_on_grey():
    grey = np.full((96, 96), 140, np.uint8)
    colour = np.full((96, 96, 3), 140, np.uint8)
    g = paint("discoloration", grey, np.random.default_rng(1))
    c = paint("discoloration", colour, np.random.default_rng(1))
    assert len(g.params["shift"]) == 1 and len(c.params["shift"]) == 3
    inside = c.image[c.mask].astype(float)
    assert np.ptp(inside.mean(axis=0)) > 5  # channels moved apart: a hue shift
    assert abs(g.image[g.mask].astype(float).mean() - 140) > 5


def test_paint_rejects_unknown_kind_listing_painters():
    with pytest.raises(ValueError, match=r"unknown defect kind 'crack'.*scratch, pit_mark"):
        paint("crack", np.zeros((32, 32), np.uint8), np.random.default_rng(0))


@pytest.mark.parametrize("kind", list(PAINTERS))
def test_painter_rejects_unknown_and_bad_overrides(kind):
    img = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match=r"unknown override.*colour.*accepted"):
        paint(kind, img, np.random.default_rng(0), colour=1)
    first = next(iter(paint(kind, img, np.random.default_rng(0)).params))
    with pytest.raises(ValueError, match=first):
        paint(kind, img, np.random.default_rng(0), **{first: "nonsense"})


BAD_IMAGES = [
    (np.zeros((32, 32), np.float32), "dtype uint8"),
    (np.zeros((1, 1), np.uint8), "too small"),
    (np.zeros((32, 32, 4), np.uint8), r"\(H, W, 3\).*alpha"),
    ([[0] * 32] * 32, "numpy array"),
]


@pytest.mark.parametrize(("image", "message"), BAD_IMAGES, ids=["float", "1x1", "rgba", "list"])
def test_bad_images_are_rejected_with_the_problem_named(image, message):
    rng = np.random.default_rng(0)
    good = np.zeros((32, 32), np.uint8)
    for kind in PAINTERS:
        with pytest.raises(ValueError, match=message):
            paint(kind, image, rng)
    with pytest.raises(ValueError, match=message):
        augment(image, rng)
    with pytest.raises(ValueError, match=message):
        defect_region(image)
    with pytest.raises(ValueError, match="base.*" + message):
        paste(image, good, rng)
    with pytest.raises(ValueError, match="source.*" + message):
        paste(good, image, rng)


def test_bad_rng_is_rejected():
    with pytest.raises(ValueError, match=r"numpy\.random\.Generator"):
        paint("dent", np.zeros((32, 32), np.uint8), 0)


# --- defect_region and paste -----------------------------------------------------------------

def _blob_image(level: int, blob: float, shape=(96, 128), centre=(40, 80), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    bump = blob * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 5.0**2))
    img = level + bump + 3 * rng.standard_normal(shape)
    return np.rint(np.clip(img, 0, 255)).astype(np.uint8), bump


def test_defect_region_finds_a_planted_bright_blob():
    img, bump = _blob_image(60, 120)
    region = defect_region(img)
    assert region[40, 80]
    assert region[bump > 0.5 * bump.max()].all()
    assert region.mean() < 0.1
    _, n = ndimage.label(region)
    assert n == 1


def test_defect_region_finds_a_hue_only_stain_and_is_never_empty():
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert defect_region(flat).any()
    stain = paint("discoloration", flat, np.random.default_rng(0), opacity=1.0)
    region = defect_region(stain.image)
    assert (region & stain.mask).sum() > 0.5 * region.sum()


def _border_step(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute step between mask pixels and their 4-neighbours outside it."""
    img = image.astype(float)
    img = img[..., None] if img.ndim == 2 else img
    steps = []
    for axis in (0, 1):
        for shift in (1, -1):
            out_nb = ~np.roll(mask, shift, axis=axis)
            edge = mask & out_nb
            diff = np.abs(img - np.roll(img, shift, axis=axis)).max(axis=2)
            steps.append(diff[edge])
    return float(np.concatenate(steps).mean())


@pytest.fixture(scope="module")
def pasted():
    base = _neu(np.random.default_rng(1), 128, 160)  # level ~115
    source, _ = _blob_image(220, -150, shape=(96, 96), centre=(48, 48), seed=2)
    kw = {"scale": 1.1, "angle": 30.0, "position": [30, 40]}
    seamless = paste(base, source, np.random.default_rng(0), **kw)
    copied = paste(base, source, np.random.default_rng(0), blend="copy", **kw)
    return base, source, seamless, copied


def test_paste_is_seamless(pasted):
    base, _, seamless, copied = pasted
    np.testing.assert_array_equal(seamless.mask, copied.mask)
    border_base = _border_step(base, seamless.mask)
    border_poisson = _border_step(seamless.image, seamless.mask)
    border_copy = _border_step(copied.image, copied.mask)
    assert border_copy > 3 * border_base
    assert abs(border_poisson - border_base) < 0.25 * abs(border_copy - border_base)
    # The defect itself came across: the dark blob is darker than its surroundings.
    inner = ndimage.binary_erosion(seamless.mask, iterations=4)
    assert seamless.image[inner].mean() < base[inner].mean() - 20


def test_paste_stays_inside_base_and_changes_only_the_region(pasted):
    base, _, seamless, _ = pasted
    assert seamless.image.shape == base.shape and seamless.image.dtype == np.uint8
    assert seamless.mask.any()
    assert not (seamless.mask[0].any() or seamless.mask[-1].any())
    assert not (seamless.mask[:, 0].any() or seamless.mask[:, -1].any())
    assert ((seamless.image != base) & ~seamless.mask).sum() == 0
    assert set(seamless.params) == {"scale", "angle", "position", "crop_box", "blend"}


def test_paste_replays_and_draws_a_fitting_placement():
    base = _base("colour-96x160-dim")
    source = _painted("scratch", "grey-480x640", 0).image
    for seed in range(5):
        out = paste(base, source, np.random.default_rng(seed))
        assert out.image.shape == base.shape  # grey source onto colour base
        assert out.mask.any()
        again = paste(base, source, np.random.default_rng(99),
                      **json.loads(json.dumps(out.params)))
        np.testing.assert_array_equal(again.image, out.image)


def test_paste_colour_source_onto_grey_base_and_a_tiny_base():
    source = _painted("discoloration", "colour-480x640", 0).image
    out = paste(np.full((32, 32), 100, np.uint8), source, np.random.default_rng(0))
    assert out.image.shape == (32, 32) and out.mask.any()
    assert out.params["scale"] <= 1.3


def test_paste_rejects_what_does_not_fit():
    base = np.full((40, 40), 100, np.uint8)
    source, _ = _blob_image(60, 120)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="scale=20"):
        paste(base, source, rng, scale=20.0)
    with pytest.raises(ValueError, match="position"):
        paste(base, source, rng, scale=1.0, angle=0.0, position=[39, 39])
    with pytest.raises(ValueError, match="unknown blend 'mix'"):
        paste(base, source, rng, blend="mix")


# --- augment ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["grey-32x32", "colour-96x160-dim", "colour-480x640"])
def test_augment_keeps_shape_and_replays(case):
    base = _base(case)
    for seed in range(4):
        out = augment(base, np.random.default_rng(seed))
        assert out.image.shape == base.shape and out.image.dtype == np.uint8
        assert out.mask.all() and out.mask.shape == base.shape[:2]
        again = augment(base, np.random.default_rng(0), **json.loads(json.dumps(out.params)))
        np.testing.assert_array_equal(again.image, out.image)
    assert 0.7 < out.image.mean() / base.mean() < 1.3


def test_augment_identity_params_give_the_input_back():
    base = _base("colour-96x160-dim")
    idle = {"flip_h": False, "flip_v": False, "rot90": 0, "angle": 0.0, "brightness": 0.0,
            "contrast": 0.0, "blur": 0.0, "noise": 0.0}
    np.testing.assert_array_equal(augment(base, np.random.default_rng(0), **idle).image, base)
    flipped = augment(base, np.random.default_rng(0), **{**idle, "flip_h": True}).image
    np.testing.assert_array_equal(flipped, base[:, ::-1])


def test_augment_rejects_a_quarter_turn_of_a_non_square_image():
    with pytest.raises(ValueError, match=r"rot90=1.*non-square"):
        augment(_base("colour-96x160-dim"), np.random.default_rng(0), rot90=1)


# --- docs ------------------------------------------------------------------------------------

def test_contact_sheet_for_the_docs():
    casing = render_casing(np.random.default_rng(11), "ok", size=128, line="B")
    grey = _neu(np.random.default_rng(12), 128, 128)
    rows = []
    for i, kind in enumerate(PAINTERS):
        on_casing = paint(kind, casing, np.random.default_rng(20 + i))
        on_grey = paint(kind, grey, np.random.default_rng(30 + i))
        rows.append([casing, on_casing.image, on_casing.mask, grey, on_grey.image, on_grey.mask])
    sheet = contact_sheet(
        rows, list(PAINTERS),
        columns=["casing (ok)", "painted", "mask", "NEU-like grey", "painted", "mask"],
    )
    assert sheet.mode == "RGB" and sheet.height > 4 * 128
    SHEET.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(SHEET)
    with pytest.raises(ValueError, match="one label per row"):
        contact_sheet(rows, ["only one"])
