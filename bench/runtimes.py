"""Every runtime usable here against torch fp32 eager, on the Corel photos, in one run (README table).

For each runtime: images per second at the CPU batch size and at batch 1 (preprocessed tensors in memory,
the encoder's whole forward: backbone, head, normalisation), the speed-up over torch fp32 measured in the
same rounds (rounds alternate the runtimes, so a busy spell of a shared machine hits all alike; medians of
the per-round ratios are kept), the cosine of each image's descriptor to its fp32 one (min / mean),
Corel-1K mAP and P@10 (every image against the other 999, no re-ranking), start-up time (a child process
building the encoder from the runtime cache and embedding one picture, imports included) and that child's
peak RSS. int8 is calibrated first (`cbir optimize` on an evenly spaced sample of --calibrate pictures of
the collection, no labels). Prints a table, then one JSON line {"rows": [...], "auto": ...}.

    python bench/runtimes.py [--dir DIR] [--rounds 5] [--seconds 2] [--runtimes torch,openvino_bf16]
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/runtimes.py   # as a CPU without AMX / AVX-512 sees it
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.files.decoding import list_files  # noqa: E402
from app.learn.evaluation import retrieval_metrics  # noqa: E402
from app.learn.optimize import optimize  # noqa: E402
from models import Encoder, build_encoder, decode_image, to_tensor  # noqa: E402
from models.runtimes import available_runtimes, choose_runtime, get_runtime  # noqa: E402

COREL = ROOT.parent / "shared" / "datasets" / "corel1k"
REFERENCE = "torch"


def load(
    root: Path, max_side: int, per_class: int | None
) -> tuple[list[torch.Tensor], np.ndarray, list[Path]]:
    paths = list_files(root)
    if per_class is not None:  # a busy machine: the first N photos of each class (mAP of that subset)
        by_class: dict[str, list[Path]] = defaultdict(list)
        for path in paths:
            by_class[path.parent.name].append(path)
        paths = [path for group in by_class.values() for path in group[:per_class]]
    classes = sorted({p.parent.name for p in paths})
    tensors = [to_tensor(decode_image(p.read_bytes(), max_side=max_side).image, max_side) for p in paths]
    labels = np.array([classes.index(p.parent.name) for p in paths])
    return tensors, labels, paths


def embed_all(encoder: Encoder, tensors: list[torch.Tensor]) -> np.ndarray:
    out = np.zeros((len(tensors), encoder.dim), dtype=np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, tensor in enumerate(tensors):
        by_shape[tuple(tensor.shape)].append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), encoder.batch_size):
            chunk = indices[start : start + encoder.batch_size]
            out[chunk] = encoder.embed_tensors(torch.stack([tensors[i] for i in chunk]))
    return out


def rate(encoder: Encoder, batches: list[torch.Tensor], seconds: float) -> float:
    """Images per second over the batches, cycled for at least `seconds`."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            encoder.embed_tensors(batch)
            done += len(batch)
    return done / (time.perf_counter() - started)


def speed_batches(tensors: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """Full batches of each of the two most common shapes (Corel: landscape and portrait), 4 of each."""
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = defaultdict(list)
    for tensor in tensors:
        by_shape[tuple(tensor.shape)].append(tensor)
    common = sorted(by_shape.values(), key=len, reverse=True)[:2]
    return [torch.stack(group[i * size : (i + 1) * size]) for group in common for i in range(4)]


def child_start(runtime: str, settings: Settings, picture: Path) -> dict[str, float]:
    """Start-up of a fresh process from the cache: imports, encoder, first vector; and its peak RSS."""
    code = (
        "import time; t = time.perf_counter(); import sys, json; sys.path.insert(0, sys.argv[1]);"
        "from models import build_encoder, decode_image; from pathlib import Path;"
        "e = build_encoder(runtime=sys.argv[2], runtime_cache=Path(sys.argv[3]), device='cpu');"
        "e.embed([decode_image(Path(sys.argv[4]).read_bytes(), max_side=e.max_side).image]);"
        # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak across fork + exec, so every
        # child reported the bench's own ~3 GiB.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1];"
        "print(json.dumps({'start_s': time.perf_counter() - t, 'rss_mib': int(hwm) / 1024}))"
    )
    args = [str(ROOT), runtime, str(settings.runtime_cache_dir), str(picture)]
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=os.environ
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=COREL)
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=5, help="alternating speed rounds (medians kept)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per runtime, batch size and round")
    parser.add_argument("--runtimes", default=None, help="comma-separated; default: every usable one")
    parser.add_argument("--calibrate", type=int, default=300, help="int8: pictures sampled for calibration")
    parser.add_argument("--per-class", type=int, default=None, help="only N photos per class (quicker)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads [torch's default]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.runtimes.split(",") if args.runtimes else available_runtimes()
    names = [REFERENCE] + [n for n in names if n != REFERENCE and get_runtime(n).missing() is None]
    tensors, labels, paths = load(args.dir, args.max_side, args.per_class)
    with tempfile.TemporaryDirectory(prefix="cbir-runtimes-") as tmp:
        settings = Settings(data_dir=Path(tmp), max_side=args.max_side, device="cpu")
        if "openvino_int8" in names:
            calibration = optimize(settings, args.dir, samples=args.calibrate)
            print(
                f"int8 calibrated on {calibration.images} pictures ({calibration.calibration_id})", flush=True
            )
        encoders: dict[str, Encoder] = {}
        rows: dict[str, dict[str, Any]] = {}
        for name in names:
            started = time.perf_counter()
            encoder = build_encoder(
                runtime=name, runtime_cache=settings.runtime_cache_dir, max_side=args.max_side, device="cpu"
            )
            encoder.embed_tensors(tensors[0][None])
            rows[name] = {"runtime": name, "fingerprint_shared": "/rt-" not in encoder.fingerprint}
            rows[name]["first_build_s"] = round(time.perf_counter() - started, 2)
            encoders[name] = encoder
            print(f"{name}: built and converted in {rows[name]['first_build_s']} s", flush=True)
        vectors = {name: embed_all(encoder, tensors) for name, encoder in encoders.items()}
        for name, row in rows.items():
            cosines = (vectors[name] * vectors[REFERENCE]).sum(axis=1)
            mean_ap, precision = retrieval_metrics(vectors[name], labels, encoders[name].fingerprint)
            row |= {
                "cos_min": round(float(cosines.min()), 5),
                "cos_mean": round(float(cosines.mean()), 5),
                "mAP": round(mean_ap, 4),
                "P@10": round(precision[10], 4),
            }
            row |= {k: round(v, 2) for k, v in child_start(name, settings, paths[0]).items()}
        sizes = {"batch": encoders[REFERENCE].batch_size, "batch1": 1}
        batches = {key: speed_batches(tensors, size) for key, size in sizes.items()}
        for group in batches.values():  # warm-up: every shape once (OpenVINO's static copies too)
            for encoder in encoders.values():
                for batch in group:
                    for _ in range(9):
                        encoder.embed_tensors(batch)
        speeds: dict[str, dict[str, list[float]]] = {n: {k: [] for k in sizes} for n in names}
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for key in sizes:
                for name in order:
                    speeds[name][key].append(rate(encoders[name], batches[key], args.seconds))
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
        for name, row in rows.items():
            for key in sizes:
                ratios = [a / b for a, b in zip(speeds[name][key], speeds[REFERENCE][key], strict=True)]
                suffix = "" if key == "batch" else "_b1"
                row[f"img_s{suffix}"] = round(statistics.median(speeds[name][key]), 1)
                row[f"speedup{suffix}"] = round(statistics.median(ratios), 2)
    auto = choose_runtime("auto", torch.device("cpu")).name
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"batch {sizes['batch']}, threads {torch.get_num_threads()}, ISA cap {cap}")
    header = ["runtime", "img_s", "speedup", "img_s_b1", "speedup_b1", "cos_min", "cos_mean", "mAP", "P@10"]
    header += ["start_s", "rss_mib", "fingerprint_shared"]
    print(" | ".join(header))
    for row in rows.values():
        print(" | ".join(str(row[h]) for h in header))
    meta = {"batch_size": sizes["batch"], "threads": torch.get_num_threads(), "rounds": args.rounds}
    meta["isa_cap"] = os.environ.get("ONEDNN_MAX_CPU_ISA")
    meta["images"] = len(paths)
    meta["load_average"] = round(os.getloadavg()[0], 1)
    meta["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps({"rows": list(rows.values()), "auto": auto, **meta}))


if __name__ == "__main__":
    main()
