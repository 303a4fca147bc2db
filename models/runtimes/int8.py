"""int8 calibration without labels: NNCF post-training quantisation on a sample of the user's own pictures.

Calibration only measures activation ranges, so any pictures of the collection do (no labels); pictures
like the ones searched matter: in issue 17, calibrating on CIFAR instead of Corel cost 0.02 mAP on Corel.
The quantised model and a JSON record (its id, how many pictures, from where) are written to the runtime
cache; the id goes into the encoder fingerprint, so vectors of two calibrations never share an index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from models.errors import EncoderConfigError
from models.runtimes.base import RuntimeContext
from models.runtimes.openvino import fp32_model, ir_path, openvino_missing, save_atomically

__all__ = ["Calibration", "calibrate", "read_calibration"]

# NNCF's default subset; fewer pictures calibrate too, with noisier activation ranges.
DEFAULT_SAMPLES = 300
MIN_SAMPLES = 8


@dataclass(frozen=True)
class Calibration:
    calibration_id: str
    model_key: str
    model_file: str  # name of the .xml next to the record
    images: int
    source: str

    model_path: Path = Path()  # filled in when read

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("model_path")
        return out


def _record_path(context: RuntimeContext) -> Path:
    path = ir_path(context, "-int8")
    if path is None:
        raise EncoderConfigError(
            "the int8 runtime needs a runtime cache directory for its calibrated model (CBIR_RUNTIME_CACHE)"
        )
    return path.with_suffix(".json")


def read_calibration(context: RuntimeContext) -> Calibration:
    """The calibrated model recorded for this backbone; refused, with the fix, when there is none."""
    record = _record_path(context)
    hint = "run `cbir optimize DIR` (DIR: some of your pictures) or `cbir optimize` (a collection sample)"
    if not record.is_file():
        raise EncoderConfigError(
            f"CBIR_RUNTIME=openvino_int8 needs a calibrated model, none in {record.parent}: {hint}"
        )
    try:
        data = json.loads(record.read_text())
        calibration = Calibration(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise EncoderConfigError(f"the int8 calibration record {record} is damaged ({exc}): {hint}") from exc
    if calibration.model_key != context.model_key:
        raise EncoderConfigError(
            f"{record} was calibrated for {calibration.model_key}, not {context.model_key}: {hint}"
        )
    model = record.parent / calibration.model_file
    if not model.is_file():
        raise EncoderConfigError(f"the int8 model {model} named by {record} is missing: {hint}")
    return Calibration(**{**calibration.as_dict(), "model_path": model})  # type: ignore[arg-type]


def calibration_id(model_key: str, picture_ids: Sequence[str], max_side: int) -> str:
    import nncf

    text = json.dumps([model_key, sorted(picture_ids), max_side, nncf.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def calibrate(
    module: nn.Module,
    samples: Sequence[torch.Tensor],
    context: RuntimeContext,
    *,
    picture_ids: Sequence[str],
    max_side: int,
    source: str,
) -> Calibration:
    """Quantise the backbone on ``samples`` ((3, H, W) network input, as to_tensor makes it) and cache it.

    ``picture_ids`` (e.g. the pictures' sha256) name the calibration: the same pictures give the same id.
    """
    reason = openvino_missing()
    if reason is not None:
        raise EncoderConfigError(f"int8 needs OpenVINO and NNCF: {reason}")
    try:
        import nncf
    except ImportError:
        raise EncoderConfigError("int8 needs the package nncf (pip install nncf)") from None
    if len(samples) < MIN_SAMPLES:
        raise EncoderConfigError(
            f"calibration needs at least {MIN_SAMPLES} pictures, got {len(samples)}: give a folder with more"
        )
    record_path = _record_path(context)
    model = fp32_model(module, context)
    dataset = nncf.Dataset(list(samples), lambda tensor: tensor[None].numpy())
    quantised = nncf.quantize(
        model, dataset, subset_size=len(samples), preset=nncf.QuantizationPreset.PERFORMANCE
    )
    ident = calibration_id(context.model_key, picture_ids, max_side)
    model_path = record_path.with_name(f"{record_path.stem}-{ident}.xml")
    save_atomically(quantised, model_path)
    calibration = Calibration(ident, context.model_key, model_path.name, len(samples), source)
    staged = record_path.with_suffix(".json.tmp")
    staged.write_text(json.dumps(calibration.as_dict(), indent=1))
    staged.replace(record_path)
    return Calibration(**{**calibration.as_dict(), "model_path": model_path})  # type: ignore[arg-type]
