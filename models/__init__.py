"""Networks and image preprocessing: image bytes in, float32 vectors out. No HTTP, FAISS or SQL here."""

from models.autoencoder import AutoencoderEncoder, load_autoencoder
from models.backbones import Backbone, available_backbones, build_backbone, register_backbone
from models.encoder import Encoder, build_encoder
from models.errors import EncoderConfigError, ImageDecodeError, ImageTooLargeError
from models.heads import Head, available_heads, build_head, register_head
from models.preprocess import PREPROCESS_VERSION, DecodedImage, decode_image, to_tensor
from models.protocols import ImageEncoder

__all__ = [
    "PREPROCESS_VERSION",
    "AutoencoderEncoder",
    "Backbone",
    "DecodedImage",
    "Encoder",
    "EncoderConfigError",
    "Head",
    "ImageDecodeError",
    "ImageEncoder",
    "ImageTooLargeError",
    "available_backbones",
    "available_heads",
    "build_backbone",
    "build_encoder",
    "build_head",
    "decode_image",
    "load_autoencoder",
    "register_backbone",
    "register_head",
    "to_tensor",
]
