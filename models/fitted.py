"""The file of parameters that `cbir fit` learns from a user's images, and its checked loading.

One safetensors file (tensors and string metadata, no pickle, so loading an untrusted file runs no code)
holds the head's fitted state (NetVLAD's centroids and assignment conv) and the optional projection
(PCA / whitening), plus what they were fitted for: backbone, weights, head and its settings, max side and
scales. An encoder loads it only when all of those match its own configuration, since the parameters mean
nothing for another one. The first 12 hex digits of the file's sha256 go into the encoder fingerprint, so
refitting changes the fingerprint and a collection built with the old parameters asks for `cbir reindex`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.errors import EncoderConfigError
from models.projection import Projection

__all__ = ["FORMAT", "FittedParameters", "load_fitted", "save_fitted"]

FORMAT = "cbir-fitted/1"
_HEAD_PREFIX = "head."


@dataclass
class FittedParameters:
    backbone: str
    weights_id: str
    head: str
    head_config: dict[str, Any]
    max_side: int
    scales: list[float]
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)
    projection: Projection | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)  # what it was learned from: images, folder, date
    file_id: str = ""  # sha256 prefix of the file; empty until saved or loaded

    def check_matches(
        self,
        *,
        backbone: str,
        weights_id: str,
        head: str,
        head_config: Mapping[str, Any],
        max_side: int,
        scales: Sequence[float],
        origin: str,
    ) -> None:
        """Raise EncoderConfigError listing every setting that differs from what the file was fitted for."""
        wanted = {
            "backbone": backbone,
            "weights": weights_id,
            "head": head,
            "head settings": dict(head_config),
            "max side": max_side,
            "scales": [float(s) for s in scales],
        }
        stored = {
            "backbone": self.backbone,
            "weights": self.weights_id,
            "head": self.head,
            "head settings": self.head_config,
            "max side": self.max_side,
            "scales": self.scales,
        }
        differ = [
            f"{key} {stored[key]!r} (configured: {wanted[key]!r})"
            for key in wanted
            if wanted[key] != stored[key]
        ]
        if differ:
            raise EncoderConfigError(
                f"the fitted parameters in {origin} were fitted for another encoder: {'; '.join(differ)}. "
                "Configure the encoder they were fitted for, or run `cbir fit` again with this configuration"
            )


def save_fitted(params: FittedParameters, path: Path) -> str:
    """Write atomically (temporary file, fsync, rename); returns and records the file id."""
    from safetensors.torch import save

    tensors = {
        f"{_HEAD_PREFIX}{key}": value.detach().cpu().contiguous() for key, value in params.head_state.items()
    }
    metadata = {
        "format": FORMAT,
        "backbone": params.backbone,
        "weights_id": params.weights_id,
        "head": params.head,
        "head_config": json.dumps(params.head_config, sort_keys=True),
        "max_side": str(params.max_side),
        "scales": json.dumps(params.scales),
        "fitted_on": json.dumps(params.fitted_on, sort_keys=True),
    }
    if params.projection is not None:
        tensors["projection.mean"] = params.projection.mean.detach().cpu().contiguous()
        tensors["projection.matrix"] = params.projection.matrix.detach().cpu().contiguous()
        metadata["eigen_power"] = repr(params.projection.eigen_power)
    data = save(tensors, metadata=metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    params.file_id = _file_id(data)
    return params.file_id


def load_fitted(path: Path) -> FittedParameters:
    """Read and check a file written by save_fitted; EncoderConfigError says what is wrong with it."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EncoderConfigError(
            f"cannot read the fitted parameters {path}: {exc.strerror or exc}; run `cbir fit` to create them"
        ) from exc
    try:
        tensors = load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise EncoderConfigError(f"{path} is not a file written by `cbir fit`: {exc}") from exc
    if metadata.get("format") != FORMAT:
        raise EncoderConfigError(
            f"{path} is not a file written by `cbir fit` "
            f"(format {metadata.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        projection = None
        if "projection.matrix" in tensors:
            projection = Projection(
                tensors["projection.mean"], tensors["projection.matrix"], float(metadata["eigen_power"])
            )
        return FittedParameters(
            backbone=metadata["backbone"],
            weights_id=metadata["weights_id"],
            head=metadata["head"],
            head_config=json.loads(metadata["head_config"]),
            max_side=int(metadata["max_side"]),
            scales=[float(s) for s in json.loads(metadata["scales"])],
            head_state={
                key[len(_HEAD_PREFIX) :]: value
                for key, value in tensors.items()
                if key.startswith(_HEAD_PREFIX)
            },
            projection=projection,
            fitted_on=json.loads(metadata.get("fitted_on", "{}")),
            file_id=_file_id(data),
        )
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise EncoderConfigError(f"{path} is damaged or incomplete ({exc!r}); run `cbir fit` again") from exc


def _metadata(data: bytes) -> dict[str, str]:
    """safetensors' header: 8-byte little-endian length, then JSON whose __metadata__ holds our strings."""
    if len(data) < 8:
        raise ValueError("file too short")
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("metadata is not an object")
    return {str(key): str(value) for key, value in metadata.items()}


def _file_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]
