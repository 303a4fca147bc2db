"""Reading weight files and fitting them to a network, with errors naming the file and the offending tensor.

Weights never come from the network, only from files already on disk, so a misconfigured service fails at
startup with a message instead of quietly running on random weights or waiting on a download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Final

import torch
from torch import nn

from models.errors import EncoderConfigError

__all__ = ["load_by_name", "load_state_dict", "remap_by_position", "weights_id"]

# sha256 prefixes of the ImageNet files we know (lite0 package, torchvision resnet50 v1/v2, vgg16), so that
# the same file reads "imagenet-..." whether it was found by default or passed explicitly.
_KNOWN_IMAGENET: Final = frozenset({"57934424", "0676ba61", "11ad3fa6", "397923af"})

# Wrappers that training scripts put around a state dict.
_WRAPPER_KEYS: Final = ("state_dict", "model_state_dict", "model")


def weights_id(path: Path) -> str:
    """Name weights by their content: identical files give identical vectors, whatever they are called."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    prefix = digest.hexdigest()[:8]
    return f"imagenet-{prefix}" if prefix in _KNOWN_IMAGENET else f"file-{prefix}"


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth file, unwrapped from common checkpoint containers and DataParallel prefixes."""
    if not path.is_file():
        raise EncoderConfigError(f"weights file {path} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and zip errors have no common base class
        raise EncoderConfigError(f"cannot read weights file {path} as a PyTorch state dict: {exc}") from exc
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EncoderConfigError(f"weights file {path} does not hold a state dict (a mapping name -> tensor)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def remap_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, origin: str
) -> dict[str, torch.Tensor]:
    """Give the source tensors the target's names, pairing them in order; every pair must agree in shape.

    For checkpoints of the same architecture written by another codebase (lukemelas-style EfficientNet
    names vs timm's): the tensors come in the same order under different names. BatchNorm batch counters are
    left out of the pairing because some files have them and some do not, and they play no part in inference.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    for i, ((s_key, s_val), (d_key, d_val)) in enumerate(zip(src, dst, strict=False)):
        if s_val.shape != d_val.shape:
            raise EncoderConfigError(
                f"{origin}: tensor #{i} {s_key!r} has shape {tuple(s_val.shape)} but the network's {d_key!r} "
                f"needs {tuple(d_val.shape)}: the file is not for this architecture"
            )
    if len(src) != len(dst):
        first = src[len(dst)][0] if len(src) > len(dst) else dst[len(src)][0]
        side = "file" if len(src) > len(dst) else "network"
        raise EncoderConfigError(
            f"{origin}: the file has {len(src)} tensors and the network {len(dst)} (not counting BatchNorm "
            f"counters); the first unpaired one is the {side}'s {first!r}"
        )
    mapped = {d_key: s_val for (_, s_val), (d_key, _) in zip(src, dst, strict=True)}
    # Keep the network's own counters so that a strict load sees every key.
    mapped.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    return mapped


def load_by_name(
    module: nn.Module, state: Mapping[str, torch.Tensor], *, origin: str, ignore: Collection[str] = ()
) -> None:
    """Strict load that ignores the given top-level prefixes (e.g. a classifier we cut off) on both sides.

    The tensors are assigned, not copied, so `module` may be built on the meta device: no time is spent on a
    random initialisation that would be overwritten anyway. Ignored parts stay as they were.
    """

    def kept(key: str) -> bool:
        return key.split(".", 1)[0] not in ignore

    wanted = {k: v for k, v in module.state_dict().items() if kept(k)}
    given = {k: v for k, v in state.items() if kept(k)}
    missing = [k for k in wanted if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in wanted]
    if missing or unexpected:
        raise EncoderConfigError(
            f"{origin}: names do not match the network ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}): the file is not for this architecture"
        )
    for key, value in given.items():
        if value.shape != wanted[key].shape:
            raise EncoderConfigError(
                f"{origin}: {key!r} has shape {tuple(value.shape)} but the network needs "
                f"{tuple(wanted[key].shape)}: the file is not for this architecture"
            )
    complete = {key: value.to(wanted[key].dtype) for key, value in given.items()}
    for key in wanted.keys() - complete.keys():  # BatchNorm counters the file does not carry
        complete[key] = torch.zeros((), dtype=torch.long)
    # Not strict: the ignored parts are absent on purpose; every other key was checked above.
    module.load_state_dict(complete, strict=False, assign=True)
