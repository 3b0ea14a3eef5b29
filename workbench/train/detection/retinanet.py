"""The box detector: torchvision's RetinaNet with an FPN over a Loupe backbone.

:class:`Detector` holds the whole pipeline up to the boxes: uint8 RGB images (N, H, W, 3)
of any one size are squashed to ``image_size`` squares (as classification does, so a box's
relative coordinates are the same in the file and in the network's input), normalised,
run through backbone, feature pyramid and RetinaNet heads, and every anchor's box is
decoded. ``forward`` returns per-anchor class scores (N, A, C) and boxes (N, A, 4) as
relative ``x1, y1, x2, y2``; :func:`loupe_edge.predictor.postprocess_detections` (score threshold,
per-class NMS, top boxes) turns one image's rows into detections. The same module trains
(:meth:`Detector.losses`, torchvision's focal and L1 losses), predicts in
``ModelVersion.predict`` and is exported to ONNX, so the line-side box decodes exactly what
the notebook sees.

>>> detector = build_detector("tf_efficientnet_lite0", classes=["scratch", "dent"],
...                           image_size=256)
>>> scores, boxes = detector(torch.from_numpy(read_rgb(path))[None])

Backbones: any timm model with a feature pyramid (``feature_info``) and any torchvision
classification CNN; the feature maps at strides 8, 16 and 32 feed the FPN (P3–P5), and
P6/P7 are computed from P5. Anchors are sized for small images: per level 2x its stride
(16 px at P3 to 256 px at P7) at three scales and aspect ratios 1:2, 1:1, 2:1.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from workbench.train.backbones import DEFAULT_BACKBONE, _resolve, create_backbone

#: Strides of the backbone feature maps the FPN takes (P3, P4, P5).
STRIDES = (8, 16, 32)
#: Image sides must be a multiple of the coarsest backbone stride.
SIZE_MULTIPLE = 32
#: Largest log-scale change of an anchor's side when decoding (torchvision's clip).
_BBOX_CLIP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a detector's architecture and decoding (kept in the version).

    Attributes
    ----------
    backbone : str
        Backbone name, as :func:`workbench.train.backbones.create_backbone` takes it.
    classes : tuple of str
        Box classes, in the order of the score columns.
    image_size : int
        Side of the square every image is resized to (a multiple of 32).
    mean, std : 3 floats
        Normalisation of RGB scaled to [0, 1].
    fpn_channels : int
        Width of the feature pyramid and of the heads.
    head_convs : int
        3x3 convolutions (with group norm) before each head's output layer; torchvision's
        RetinaNet has 4, 2 trains faster on a few dozen images and costs half as much.
    anchor_scales : tuple of float
        Anchor sides per level, as multiples of twice the level's stride.
    aspect_ratios : tuple of float
        Anchor height / width ratios.
    score_threshold, nms_iou, max_detections, candidates
        Decoding: boxes scoring below ``score_threshold`` are dropped, the best
        ``candidates`` go through per-class NMS at ``nms_iou``, and at most
        ``max_detections`` boxes per image are kept.
    """

    backbone: str
    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fpn_channels: int = 64
    head_convs: int = 2
    anchor_scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 50
    candidates: int = 1000
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetectorConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: tuple(v) if isinstance(v, list) else v
                      for k, v in values.items() if k in known})

    def anchor_sizes(self) -> tuple[tuple[float, ...], ...]:
        """Anchor sides per pyramid level P3..P7."""
        strides = (*STRIDES, 64, 128)
        return tuple(tuple(2.0 * s * k for k in self.anchor_scales) for s in strides)


class _PyramidBackbone(nn.Module):
    """Backbone feature maps at strides 8/16/32 -> FPN levels P3..P7 (an OrderedDict)."""

    def __init__(self, body: nn.Module, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels,
                                         extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        if isinstance(features, dict):
            features = list(features.values())
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


class _ListFeatures(nn.Module):
    """timm's FeatureListNet returns a list; keep that, and only that, as the output."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(x))


def _timm_body(model: nn.Module, name: str) -> tuple[nn.Module, list[int]]:
    from timm.models._features import FeatureListNet

    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"backbone {name!r} has no feature pyramid (timm feature_info); "
                         "a detector needs a CNN backbone.")
    info = list(info) if isinstance(info, list) else list(info.info)
    indices = []
    for stride in STRIDES:
        found = [i for i, entry in enumerate(info) if entry.get("reduction") == stride]
        if not found:
            have = sorted({entry.get("reduction") for entry in info})
            raise ValueError(f"backbone {name!r} has no feature map at stride {stride} "
                             f"(it has strides {have}); a detector needs 8, 16 and 32.")
        indices.append(found[-1])
    try:
        body = FeatureListNet(model, out_indices=tuple(indices), flatten_sequential=True)
    except Exception as error:  # timm raises assorted errors for models it cannot split
        raise ValueError(f"cannot take feature maps from backbone {name!r} "
                         f"({type(error).__name__}: {error}).") from error
    return _ListFeatures(body), [int(info[i]["num_chs"]) for i in indices]


def _torchvision_body(model: nn.Module, name: str) -> tuple[nn.Module, list[int]]:
    """The last module output (two levels deep at most) at each stride 8/16/32."""
    from torchvision.models.feature_extraction import create_feature_extractor

    side = 256
    order: list[tuple[str, tuple[int, ...]]] = []
    hooks = [module.register_forward_hook(
        lambda _m, _i, out, n=n: order.append((n, tuple(out.shape)))
        if isinstance(out, torch.Tensor) else None)
        for n, module in model.named_modules() if n and n.count(".") <= 1]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    nodes, channels = [], []
    for stride in STRIDES:
        found = [(n, s) for n, s in order if len(s) == 4 and s[-1] * stride == side]
        if not found:
            raise ValueError(f"backbone {name!r} has no feature map at stride {stride}; a "
                             "detector needs a CNN backbone with strides 8, 16 and 32.")
        nodes.append(found[-1][0])
        channels.append(found[-1][1][1])
    body = create_feature_extractor(model, return_nodes={n: str(i) for i, n in enumerate(nodes)})
    return body, channels


def _feature_body(name: str, weights: Any) -> tuple[nn.Module, list[int], Any]:
    library, _ = _resolve(name)
    model, spec = create_backbone(name, weights=weights)
    if library == "timm":
        body, channels = _timm_body(model, name)
    else:
        body, channels = _torchvision_body(model, name)
    return body, channels, spec


def _grid_anchors(net: RetinaNet, body: nn.Module, image_size: int) -> torch.Tensor:
    """The anchors (A, 4) of an image of ``image_size`` squared, pixel ``x1, y1, x2, y2``."""
    with torch.no_grad():
        was = body.training
        features = list(body.eval()(torch.zeros(1, 3, image_size, image_size)).values())
        body.train(was)
        images = ImageList(torch.zeros(1, 3, image_size, image_size),
                           [(image_size, image_size)])
        return net.anchor_generator(images, features)[0]


class Detector(nn.Module):
    """uint8 RGB images (N, H, W, 3) -> per-anchor class scores and relative boxes.

    Parameters
    ----------
    net : torchvision RetinaNet
        Its backbone (feature pyramid), head, anchor generator and losses are used; its own
        ``forward`` (with torchvision's resizing transform) is not.
    config : DetectorConfig

    The anchors are a non-persistent buffer computed from the config, so a state dict
    holds only learnt weights and the normalisation.
    """

    def __init__(self, net: RetinaNet, config: DetectorConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.image_size = int(config.image_size)
        self.classes = list(config.classes)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32)
                             .view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32)
                             .view(1, 3, 1, 1))
        self.register_buffer("anchors", _grid_anchors(net, net.backbone, self.image_size),
                             persistent=False)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, S, S) already at ``image_size`` -> the network's float input."""
        return (pixels.to(torch.float32) / 255.0 - self.mean) / self.std

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (N, 3, S, S), the whole image squashed."""
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        return (x / 255.0 - self.mean) / self.std

    def head_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised input (N, 3, S, S) -> ``cls_logits`` (N, A, C), ``bbox_regression``
        (N, A, 4)."""
        return self.net.head(list(self.net.backbone(x).values()))

    def decode(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N, A, C) in [0, 1] and boxes (N, A, 4), relative ``x1, y1, x2, y2``
        clipped to the image, as torchvision's box coder (weights 1) decodes them."""
        anchors = self.anchors
        deltas = outputs["bbox_regression"]
        widths = anchors[:, 2] - anchors[:, 0]
        heights = anchors[:, 3] - anchors[:, 1]
        cx = anchors[:, 0] + 0.5 * widths
        cy = anchors[:, 1] + 0.5 * heights
        dx, dy = deltas[..., 0], deltas[..., 1]
        dw = deltas[..., 2].clamp(max=_BBOX_CLIP)
        dh = deltas[..., 3].clamp(max=_BBOX_CLIP)
        px, py = dx * widths + cx, dy * heights + cy
        pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
        boxes = torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph],
                            dim=-1)
        boxes = (boxes / self.image_size).clamp(0.0, 1.0)
        return outputs["cls_logits"].sigmoid(), boxes

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.head_outputs(self.resize(images)))

    def raw(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores and boxes for uint8 (N, 3, S, S) images already at ``image_size``."""
        return self.decode(self.head_outputs(self.normalise(pixels)))

    def losses(self, x: torch.Tensor, targets: list[dict[str, torch.Tensor]]
               ) -> dict[str, torch.Tensor]:
        """torchvision's RetinaNet losses (``classification``: sigmoid focal loss,
        ``bbox_regression``: L1) for a normalised batch and per-image targets (``boxes``
        (k, 4) pixel ``x1, y1, x2, y2`` at ``image_size``, ``labels`` (k,) int64; k may be
        0: an image with no defect)."""
        outputs = self.head_outputs(x)
        anchors = [self.anchors] * len(x)
        return self.net.compute_loss(targets, outputs, anchors)


def check_image_size(image_size: object) -> int:
    """``image_size`` as an int, or ValueError: a multiple of 32, at least 64."""
    if (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 64
            or image_size % SIZE_MULTIPLE):
        raise ValueError(f"image_size must be a multiple of {SIZE_MULTIPLE} and at least 64 "
                         f"for a detector (its coarsest feature map has stride 32), got "
                         f"{image_size!r}.")
    return image_size


def build_detector(backbone: str = DEFAULT_BACKBONE, *, classes: Sequence[str],
                   image_size: int = 256, weights: Any = "default", fpn_channels: int = 64,
                   head_convs: int = 2, config: DetectorConfig | None = None) -> Detector:
    """A RetinaNet :class:`Detector` over a backbone (pretrained as ``weights`` says).

    Parameters
    ----------
    backbone : str, default "tf_efficientnet_lite0"
        A timm CNN with ``feature_info`` or a torchvision classification CNN.
    classes : sequence of str
        Box classes (at least one).
    image_size : int, default 256
        Side of the square input, a multiple of 32.
    weights
        As :func:`workbench.train.backbones.create_backbone` takes them (``None``: random; the
        usual choice when a checkpoint's weights are loaded over the network).
    fpn_channels : int, default 64
        Width of the feature pyramid and heads (torchvision's 256 is about 10x slower on a
        CPU and no better on small data sets).
    head_convs : int, default 2
        Convolutions of each head before its output layer (torchvision's default is 4).
    config : DetectorConfig, optional
        Rebuild exactly this architecture (``backbone``, ``classes``, ``image_size`` and
        ``fpn_channels`` are then taken from it).
    """
    if config is None:
        classes = tuple(str(c) for c in classes)
        if not classes:
            raise ValueError("a detector needs at least one box class.")
        image_size = check_image_size(image_size)
        body, channels, spec = _feature_body(backbone, weights)
        config = DetectorConfig(backbone=backbone, classes=classes, image_size=image_size,
                                mean=tuple(spec.mean), std=tuple(spec.std),
                                fpn_channels=int(fpn_channels), head_convs=int(head_convs),
                                extra={"weights_source": spec.weights_source})
    else:
        body, channels, _ = _feature_body(config.backbone, weights)
    pyramid = _PyramidBackbone(body, channels, config.fpn_channels)
    sizes = config.anchor_sizes()
    anchors = AnchorGenerator(sizes, (tuple(config.aspect_ratios),) * len(sizes))
    groups = math.gcd(16, config.fpn_channels)
    head = RetinaNetHead(config.fpn_channels, anchors.num_anchors_per_location()[0],
                         len(config.classes), norm_layer=partial(nn.GroupNorm, groups))
    if not 1 <= config.head_convs <= len(head.classification_head.conv):
        raise ValueError(f"head_convs must be between 1 and "
                         f"{len(head.classification_head.conv)}, got {config.head_convs!r}.")
    for part in (head.classification_head, head.regression_head):
        part.conv = part.conv[:config.head_convs]
    net = RetinaNet(pyramid, num_classes=len(config.classes), min_size=config.image_size,
                    max_size=config.image_size, image_mean=list(config.mean),
                    image_std=list(config.std), anchor_generator=anchors, head=head,
                    score_thresh=config.score_threshold, nms_thresh=config.nms_iou,
                    detections_per_img=config.max_detections,
                    topk_candidates=config.candidates)
    return Detector(net, config).eval()


def freeze_batchnorm(detector: nn.Module) -> None:
    """Put every batch-norm layer in eval mode (its ImageNet statistics stay)."""
    for module in detector.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


__all__ = ["STRIDES", "Detector", "DetectorConfig", "build_detector", "check_image_size",
           "freeze_batchnorm"]
