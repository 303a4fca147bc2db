"""End-to-end `cbir index` throughput against the bare backbone forward, measured side by side in one run.

Both sides use the same images, batch size, max side and device. The forward side gets its input ready on
the device (decoded, normalised and grouped by shape beforehand) and times only the encoder (backbone,
head, normalisation, vectors back to the host); the index side is the real bulk job — read, hash, decode
(nvJPEG on CUDA), embed, database commit, FAISS add, file copies and index saves — on an empty data
directory. --repeat R makes R copies of every file (Corel-1K x 20 = 20,000 files): each copy has a few
bytes appended after the image's end marker, which decoders ignore, so the pixels are the same but the
sha256 differs and the job indexes every copy instead of skipping it as a duplicate.

The encoder runs with --runtime (default auto: OpenVINO bf16 on an AMX CPU, models/runtimes); the same run
also times the torch fp32 eager forward (fp32_forward_img_s), and speedup_vs_fp32 is end-to-end indexing
over it. After indexing, one query (file bytes to hits: decode, embed, search, re-rank) is timed on the
indexed collection with the runtime and with torch fp32, alternating, medians kept (query_ms,
fp32_query_ms, query_ratio); the runtime's vectors must share fp32's fingerprint for that (int8 does not).

On CUDA the run also embeds the first 1,000 files with JPEGs decoded on the GPU and on the CPU and prints
the cosine between the two descriptors of each image. --memory instead runs `cbir index` in a child
process on 10,000 and on 100,000 files and prints the peak resident memory of each, side by side.
--features-cost also runs the job without extracting local features (the reader's ORB, stored with each row
for geometric verification since issue 13), alternating which of the two goes first, for what storing them
costs.

    python bench/index_throughput.py [--dir DIR] [--repeat R] [--device cuda] [--batch-size B] [--runs N]
                                     [--runtime auto|torch|openvino_bf16|...] [--queries 40] [--features-cost]
    python bench/index_throughput.py --memory [--sizes 10000,100000] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.collection.facade import Collection  # noqa: E402
from app.config import Settings  # noqa: E402
from app.encoders import encoder_from_settings  # noqa: E402
from app.files.decoding import Skipped, list_files  # noqa: E402
from app.jobs import runner  # noqa: E402
from app.jobs.bulk import index_files  # noqa: E402
from app.jobs.embed import Embedded  # noqa: E402
from app.jobs.runner import run_stages  # noqa: E402
from app.jobs.sources import SourceItem  # noqa: E402
from models import Encoder, decode_image  # noqa: E402
from models.preprocess import normalise_pixels, pixels_from_image  # noqa: E402

COREL = ROOT.parent / "shared" / "datasets" / "corel1k"


def materialise(source: Path, count: int, target: Path) -> list[Path]:
    """count files: the originals (copied, so every run reads the same disk), then marked copies."""
    files = list_files(source)
    out = []
    target.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        original = files[i % len(files)]
        copy = target / f"{i // 1000:04d}" / f"{i:07d}{original.suffix}"
        copy.parent.mkdir(exist_ok=True)
        data = original.read_bytes()
        copy.write_bytes(data if i < len(files) else data + f"cbir-bench-{i}".encode())
        out.append(copy)
    return out


def forward_images_per_second(encoder: Encoder, paths: list[Path], images: int, max_pixels: int) -> float:
    """The encoder alone on ready-made device tensors: the distinct images, cycled up to `images`."""
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = defaultdict(list)
    for path in paths[:1000]:
        decoded = decode_image(path.read_bytes(), max_side=encoder.max_side, max_pixels=max_pixels)
        pixels = pixels_from_image(decoded.image, encoder.max_side)
        by_shape[tuple(pixels.shape)].append(pixels)
    size = encoder.batch_size
    batches = []  # full batches only, per shape (cycling the shape's images), as the job runs them
    for group in by_shape.values():
        cycled = [group[i % len(group)] for i in range(max(size, len(group) - len(group) % size))]
        for i in range(0, len(cycled) - size + 1, size):
            batches.append(normalise_pixels(torch.stack(cycled[i : i + size]).to(encoder.device)))
    for shape in {tuple(batch.shape) for batch in batches}:  # warm-up: kernel choice, plans, allocations
        encoder.embed_tensors(next(batch for batch in batches if tuple(batch.shape) == shape))
    done = 0
    started = time.perf_counter()
    while done < images:
        for batch in batches:
            encoder.embed_tensors(batch)  # returns host vectors: synchronised
            done += len(batch)
    return done / (time.perf_counter() - started)


def index_images_per_second(
    encoder: Encoder, settings: Settings, paths: list[Path], copy_files: bool, features: bool = True
) -> tuple[float, int]:
    collection = Collection.open(settings, encoder)
    read_options = runner.read_options
    if not features:  # the job as it was before it stored local features (issue 13): for its cost only
        runner.read_options = lambda *a, **k: replace(read_options(*a, **k), local_features=False)
    try:
        started = time.perf_counter()
        report = index_files(collection, paths, copy_files=copy_files)
        seconds = time.perf_counter() - started
    finally:
        runner.read_options = read_options
    collection.close()
    if report.skipped:
        print(f"skipped {len(report.skipped)}: {report.skipped[:3]}", flush=True)
    return report.added / seconds, report.added


def query_latencies(
    settings: Settings, encoders: dict[str, Encoder], queries: list[Path], rounds: int = 3
) -> dict[str, float]:
    """Median ms of one query (bytes -> hits, k=10) per encoder, alternating them over `rounds`."""
    data = [path.read_bytes() for path in queries]
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for round_ in range(rounds):
        order = list(encoders) if round_ % 2 == 0 else list(encoders)[::-1]
        for name in order:
            collection = Collection.open(settings, encoders[name])
            collection.search_image(data[0], 10)  # warm-up: first shape, caches
            for blob in data:
                started = time.perf_counter()
                collection.search_image(blob, 10)
                times[name].append((time.perf_counter() - started) * 1000)
            collection.close()
    return {name: statistics.median(values) for name, values in times.items()}


def vectors_by_sha256(
    encoder: Encoder, settings: Settings, paths: list[Path], on_gpu: bool
) -> dict[str, np.ndarray]:
    """Each file's descriptor as `cbir index` makes it, with nvJPEG decoding the JPEGs or not."""
    found: dict[str, np.ndarray] = {}

    def keep(embedded: Sequence[Embedded], _dropped: int, _skipped: Sequence[Skipped]) -> None:
        for batch in embedded:
            found.update(zip([item.sha256 for item in batch.items], batch.vectors(), strict=True))

    items = [SourceItem(path) for path in paths]
    run_stages(
        items, encoder, keep, max_pixels=settings.max_pixels, gpu_decode=on_gpu, workers=settings.workers
    )
    return found


def decoder_cosines(encoder: Encoder, settings: Settings, paths: list[Path]) -> dict[str, float]:
    """Cosine between descriptors of the same files decoded on the GPU (nvJPEG) and on the CPU (PIL)."""
    vectors = [vectors_by_sha256(encoder, settings, paths, on_gpu) for on_gpu in (True, False)]
    gpu, cpu = vectors
    cosines = np.array([float(gpu[key] @ cpu[key]) for key in gpu if key in cpu])
    return {
        "images": len(cosines),
        "min": round(float(cosines.min()), 5),
        "mean": round(float(cosines.mean()), 5),
        "p01": round(float(np.quantile(cosines, 0.01)), 5),
    }


def peak_memory(args: argparse.Namespace, sizes: list[int]) -> None:
    """`cbir index` in a child process per size; peak RSS from wait4 (the largest process of the job)."""
    figures: dict[str, Any] = {"device": args.device, "images": {}}
    with tempfile.TemporaryDirectory(prefix="cbir-mem-") as tmp:
        work = Path(tmp)
        paths = materialise(args.dir, max(sizes), work / "files")
        for size in sizes:
            listing = work / f"list-{size}.csv"
            listing.write_text("path\n" + "\n".join(str(p) for p in paths[:size]) + "\n")
            command = [sys.executable, "-m", "app.cli", "index", str(listing), "--data-dir"]
            command += [str(work / f"data-{size}"), "--device", args.device, "--workers", str(args.workers)]
            command += ["--max-side", str(args.max_side)] + (["--no-copy"] if args.no_copy else [])
            if args.batch_size:
                command += ["--batch-size", str(args.batch_size)]
            started = time.perf_counter()
            child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - started
            output = child.stdout.read().decode() if child.stdout else ""
            if status != 0:
                raise SystemExit(f"cbir index failed on {size} files: {output}")
            peak_mib = usage.ru_maxrss / 1024  # Linux reports KiB
            figures["images"][str(size)] = {"peak_rss_mib": round(peak_mib, 1), "seconds": round(seconds, 1)}
            print(f"{size:>7} images: peak RSS {peak_mib:8.1f} MiB in {seconds:.1f} s", flush=True)
    small, large = (figures["images"][str(s)]["peak_rss_mib"] for s in (min(sizes), max(sizes)))
    vectors_mib = (max(sizes) - min(sizes)) * 1280 * 4 / 2**20  # the FAISS flat index's own growth
    figures |= {
        "growth_mib": round(large - small, 1),
        "vectors_mib": round(vectors_mib, 1),
        "growth_without_vectors_mib": round(large - small - vectors_mib, 1),
    }
    print(f"{'images':>10} {min(sizes):>12} {max(sizes):>12}")
    print(f"{'peak RSS':>10} {small:>10.1f}Mi {large:>10.1f}Mi")
    print(
        f"growth {large - small:.1f} MiB, of which vectors in the index {vectors_mib:.1f} MiB: "
        f"{large - small - vectors_mib:.1f} MiB besides"
    )
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=COREL)
    parser.add_argument("--repeat", type=int, default=1, help="copies of every file (20: 20,000 files)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N files (a busy machine)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the encoder's, by device")
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--workers", type=int, default=2, help="loading processes (one per spare core)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs of each side; best is kept")
    parser.add_argument("--no-copy", action="store_true", help="reference files instead of copying them")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--runtime", default="auto", help="CBIR_RUNTIME of the encoder measured [auto]")
    parser.add_argument("--queries", type=int, default=40, help="query latency: files queried per round")
    parser.add_argument("--memory", action="store_true", help="peak memory at --sizes instead")
    parser.add_argument(
        "--features-cost",
        action="store_true",
        help="also index without extracting local features (alternating), for what storing them costs",
    )
    parser.add_argument("--skip-cosine", action="store_true", help="CUDA: skip the GPU/CPU decode cosine")
    parser.add_argument("--sizes", default="10000,100000", help="--memory: file counts")
    args = parser.parse_args()
    if args.memory:
        peak_memory(args, [int(size) for size in args.sizes.split(",")])
        return

    forward_runs: list[float] = []
    fp32_runs: list[float] = []
    index_runs: list[float] = []
    bare_runs: list[float] = []  # --features-cost
    with tempfile.TemporaryDirectory(prefix="cbir-bench-") as tmp:
        work = Path(tmp)
        count = len(list_files(args.dir)) * args.repeat
        count = min(count, args.limit or count)
        paths = materialise(args.dir, count, work / "files")
        settings = Settings(
            data_dir=work / "data",
            batch_size=args.batch_size,
            max_side=args.max_side,
            workers=args.workers,
            device=args.device,
            compile=args.compile,
            runtime=args.runtime,
        )
        encoder = encoder_from_settings(settings)
        fp32 = encoder_from_settings(settings.model_copy(update={"runtime": "torch", "compile": False}))
        if not isinstance(encoder, Encoder) or not isinstance(
            fp32, Encoder
        ):  # the forward side feeds tensors
            parser.error("this benchmark measures the backbone encoder: unset CBIR_ENCODER")
        # Alternate the two sides so that a slow spell of a shared machine hits both alike; keep the best
        # run of each, the usual estimate of what the hardware can do.
        fp32_images = min(len(paths), 1000)  # the slow side: enough for a steady rate
        for run in range(args.runs):
            fp32_runs.append(forward_images_per_second(fp32, paths, fp32_images, settings.max_pixels))
            forward_runs.append(forward_images_per_second(encoder, paths, len(paths), settings.max_pixels))
            run_settings = settings.model_copy(update={"data_dir": work / f"data-{run}"})
            bare_settings = settings.model_copy(update={"data_dir": work / f"data-bare-{run}"})
            if args.features_cost and run % 2 == 1:  # the two jobs alternate which goes first
                bare_runs.append(
                    index_images_per_second(encoder, bare_settings, paths, not args.no_copy, False)[0]
                )
            rate, added = index_images_per_second(encoder, run_settings, paths, not args.no_copy)
            index_runs.append(rate)
            if args.features_cost and run % 2 == 0:
                bare_runs.append(
                    index_images_per_second(encoder, bare_settings, paths, not args.no_copy, False)[0]
                )
            if args.features_cost:
                print(f"run {run + 1}: index without local features {bare_runs[-1]:.1f} img/s", flush=True)
            print(
                f"run {run + 1}: fp32 forward {fp32_runs[-1]:.1f} img/s, {encoder.runtime.name} forward "
                f"{forward_runs[-1]:.1f} img/s, index {rate:.1f} img/s",
                flush=True,
            )
        latencies: dict[str, float] | None = None
        if encoder.fingerprint == fp32.fingerprint and args.queries > 0:
            queried = settings.model_copy(update={"data_dir": work / "data-0"})
            step = max(1, len(paths) // args.queries)
            latencies = query_latencies(
                queried, {"runtime": encoder, "fp32": fp32}, paths[::step][: args.queries]
            )
        on_gpu = encoder.device.type == "cuda" and not args.skip_cosine
        cosines = decoder_cosines(encoder, settings, paths[:1000]) if on_gpu else None
    forward, indexed, fp32_forward = max(forward_runs), max(index_runs), max(fp32_runs)
    device, batch_size = str(encoder.device), encoder.batch_size
    name = torch.cuda.get_device_name(encoder.device) if encoder.device.type == "cuda" else "cpu"
    print(
        f"images: {len(paths)} (added {added}), batch {batch_size}, max side {args.max_side}, "
        f"device {device} ({name}), loading processes {args.workers}, copy files {not args.no_copy}"
    )
    print(f"fp32 forward : {fp32_forward:8.1f} img/s (torch eager)")
    print(f"bare forward : {forward:8.1f} img/s ({encoder.runtime.name})")
    print(f"cbir index   : {indexed:8.1f} img/s")
    print(f"ratio        : {indexed / forward:8.3f}")
    print(f"vs fp32      : {indexed / fp32_forward:8.3f}x")
    if bare_runs:
        plain = max(bare_runs)
        print(f"no features  : {plain:8.1f} img/s (cbir index storing them runs at {indexed / plain:.3f}x)")
    if latencies is not None:
        print(f"one query    : {latencies['runtime']:.1f} ms against {latencies['fp32']:.1f} ms in fp32")
    if cosines is not None:
        print(f"GPU vs CPU JPEG decode, cosine of descriptors: {cosines}")
    print(
        json.dumps(
            {
                "device": device,
                "device_name": name,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "images": len(paths),
                "batch_size": batch_size,
                "max_side": args.max_side,
                "workers": args.workers,
                "copy_files": not args.no_copy,
                "compile": args.compile,
                "runtime": encoder.runtime.name,
                "index_img_s": round(indexed, 1),
                "forward_img_s": round(forward, 1),
                "ratio": round(indexed / forward, 3),
                "fp32_forward_img_s": round(fp32_forward, 1),
                "speedup_vs_fp32": round(indexed / fp32_forward, 3),
                "query_ms": round(latencies["runtime"], 1) if latencies else None,
                "fp32_query_ms": round(latencies["fp32"], 1) if latencies else None,
                "query_ratio": round(latencies["runtime"] / latencies["fp32"], 3) if latencies else None,
                "runs": {
                    "forward": [round(r, 1) for r in forward_runs],
                    "fp32_forward": [round(r, 1) for r in fp32_runs],
                    "index": [round(r, 1) for r in index_runs],
                    "index_without_local_features": [round(r, 1) for r in bare_runs],
                },
                "gpu_cpu_decode_cosine": cosines,
            }
        )
    )


if __name__ == "__main__":
    main()
