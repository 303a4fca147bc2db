"""End-to-end `cbir index` throughput against the bare backbone forward, measured side by side in one run.

Both sides use the same images, batch size, max side and device. The forward side gets its input tensors
ready-made (decoded beforehand, grouped by shape, which is what the encoder does too) and times only the
network; the index side is the real bulk job (read, hash, decode, embed, database commit, FAISS add, saves)
on an empty data directory. With --images above the folder's size, files are repeated with a few bytes
appended after the image data, which decoders ignore: same pixels, new sha256, so none is skipped.

    python bench/index_throughput.py [--dir DIR] [--images N] [--batch-size B] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.encoders import encoder_from_settings  # noqa: E402
from app.services.bulk import index_files  # noqa: E402
from app.services.collection import Collection  # noqa: E402
from app.services.decoding import list_files  # noqa: E402
from models import Encoder, decode_image, to_tensor  # noqa: E402


def materialise(source: Path, count: int, target: Path) -> list[Path]:
    files = list_files(source)
    if count <= len(files):
        return files[:count]
    out = []
    for i in range(count):
        original = files[i % len(files)]
        copy = target / f"{i:07d}{original.suffix}"
        data = original.read_bytes()
        copy.write_bytes(data if i < len(files) else data + f"cbir-bench-{i}".encode())
        out.append(copy)
    return out


def forward_images_per_second(encoder: Encoder, settings: Settings, paths: list[Path]) -> float:
    batch_size = encoder.batch_size
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = defaultdict(list)
    for path in paths:
        image = decode_image(
            path.read_bytes(), max_side=settings.max_side, max_pixels=settings.max_pixels
        ).image
        tensor = to_tensor(image, settings.max_side)
        by_shape[tuple(tensor.shape)].append(tensor)
    batches = [
        torch.stack(group[i : i + batch_size])
        for group in by_shape.values()
        for i in range(0, len(group), batch_size)
    ]
    encoder.embed_tensors(batches[0])  # warm-up: first-call allocations and kernel selection
    started = time.perf_counter()
    for batch in batches:
        encoder.embed_tensors(batch)
    return len(paths) / (time.perf_counter() - started)


def index_images_per_second(encoder: Encoder, settings: Settings, paths: list[Path]) -> tuple[float, int]:
    collection = Collection.open(settings, encoder)
    warm = collection.embed_images([decode_image(paths[0].read_bytes(), max_side=settings.max_side).image])
    assert warm.shape[0] == 1
    started = time.perf_counter()
    report = index_files(collection, paths)
    seconds = time.perf_counter() - started
    collection.close()
    return report.added / seconds, report.added


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=ROOT.parent / "shared" / "datasets" / "corel1k")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the encoder's, by device")
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each side; best is kept")
    args = parser.parse_args()

    forward_runs: list[float] = []
    index_runs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cbir-bench-") as tmp:
        work = Path(tmp)
        (work / "files").mkdir()
        paths = materialise(args.dir, args.images, work / "files")
        settings = Settings(
            data_dir=work / "data",
            batch_size=args.batch_size,
            max_side=args.max_side,
            workers=args.workers,
            device=args.device,
        )
        encoder = encoder_from_settings(settings)
        if not isinstance(encoder, Encoder):  # its forward side feeds backbone tensors (to_tensor)
            parser.error("this benchmark measures the backbone encoder: unset CBIR_ENCODER")
        # Alternate the two sides so that a slow spell of a shared machine hits both alike; keep the best
        # run of each, the usual estimate of what the hardware can do.
        for run in range(args.repeats):
            forward_runs.append(forward_images_per_second(encoder, settings, paths))
            run_settings = settings.model_copy(update={"data_dir": work / f"data-{run}"})
            rate, added = index_images_per_second(encoder, run_settings, paths)
            index_runs.append(rate)
            print(f"run {run + 1}: forward {forward_runs[-1]:.1f} img/s, index {rate:.1f} img/s", flush=True)
    forward, indexed = max(forward_runs), max(index_runs)
    device, batch_size = str(encoder.device), encoder.batch_size
    print(
        f"images: {len(paths)} (added {added}), batch {batch_size}, max side {args.max_side}, device {device}"
    )
    print(f"bare forward : {forward:8.1f} img/s")
    print(f"cbir index   : {indexed:8.1f} img/s")
    print(f"ratio        : {indexed / forward:8.3f}")
    print(
        json.dumps(
            {
                "device": device,
                "torch_threads": torch.get_num_threads(),
                "images": len(paths),
                "batch_size": batch_size,
                "max_side": args.max_side,
                "index_img_s": round(indexed, 1),
                "forward_img_s": round(forward, 1),
                "ratio": round(indexed / forward, 3),
                "runs": {
                    "forward": [round(r, 1) for r in forward_runs],
                    "index": [round(r, 1) for r in index_runs],
                },
            }
        )
    )


if __name__ == "__main__":
    main()
