"""The trained network as one module: RGB pixels in, class probabilities out.

:class:`Classifier` holds the preprocessing (resize, scale, normalise) inside ``forward``, so
the same module runs in ``ModelVersion.predict``, is exported to ONNX/TorchScript, and runs
on an edge box with nothing around it. Its members are ``Sequential(body, head)``
networks, averaged in probability space (one member for ``probe`` or ``finetune``, two for
an ensemble).

>>> net = Classifier([member], image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3,
...                  classes=["ok", "scratch"])
>>> net(torch.from_numpy(read_rgb(path))[None])  # (1, 2) probabilities
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn
from tqdm.auto import tqdm

from workbench.store.ingest.images import ImageReadError, read_rgb
from workbench.train.backbones import create_backbone


def resize_normalise(pixels: torch.Tensor, image_size: int, mean: torch.Tensor,
                     std: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) to normalised float (N, 3, image_size, image_size).

    The whole image is squashed to the square with antialiased bilinear resampling, exactly
    as :func:`workbench.train.backbones.preprocess` does for cached embeddings.
    """
    x = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                      antialias=True)
    return (x - mean) / std


def build_member(backbone: str, num_classes: int) -> nn.Sequential:
    """An untrained ``Sequential(body, head)`` of the shape a checkpoint stores.

    ``body`` is the backbone with pooled-embedding output (random weights: a checkpoint's
    state dict is loaded over it), ``head`` a ``Linear(num_features, num_classes)``.
    """
    body, spec = create_backbone(backbone, weights=None)
    return nn.Sequential(body, nn.Linear(spec.num_features, num_classes))


class Classifier(nn.Module):
    """uint8 RGB images (N, H, W, 3) of any one size → probabilities (N, n_classes).

    Parameters
    ----------
    members : sequence of nn.Module
        Each maps a normalised batch (N, 3, S, S) to logits (N, n_classes); their softmax
        outputs are averaged.
    image_size : int
        Side S of the square every image is resized to.
    mean, std : 3 floats
        Normalisation of RGB scaled to [0, 1].
    classes : sequence of str
        Class names, column for column of the output (kept as an attribute, not in a graph).
    """

    def __init__(self, members: Sequence[nn.Module], *, image_size: int,
                 mean: Sequence[float], std: Sequence[float], classes: Sequence[str]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a Classifier needs at least one member network.")
        self.members = nn.ModuleList(members)
        self.image_size = int(image_size)
        self.classes = list(classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        #: Calibration (``wb.calibrate``): softmax(log p / temperature); 1.0 leaves p as is.
        self.temperature = 1.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_normalise(images, self.image_size, self.mean, self.std)
        probs = [member(x).softmax(dim=1) for member in self.members]
        mean = probs[0] if len(probs) == 1 else torch.stack(probs).mean(dim=0)
        if self.temperature == 1.0:
            return mean
        return (mean.clamp_min(1e-12).log() / self.temperature).softmax(dim=1)

    @torch.inference_mode()
    def predict_files(self, paths: Sequence[str | os.PathLike[str]], *, batch_size: int = 8,
                      progress: bool = False) -> np.ndarray:
        """Probabilities of shape (n_files, n_classes), float32, row i for ``paths[i]``.

        Consecutive images of the same size share a batch; the module is put in eval mode.
        """
        self.eval()
        out = np.empty((len(paths), len(self.classes)), dtype=np.float32)
        batch: list[np.ndarray] = []
        start = 0

        def flush() -> None:
            nonlocal start, batch
            if batch:
                out[start:start + len(batch)] = self(torch.from_numpy(np.stack(batch))).numpy()
                start, batch = start + len(batch), []

        for path in tqdm(paths, desc="predicting", unit="image", disable=not progress):
            pixels = read_rgb(path)
            if batch and (pixels.shape != batch[0].shape or len(batch) == batch_size):
                flush()
            batch.append(pixels)
        flush()
        return out


__all__ = ["Classifier", "ImageReadError", "build_member", "read_rgb", "resize_normalise"]
