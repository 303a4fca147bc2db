"""Shared test setup: registers the `tiny_random` backbone, a seeded 3-layer conv net.

Tests of the app, the index and the encoder plumbing need a backbone that builds in milliseconds, needs no
weights file and gives the same vectors in every process; the product registry must not ship one, so it is
registered here, on import, for every test.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from models import register_backbone
from models.backbones import Backbone

TINY_CHANNELS = 16

# The suite's app tests compare vectors exactly and count files in data directories, so they run the torch
# fp32 reference; tests/models/test_runtimes.py and tests/app/test_runtime_service.py test the other
# runtimes and auto explicitly. A CBIR_RUNTIME already set (a CI job for one runtime) is kept.
os.environ.setdefault("CBIR_RUNTIME", "torch")


@register_backbone("tiny_random")
def tiny_random(weights: Path | None) -> Backbone:
    """Stride-8 net with random but seeded weights; `weights` is ignored (there is nothing to load)."""
    with torch.random.fork_rng(devices=[]):  # seed locally: other tests' random streams stay untouched
        torch.manual_seed(0)
        module = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, TINY_CHANNELS, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
        )
    return Backbone(module=module, out_channels=TINY_CHANNELS, weights_id="random-seed0")
