"""What a search request may add to its image: a region to search for, written as text by clients."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.errors import InvalidRequestError

if TYPE_CHECKING:  # parse_box serves the CLI, which must not import torch for `cbir --help`
    from models import DecodedImage

__all__ = ["Box", "check_box", "parse_box", "scaled_box"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original image


def parse_box(text: str) -> Box:
    """'x0,y0,x1,y1' (a form field or a CLI flag) -> floats; the collection checks it against the image."""
    try:
        x0, y0, x1, y1 = (float(part) for part in text.split(","))
    except ValueError:
        raise InvalidRequestError(f"box must be four numbers x0,y0,x1,y1 (pixels), got {text!r}") from None
    return x0, y0, x1, y1


def check_box(box: Box, decoded: DecodedImage) -> None:
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= decoded.width and 0 <= y0 < y1 <= decoded.height):
        raise InvalidRequestError(
            f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must lie inside the {decoded.width}x{decoded.height} "
            "image with x0 < x1 and y0 < y1 (pixels of the uploaded image, after EXIF rotation)"
        )


def scaled_box(box: Box, decoded: DecodedImage) -> Box:
    """The box, given in the original's pixels, in those of the decoded picture (resized to max_side)."""
    x0, y0, x1, y1 = box
    sx, sy = decoded.image.width / decoded.width, decoded.image.height / decoded.height
    return x0 * sx, y0 * sy, min(x1 * sx, decoded.image.width), min(y1 * sy, decoded.image.height)
