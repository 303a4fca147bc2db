"""The denoising autoencoder's code as a descriptor, against the baselines, measured in one run.

MNIST protocol (../shared/datasets/README.md): 1,000 queries (the first 100 of each class of t10k) against
the other 9,000 t10k digits; mAP over all relevant and P@10. Everything that is fitted (PCA, the autoencoder)
is fitted on the 5,000 training digits of the CSV only, and never sees a label.

CIFAR-10 protocol: 1,000 queries (the first 100 of each class) against the other 9,000; mAP over all relevant
and P@100. The autoencoder trains on the 9,000 database images, without their labels; the reference is the
product's default descriptor (EfficientNet-Lite0 ImageNet weights, global average pooling, max side 320).

The autoencoder is trained by the same function as `cbir train autoencoder`, saved, loaded back through
`load_autoencoder` and fed PIL pictures through `embed`, exactly as the service would use it. The table is
followed by one line of JSON.

    python bench/dae.py [--epochs 15] [--code-size 32] [--skip-cifar]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.mnist import DEFAULT_ROOT as MNIST_ROOT  # noqa: E402
from bench.mnist import load_test, load_train, query_split, to_pil  # noqa: E402
from bench.retrieval import Figures, l2_normalise, query_figures  # noqa: E402
from models import build_encoder, decode_image  # noqa: E402
from models.autoencoder import AutoencoderConfig, image_to_tensor, load_autoencoder  # noqa: E402
from models.training import EpochReport, NoiseConfig, TrainConfig, train_autoencoder  # noqa: E402

CIFAR_ROOT = ROOT.parent / "shared" / "datasets" / "cifar10-test"
PER_CLASS = 100  # queries per class, both protocols


@dataclass(frozen=True)
class Row:
    name: str
    dim: int
    figures: Figures
    train_s: float  # time to fit whatever the descriptor needs (0 for none, or a pretrained network)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mAP": round(self.figures.mean_ap, 4),
            f"P@{self.figures.k}": round(self.figures.precision, 4),
            "dim": self.dim,
            "train_s": round(self.train_s, 1),
        }


def log_epoch(report: EpochReport) -> None:
    val = f"{report.val_loss:.5f}" if report.val_loss is not None else "-"
    print(
        f"  epoch {report.epoch:>2}/{report.epochs}: train loss {report.train_loss:.5f}, validation {val}"
        f"{' (best)' if report.improved else ''}, {report.seconds:.0f} s",
        flush=True,
    )


def train_dae(
    pictures: Sequence[Image.Image], config: AutoencoderConfig, train: TrainConfig, out: Path
) -> float:
    """Train on the pictures as `cbir train autoencoder` would prepare them; returns the training seconds."""
    images = torch.stack([image_to_tensor(p, config) for p in pictures]).mul(255).round().to(torch.uint8)
    started = time.perf_counter()
    train_autoencoder(images, config, train, out, on_epoch=log_epoch)
    return time.perf_counter() - started


def evaluate(
    name: str,
    vectors: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    train_s: float,
) -> Row:
    rows = l2_normalise(vectors)
    figures = query_figures(rows[queries], labels[queries], rows[database], labels[database], k=k)
    print(f"  {name}: mAP {figures.mean_ap:.4f}, P@{k} {figures.precision:.4f}", flush=True)
    return Row(name, vectors.shape[1], figures, train_s)


def embed_all(
    embed: Callable[[list[Image.Image]], np.ndarray], pictures: Sequence[Image.Image]
) -> np.ndarray:
    return np.concatenate([embed(list(pictures[i : i + 256])) for i in range(0, len(pictures), 256)])


def mnist(args: argparse.Namespace, work: Path) -> list[Row]:
    print("MNIST: 5,000 training digits (CSV); 1,000 t10k queries against the other 9,000", flush=True)
    train, test = load_train(args.mnist), load_test(args.mnist)
    queries, database = query_split(test.labels, PER_CLASS)
    pixels = test.images.reshape(len(test), -1).astype(np.float32) / 255.0
    rows = [evaluate("pixels", pixels, test.labels, queries, database, 10, 0.0)]

    started = time.perf_counter()
    pca = faiss.PCAMatrix(pixels.shape[1], args.code_size)
    pca.train(np.ascontiguousarray(train.images.reshape(len(train), -1), dtype=np.float32) / 255.0)
    fit_s = time.perf_counter() - started
    projected = pca.apply(np.ascontiguousarray(pixels))
    rows.append(evaluate(f"PCA-{args.code_size}", projected, test.labels, queries, database, 10, fit_s))

    config = AutoencoderConfig(input_size=28, channels=1, code_size=args.code_size, width=args.width)
    checkpoint = work / "mnist-dae.pt"
    print(f"  training the autoencoder ({config}) on {len(train)} digits", flush=True)
    train_s = train_dae([to_pil(image) for image in train.images], config, training(args), checkpoint)
    encoder = load_autoencoder(checkpoint, device=args.device)
    codes = embed_all(encoder.embed, [to_pil(image) for image in test.images])
    rows.append(
        evaluate(f"DAE code ({encoder.fingerprint})", codes, test.labels, queries, database, 10, train_s)
    )
    return rows


def load_cifar(root: Path) -> tuple[list[bytes], np.ndarray]:
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) != 10:
        raise FileNotFoundError(f"expected the 10 CIFAR-10 class folders under {root}, found {len(classes)}")
    data: list[bytes] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        files = sorted(folder.glob("*.jpg"))
        data.extend(path.read_bytes() for path in files)
        labels.extend([label] * len(files))
    return data, np.array(labels)


def cifar(args: argparse.Namespace, work: Path) -> list[Row]:
    print("CIFAR-10 test: 1,000 queries against the other 9,000", flush=True)
    data, labels = load_cifar(args.cifar)
    queries, database = query_split(labels, PER_CLASS)

    lite0 = build_encoder(device=args.device, max_side=args.lite0_side)
    started = time.perf_counter()
    # Decoded a chunk at a time: 10,000 pictures at 320 px would take 3 GB.
    chunks: list[np.ndarray] = []
    for i in range(0, len(data), 256):
        chunks.append(
            lite0.embed([decode_image(b, max_side=lite0.max_side).image for b in data[i : i + 256]])
        )
        if (i // 256) % 8 == 7:
            done = i + len(chunks[-1])
            print(f"    {done} images, {done / (time.perf_counter() - started):.1f} img/s", flush=True)
    print(f"  Lite0 embedded {len(data)} images in {time.perf_counter() - started:.0f} s", flush=True)
    name = f"Lite0 GAP (ImageNet, side {lite0.max_side})"
    rows = [evaluate(name, np.concatenate(chunks), labels, queries, database, 100, 0.0)]

    config = AutoencoderConfig(input_size=32, channels=3, code_size=args.cifar_code_size, width=args.width)
    checkpoint = work / "cifar-dae.pt"
    small = [decode_image(blob, max_side=config.input_size).image for blob in data]
    print(f"  training the autoencoder ({config}) on the {len(database)} database images", flush=True)
    train_s = train_dae([small[i] for i in database], config, training(args, cifar=True), checkpoint)
    encoder = load_autoencoder(checkpoint, device=args.device)
    codes = embed_all(encoder.embed, small)
    rows.append(evaluate(f"DAE code ({encoder.fingerprint})", codes, labels, queries, database, 100, train_s))
    return rows


def training(args: argparse.Namespace, *, cifar: bool = False) -> TrainConfig:
    return TrainConfig(
        epochs=args.cifar_epochs if cifar else args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        noise=NoiseConfig(kind=args.noise, strength=args.strength, jitter=args.jitter),
    )


def print_table(title: str, rows: list[Row]) -> None:
    k = rows[0].figures.k
    print(f"\n{title}")
    print(f"{'descriptor':<48} {'dim':>5} {'mAP':>7} {f'P@{k}':>7} {'train s':>8}")
    for row in rows:
        fig = row.figures
        print(f"{row.name:<48} {row.dim:>5} {fig.mean_ap:>7.4f} {fig.precision:>7.4f} {row.train_s:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mnist", type=Path, default=MNIST_ROOT)
    parser.add_argument("--cifar", type=Path, default=CIFAR_ROOT)
    parser.add_argument("--skip-cifar", action="store_true", help="MNIST only (CIFAR's Lite0 side is slow)")
    parser.add_argument("--code-size", type=int, default=32, help="MNIST code size, and the PCA dimension")
    parser.add_argument("--cifar-code-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cifar-epochs", type=int, default=5)
    parser.add_argument("--lite0-side", type=int, default=320, help="the product's default max side")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--noise", default="gaussian")
    parser.add_argument("--strength", type=float, default=0.3)
    parser.add_argument("--jitter", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    print(f"torch threads {torch.get_num_threads()}, device {args.device}", flush=True)
    results: dict[str, dict[str, dict[str, float | int]]] = {}
    with tempfile.TemporaryDirectory(prefix="cbir-dae-bench-") as tmp:
        mnist_rows = mnist(args, Path(tmp))
        cifar_rows = [] if args.skip_cifar else cifar(args, Path(tmp))
    print_table("MNIST (t10k: 1,000 queries / 9,000 database)", mnist_rows)
    results["mnist"] = dict(zip(("pixels", "pca", "dae"), (r.as_dict() for r in mnist_rows), strict=True))
    if cifar_rows:
        print_table("CIFAR-10 test (1,000 queries / 9,000 database)", cifar_rows)
        results["cifar10"] = dict(zip(("lite0_gap", "dae"), (r.as_dict() for r in cifar_rows), strict=True))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
