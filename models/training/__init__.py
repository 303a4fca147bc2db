"""Training the models that learn from the user's own images (no labels, no downloads)."""

from models.training.autoencoder import TrainConfig, TrainResult, train_autoencoder
from models.training.epochs import EpochReport
from models.training.noise import NOISE_KINDS, NoiseConfig, corrupt

__all__ = [
    "NOISE_KINDS",
    "EpochReport",
    "NoiseConfig",
    "TrainConfig",
    "TrainResult",
    "corrupt",
    "train_autoencoder",
]
