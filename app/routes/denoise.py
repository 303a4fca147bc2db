"""What the configured autoencoder makes of an uploaded picture."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.auth.policy import Access, policy
from app.collection.denoising import denoise, noise_config, require_autoencoder
from app.deps import CollectionDep, SettingsDep
from app.routes.uploads import read_upload
from app.schemas import ErrorOut

router = APIRouter(tags=["autoencoder"])


@router.post(
    "/denoise",
    response_class=Response,
    dependencies=[policy(Access.read, shed=True)],
    responses={
        200: {"content": {"image/png": {}}, "description": "The reconstruction, at the model's input size."},
        409: {"model": ErrorOut, "description": "The configured encoder is not an autoencoder."},
        413: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
def denoise_upload(
    collection: CollectionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The picture to rebuild.")],
    noise: Annotated[
        str, Form(description="Noise added before the model sees it: none, gaussian, masking, salt_pepper.")
    ] = "none",
    strength: Annotated[
        float, Form(ge=0.0, le=1.0, description="Gaussian: standard deviation; others: fraction of pixels.")
    ] = 0.3,
) -> Response:
    """The picture as the autoencoder rebuilds it (PNG), optionally from a noisy copy."""
    encoder = require_autoencoder(collection.encoder)
    corruption = noise_config(noise, strength)
    data = read_upload(file, settings.max_upload_bytes)
    with collection.gate.slot(bounded=True):
        png = denoise(encoder, data, max_pixels=settings.max_pixels, noise=corruption)
    return Response(content=png, media_type="image/png")
