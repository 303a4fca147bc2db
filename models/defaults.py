"""The defaults that configuration names without loading a network.

app/config.py reads them to fill its settings; importing this module imports nothing (no torch), so
`cbir --help` and the commands that need no model stay fast.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CPU_BATCH", "CUDA_BATCH", "DEFAULT_BACKBONE", "DEFAULT_HEAD"]

# The embedded default: Lite0's ImageNet weights run as they were trained (see tf_efficientnet_lite0), which
# measured mAP 0.911 / P@10 0.972 on Corel-1K against 0.860 / 0.961 for timm's PyTorch-style graph.
DEFAULT_BACKBONE: Final = "tf_efficientnet_lite0"
DEFAULT_HEAD: Final = "gap"

# Images per forward pass when none is configured: 4 measured fastest on the 2-core CPU; 256 keeps an H100
# busy (README "How fast it indexes").
CPU_BATCH: Final = 4
CUDA_BATCH: Final = 256
