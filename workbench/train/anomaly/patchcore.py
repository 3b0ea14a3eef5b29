"""A patch-feature memory bank (PatchCore-style) on the project's offline backbone.

Each image keeps its aspect ratio: it is resized so that its *shorter* side is
``image_size`` (the longer one follows, rounded to the network's stride), so a thin crack
on a tall image is not squashed away. Two mid-level feature maps of the backbone (strides
16 and 32), each averaged over its 3x3 neighbourhood and brought to stride 16, make one
vector per patch
(on KolektorSDD at 20 normal images these gave 0.92 image AUROC against 0.90 for strides 8
and 16 and 0.84 for strides 4 and 8; ``docs/benchmarks.md``).
Training keeps a greedy coreset of the normal images' patches; a patch's anomaly score is
its distance to the nearest kept patch (scikit-learn's exact search), an image's score is
its highest patch score, and the heatmap is the patch scores resized to the image and
smoothed. Resizing and the heatmap are ``loupe_edge.anomaly``'s, so that an exported model
on the line computes them the same way.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from loupe_edge.anomaly import STRIDE, heatmap, resize_keeping_aspect
from PIL import Image
from sklearn.neighbors import NearestNeighbors
from torch import nn
from torch.nn import functional

#: Indices of the backbone's intermediate feature maps that make a patch vector
#: (timm ``forward_intermediates``: for EfficientNet-Lite, strides 16 and 32).
FEATURE_INDICES = (3, 4)
#: Dimensions of the random projection that only *chooses* the coreset.
PROJECTION_DIMS = 64


@dataclass(frozen=True)
class PatchSettings:
    """How images become patch vectors: shorter side in pixels, backbone maps,
    normalisation."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    indices: tuple[int, ...] = FEATURE_INDICES


def to_tensor(image: Image.Image, settings: PatchSettings) -> torch.Tensor:
    """A (1, 3, H, W) normalised float tensor of the resized image."""
    pixels = np.asarray(resize_keeping_aspect(image, settings.image_size), dtype=np.float32)
    x = torch.from_numpy(pixels / 255.0).permute(2, 0, 1)
    mean = torch.tensor(settings.mean).view(3, 1, 1)
    std = torch.tensor(settings.std).view(3, 1, 1)
    return ((x - mean) / std)[None]


class PatchFeatures(nn.Module):
    """The backbone's mid-level maps, locally averaged and stacked at the finer map's
    stride: (n, C, H/16, W/16) for an input of (n, 3, H, W) with the default indices."""

    def __init__(self, body: nn.Module, indices: Sequence[int] = FEATURE_INDICES) -> None:
        super().__init__()
        if not hasattr(body, "forward_intermediates"):
            raise ValueError(f"backbone {type(body).__name__} cannot give intermediate feature "
                             "maps; an anomaly model needs a timm backbone")
        self.body, self.indices = body.eval(), list(indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.body.forward_intermediates(x, indices=self.indices,
                                               intermediates_only=True)
        size = maps[0].shape[-2:]
        maps = [functional.avg_pool2d(m, 3, stride=1, padding=1) for m in maps]
        maps = [m if m.shape[-2:] == size else
                functional.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in maps]
        return torch.cat(maps, dim=1)


@torch.no_grad()
def patch_map(features: PatchFeatures, image: Image.Image, settings: PatchSettings
              ) -> np.ndarray:
    """Patch vectors of one image: (h, w, C) float32."""
    out = features(to_tensor(image, settings))[0]
    return out.permute(1, 2, 0).contiguous().numpy().astype(np.float32)


def greedy_coreset(vectors: np.ndarray, fraction: float, *, seed: int = 0,
                   most: int | None = None) -> np.ndarray:
    """Indices of a greedy k-center coreset: each next patch is the one farthest from
    those kept (on a random projection to :data:`PROJECTION_DIMS` dimensions), so rare
    normal patterns stay in the bank.

    Parameters
    ----------
    fraction : float in (0, 1]
        Share of the patches kept (1: all of them).
    most : int, optional
        Keep at most this many.
    """
    n = len(vectors)
    if not 0 < fraction <= 1:
        raise ValueError(f"coreset fraction must be in (0, 1], got {fraction!r}")
    keep = max(1, round(n * fraction))
    if most is not None:
        keep = min(keep, most)
    if keep >= n:
        return np.arange(n)
    generator = torch.Generator().manual_seed(seed)
    z = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    if z.shape[1] > PROJECTION_DIMS:
        projection = torch.randn(z.shape[1], PROJECTION_DIMS, generator=generator)
        z = (z @ (projection / PROJECTION_DIMS ** 0.5)).contiguous()
    squared = (z * z).sum(1)
    chosen = np.empty(keep, dtype=np.int64)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), float("inf"))
    step = torch.empty(n)
    for k in range(keep):
        i = int(chosen[k]) if k == 0 else int(torch.argmax(nearest))
        chosen[k] = i
        torch.mv(z, z[i], out=step)  # squared distance to patch i, in place
        step.mul_(-2).add_(squared).add_(squared[i])
        torch.minimum(nearest, step, out=nearest)
    return chosen


class PatchBank:
    """The kept normal patches and an exact nearest-neighbour search over them."""

    def __init__(self, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError("a patch bank needs a non-empty (n, C) array of patch vectors")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._search = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def distances(self, patches: np.ndarray) -> np.ndarray:
        """Distance of each patch vector (h, w, C) to its nearest kept patch: (h, w)."""
        return self.nearest(patches)[0]

    def nearest(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance of each patch vector (h, w, C) to its nearest kept patch, and that
        patch's row in the bank: two (h, w) arrays."""
        h, w, c = patches.shape
        found, index = self._search.kneighbors(patches.reshape(-1, c))
        return (found[:, 0].reshape(h, w).astype(np.float32),
                index[:, 0].reshape(h, w).astype(np.int64))


def heatmap_png(values: np.ndarray, path: str, *, top: float) -> None:
    """Write ``values`` as an 8-bit grey PNG, 0 at 0 and 255 at ``top`` (the threshold
    times two: anything twice the threshold is white)."""
    scaled = np.clip(values / max(top, 1e-12), 0, 1) * 255
    Image.fromarray(scaled.astype(np.uint8), mode="L").save(path)


__all__ = ["FEATURE_INDICES", "STRIDE", "PatchBank", "PatchFeatures", "PatchSettings",
           "greedy_coreset", "heatmap", "heatmap_png", "patch_map", "resize_keeping_aspect",
           "to_tensor"]
