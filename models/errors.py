"""Exceptions of the models package.

They subclass ValueError because each one means "the input or the configuration is wrong", which the app maps
to a client error (bad upload) or a startup error (bad settings) rather than to a crash.
"""


class EncoderConfigError(ValueError):
    """The requested backbone, head, weights or device cannot be used; the message says what to change."""


class ImageDecodeError(ValueError):
    """The bytes are not an image this service can read; the message says what is wrong with them."""


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than allowed; raised from the header, before any pixel is decoded."""
