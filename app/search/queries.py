"""What a search request may add to its image: a region to search for, written as text by clients."""

from __future__ import annotations

from app.errors import InvalidRequestError

__all__ = ["Box", "parse_box"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original image


def parse_box(text: str) -> Box:
    """'x0,y0,x1,y1' (a form field or a CLI flag) -> floats; the collection checks it against the image."""
    try:
        x0, y0, x1, y1 = (float(part) for part in text.split(","))
    except ValueError:
        raise InvalidRequestError(f"box must be four numbers x0,y0,x1,y1 (pixels), got {text!r}") from None
    return x0, y0, x1, y1
