"""The near-copy search for many images finds what comparing every pair finds."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from workbench.demo.render import CLASSES, render_casing
from workbench.metrics.copy_search import candidate_pixel_pairs
from workbench.metrics.near_copies import pixel_pairs, pixel_signature


def test_candidate_search_finds_the_same_copies_as_every_pair():
    rng = np.random.default_rng(7)
    images = [Image.fromarray(render_casing(rng, CLASSES[k % len(CLASSES)], size=64))
              for k in range(400)]
    planted = []
    for k, source in enumerate(rng.choice(len(images), size=30, replace=False)):
        copy = images[int(source)]
        copy = ImageOps.mirror(copy) if k % 2 else ImageOps.flip(copy)
        if k % 3 == 0:
            copy = copy.crop((2, 2, 62, 62))
        planted.append((int(source), len(images)))
        images.append(copy)
    signatures = np.stack([pixel_signature(image) for image in images])

    exact = pixel_pairs(signatures)
    found = candidate_pixel_pairs(signatures, 0.99)

    assert set(zip(*found[:2], strict=True)) == set(zip(*exact[:2], strict=True))
    assert set(planted) <= set(zip(found[0].tolist(), found[1].tolist(), strict=True))
    np.testing.assert_allclose(np.sort(found[2]), np.sort(exact[2]), atol=1e-5)
