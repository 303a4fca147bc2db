"""Approximate nearest-neighbour indexes at a million vectors: recall@10 against exact search, single-query
latency, build time and memory for each index type, and which type the automatic choice picks.

The vectors are real descriptors, not noise. The backbone's last-conv feature maps of the Corel-1K photos
(at the product's max side, 320 px) and of the CIFAR-10 test images (at --cifar-side, 96 px by default:
their originals are 32 px) are computed once with the product's own decoder, preprocessing and encoder, for
each image and its mirror image (a real horizontal flip through the network), and cached (--cache). Every
vector is then the GAP descriptor of a random region of one of those maps (a box of at least 30 % of each
side, pooled with torchvision's roi_align as the product's region queries are), L2-normalised: the
descriptor of a crop of a real photo. The 1,000 queries are other crops made the same way.

Ground truth is exact inner-product search (faiss.knn). Indexes are built with index.build.build_index,
as `cbir index-build` builds them; latency is one query at a time through VectorIndex.search with the
service's search threads (CBIR_SEARCH_THREADS). The last line is JSON.

    python bench/ann.py                                  # 1,000,000 vectors, every type (hnsw at --hnsw-n)
    python bench/ann.py --n 100000 --types flat,ivf_flat # quicker
    python bench/ann.py --n 20000 --types flat,hnsw --stores milvus   # the milvus store beside FAISS

``--stores milvus`` measures the ``milvus`` vector store (index/milvus.py) on the same vectors and queries:
built through the store's own add (batched inserts, a flush, HNSW M=16 efConstruction=200), searched one
query at a time through its search (a gRPC round trip each) at several ef. ``--milvus-uri`` is a Milvus
server, or by default Milvus Lite in a file under --cache.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.files.decoding import list_files  # noqa: E402
from index import INDEX_TYPES, IndexSpec, SearchParams, VectorIndex, VectorStore, build_store  # noqa: E402
from index.build import build_index  # noqa: E402
from index.factory import choose_type, sample_rows, spec_for, train_sample_size  # noqa: E402
from models import build_encoder, decode_image, to_tensor  # noqa: E402
from models.encoder import Encoder  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
K = 10
MIN_SIDE = 0.3  # a crop keeps at least 30 % of the map's width and of its height
TARGET_RECALL = 0.95
TARGET_P99_MS = 5.0
# Values swept for each type's search knob (index/faiss/types.py, IndexType.search_knob), and its label.
SWEEPS = {"nprobe": (4, 8, 16, 32, 64), "ef_search": (16, 32, 64, 128, 256)}
KNOB_LABELS = {"nprobe": "nprobe", "ef_search": "efSearch"}


# ---------------------------------------------------------------------- feature maps


def feature_maps(root: Path, max_side: int, encoder: Encoder, cache: Path) -> list[torch.Tensor]:
    """(C, h, w) float16 maps of every image under root and of its mirror image, cached on disk."""
    cache_file = (
        cache / f"maps-{root.name}-{max_side}-{re.sub(r'[^A-Za-z0-9.-]+', '_', encoder.fingerprint)}.pt"
    )
    if cache_file.exists():
        maps: list[torch.Tensor] = torch.load(cache_file)
        print(f"  {root.name}: {len(maps)} maps from {cache_file}", file=sys.stderr)
        return maps
    paths = [path for folder in sorted(root.iterdir()) if folder.is_dir() for path in list_files(folder)]
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    maps = []
    started = time.perf_counter()

    def run(batch: list[torch.Tensor]) -> None:
        stacked = torch.stack(batch)
        for tensor in (stacked, torch.flip(stacked, dims=[3])):
            [fmap] = encoder.feature_maps(tensor)
            maps.extend(fmap.to(torch.float16).unbind(0))

    for done, path in enumerate(paths, 1):
        decoded = decode_image(path.read_bytes(), max_side=max_side)
        tensor = to_tensor(decoded.image, max_side)
        group = by_shape.setdefault(tuple(tensor.shape), [])
        group.append(tensor)
        if len(group) == 16:
            run(by_shape.pop(tuple(tensor.shape)))
        if done % 250 == 0:
            rate = done / (time.perf_counter() - started)
            print(f"  {root.name}: {done}/{len(paths)} images, {rate:.1f} img/s", file=sys.stderr)
    for group in by_shape.values():
        run(group)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save([fmap.clone() for fmap in maps], cache_file)
    return maps


# ---------------------------------------------------------------------- descriptors of random crops


def crop_descriptors(maps: Sequence[torch.Tensor], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, C) L2-normalised GAP descriptors of random regions of randomly chosen maps."""
    channels = maps[0].shape[0]
    out = np.empty((n, channels), np.float32)
    owners = rng.integers(len(maps), size=n)
    order = np.argsort(owners, kind="stable")
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, fmap in enumerate(maps):
        shapes.setdefault((fmap.shape[1], fmap.shape[2]), []).append(i)
    starts = np.searchsorted(owners[order], np.arange(len(maps) + 1))
    for (h, w), members in shapes.items():
        for chunk_start in range(0, len(members), 512):
            chunk = members[chunk_start : chunk_start + 512]
            rows = np.concatenate([order[starts[i] : starts[i + 1]] for i in chunk])
            if not len(rows):
                continue
            local = {owner: j for j, owner in enumerate(chunk)}
            batch_index = np.array([local[int(owners[r])] for r in rows], dtype=np.float32)
            bw = rng.uniform(MIN_SIDE, 1.0, len(rows)) * w
            bh = rng.uniform(MIN_SIDE, 1.0, len(rows)) * h
            x0 = rng.uniform(0, 1, len(rows)) * (w - bw)
            y0 = rng.uniform(0, 1, len(rows)) * (h - bh)
            boxes = torch.from_numpy(
                np.stack([batch_index, x0, y0, x0 + bw, y0 + bh], axis=1).astype(np.float32)
            )
            stack = torch.stack([maps[i] for i in chunk]).float()
            pooled = _roi_gap(stack, boxes)
            out[rows] = pooled
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def _roi_gap(stack: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
    """Average of each box's part of its map: roi_align's bilinear bins, then their mean (the GAP head)."""
    from torchvision.ops import roi_align

    with torch.inference_mode():
        region = roi_align(
            stack, boxes, output_size=(3, 3), spatial_scale=1.0, sampling_ratio=2, aligned=True
        )
        return region.mean(dim=(2, 3)).numpy()


# ---------------------------------------------------------------------- measuring


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def latencies_ms(
    index: VectorIndex | VectorStore, queries: np.ndarray, params: SearchParams | None
) -> np.ndarray:
    out = np.empty(len(queries))
    for i, query in enumerate(queries):
        tick = time.perf_counter()
        index.search(query, K, params=params)
        out[i] = (time.perf_counter() - tick) * 1000
    return out


def batches(vectors: np.ndarray, size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(vectors), size):
        part = vectors[start : start + size]
        yield np.arange(start, start + len(part), dtype=np.int64), part


def measure(
    kind: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int, flat_queries: int
) -> dict[str, object]:
    n, dim = base.shape
    spec = spec_for(kind, n, dim)
    print(f"\n{kind}: {spec.describe()} on {n:,} vectors", file=sys.stderr)
    tick = time.perf_counter()
    sample = base[sample_rows(n, train_sample_size(spec))] if spec.needs_training else None
    index = build_index(dim, "bench", spec, batches(base), train_sample=sample)
    build_s = time.perf_counter() - tick
    del sample
    memory_mb = index.memory_bytes() / 2**20
    print(f"  built in {build_s:.1f} s, {memory_mb:,.0f} MiB", file=sys.stderr)
    rows = []
    settings: list[tuple[str, SearchParams | None]] = [("-", None)]
    knob = spec.kind.search_knob
    if knob is not None:
        settings = [
            (f"{KNOB_LABELS[knob]}={value}", SearchParams(**{knob: value}))
            for value in SWEEPS[knob]
            if not spec.is_ivf or value <= spec.nlist  # no more cells to probe than there are
        ]
    for label, params in settings:
        index.search_threads = None  # all cores for the batched recall measurement
        _, found = index.search(queries, K, params)
        recall = recall_at_k(found, truth)
        index.search_threads = threads
        timed = queries[:flat_queries] if spec.kind.exact else queries
        lat = latencies_ms(index, timed, params)
        row = {
            "setting": label,
            "recall@10": round(recall, 4),
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "timed_queries": len(timed),
        }
        rows.append(row)
        print(
            f"  {label:<14} recall@10 {recall:.4f}  p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms",
            file=sys.stderr,
        )
    default = _at_default(spec, rows)
    result: dict[str, object] = {
        **{key: default[key] for key in ("recall@10", "p50_ms", "p99_ms")},
        "n": n,
        "params": spec.params(),
        "build_s": round(build_s, 1),
        "memory_mb": round(memory_mb, 1),
        "sweep": rows,
    }
    del index
    gc.collect()
    return result


def measure_milvus(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, uri: str) -> dict[str, object]:
    """The milvus store on the same vectors: build through its add, then recall and latency per ef."""
    n, dim = base.shape
    print(f"\nmilvus: HNSW M=16 efConstruction=200 at {uri} on {n:,} vectors", file=sys.stderr)
    # A new collection per run (Milvus Lite cannot re-create a collection it dropped in the same process).
    name = f"bench_ann_{os.getpid()}_{n}"
    store = build_store("milvus", dim=dim, fingerprint="bench", uri=uri, collection=name)
    tick = time.perf_counter()
    for ids, part in batches(base, 20000):
        store.add(ids, part)
    build_s = time.perf_counter() - tick
    print(f"  built in {build_s:.1f} s (inserts, flush and index)", file=sys.stderr)
    rows = []
    for ef in SWEEPS["ef_search"]:
        params = SearchParams(ef_search=ef)
        _, found = store.search(queries, K, params=params)
        recall = recall_at_k(found, truth)
        lat = latencies_ms(store, queries, params)
        row = {
            "setting": f"ef={ef}",
            "recall@10": round(recall, 4),
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "timed_queries": len(queries),
        }
        rows.append(row)
        print(
            f"  ef={ef:<11} recall@10 {recall:.4f}  p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms",
            file=sys.stderr,
        )
    store.drop()  # type: ignore[attr-defined]
    default = next(row for row in rows if row["setting"] == "ef=64")  # the store's default ef
    return {
        **{key: default[key] for key in ("recall@10", "p50_ms", "p99_ms")},
        "n": n,
        "params": {"M": 16, "efConstruction": 200, "ef": 64},
        "build_s": round(build_s, 1),
        "memory_mb": None,  # held by the Milvus process, not this one
        "sweep": rows,
    }


def _at_default(spec: IndexSpec, rows: list[dict[str, object]]) -> dict[str, object]:
    """The row measured at the spec's own default search parameter (what the service uses)."""
    knob = spec.kind.search_knob
    label = "-" if knob is None else f"{KNOB_LABELS[knob]}={getattr(spec, knob)}"
    return next((row for row in rows if row["setting"] == label), rows[0])


def flat_sizes(
    base: np.ndarray, queries: np.ndarray, sizes: Sequence[int], threads: int
) -> list[dict[str, object]]:
    """Exact search latency at small sizes: where brute force stops meeting the target."""
    out = []
    for n in sizes:
        if n > len(base):
            continue
        index = VectorIndex(base.shape[1], "bench")
        index.add(np.arange(n, dtype=np.int64), base[:n])
        index.search_threads = threads
        lat = latencies_ms(index, queries[:300], None)
        row: dict[str, object] = {
            "n": n,
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
        }
        print(f"  flat at {n:>9,}: p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms", file=sys.stderr)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="database vectors [1,000,000]")
    parser.add_argument("--queries", type=int, default=1000, help="held-out query vectors [1000]")
    parser.add_argument("--types", default=",".join(INDEX_TYPES), help="comma-separated index types")
    parser.add_argument(
        "--hnsw-n", type=int, default=None, help="database size for hnsw (its build is slow) [--n]"
    )
    parser.add_argument(
        "--flat-queries", type=int, default=50, help="queries timed on flat at full size [50]"
    )
    parser.add_argument(
        "--flat-sizes", default="2000,5000,10000,20000,50000", help="exact-search latency at these sizes"
    )
    parser.add_argument(
        "--cifar-side", type=int, default=96, help="max side for CIFAR-10's 32 px images [96]"
    )
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "ann", help="feature map cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stores", default="", help="vector stores to measure beside FAISS: milvus")
    parser.add_argument("--milvus-uri", default=None, help="Milvus to measure [Milvus Lite under --cache]")
    parser.add_argument("--milvus-n", type=int, default=None, help="database size for milvus [--n]")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="threads for the feature maps (1 on a busy shared CPU) [1]",
    )
    args = parser.parse_args()
    kinds = [kind.strip() for kind in args.types.split(",") if kind.strip()]
    unknown = set(kinds) - set(INDEX_TYPES)
    if unknown:
        parser.error(f"unknown index types {sorted(unknown)}; choose from {', '.join(INDEX_TYPES)}")
    settings = Settings()
    threads = settings.search_threads
    torch.set_num_threads(args.torch_threads)

    tick = time.perf_counter()
    maps: list[torch.Tensor] = []
    for name, side in (("corel1k", settings.max_side), ("cifar10-test", args.cifar_side)):
        encoder = build_encoder(
            settings.backbone, "gap", weights=settings.weights, max_side=side, device="cpu"
        )
        maps.extend(feature_maps(DATASETS / name, side, encoder, args.cache))
    print(
        f"{len(maps):,} feature maps (images and their mirror images) in {time.perf_counter() - tick:.1f} s",
        file=sys.stderr,
    )

    tick = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    base = crop_descriptors(maps, args.n, rng)
    queries = crop_descriptors(maps, args.queries, np.random.default_rng(args.seed + 1))
    del maps
    gc.collect()
    dim = base.shape[1]
    took = time.perf_counter() - tick
    print(
        f"{args.n:,} database and {args.queries:,} query crops, dim {dim}, in {took:.1f} s", file=sys.stderr
    )

    tick = time.perf_counter()
    _, truth = faiss.knn(queries, base, K, metric=faiss.METRIC_INNER_PRODUCT)
    print(f"exact top-{K} of every query in {time.perf_counter() - tick:.1f} s", file=sys.stderr)

    auto = choose_type(1_000_000, dim, settings.index_memory_mb)
    budget = settings.index_memory_mb
    print(f"\nauto choice for 1,000,000 vectors of dim {dim}, budget {budget} MiB: {auto}", file=sys.stderr)
    print(
        f"search threads per query: {threads} (CBIR_SEARCH_THREADS); faiss {faiss.__version__}",
        file=sys.stderr,
    )
    results: dict[str, object] = {"auto": auto}
    print("\nexact search latency by size (flat):", file=sys.stderr)
    results["flat_by_size"] = flat_sizes(
        base, queries, [int(s) for s in args.flat_sizes.split(",") if s], threads
    )
    for kind in kinds:
        n = args.hnsw_n if kind == "hnsw" and args.hnsw_n else args.n
        if n < args.n:
            _, small_truth = faiss.knn(queries, base[:n], K, metric=faiss.METRIC_INNER_PRODUCT)
            results[kind] = measure(kind, base[:n], queries, small_truth, threads, args.flat_queries)
        else:
            results[kind] = measure(kind, base, queries, truth, threads, args.flat_queries)

    if "milvus" in args.stores.split(","):
        n = args.milvus_n or args.n
        small_truth = truth
        if n < args.n:
            _, small_truth = faiss.knn(queries, base[:n], K, metric=faiss.METRIC_INNER_PRODUCT)
        args.cache.mkdir(parents=True, exist_ok=True)
        uri = args.milvus_uri or str(args.cache / "milvus-bench.db")
        results["milvus"] = measure_milvus(base[:n], queries, small_truth, uri)

    print("\n" + _table(results, args.n), file=sys.stderr)
    meets = [kind for kind in kinds if _meets(results[kind])]
    print(
        f"target (1M vectors, recall@10 >= {TARGET_RECALL}, p99 <= {TARGET_P99_MS} ms): met by "
        f"{', '.join(meets) or 'none'}; auto picks {auto} -> {'met' if auto in meets else 'NOT met'}",
        file=sys.stderr,
    )
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}"
    print(json.dumps(results, separators=(",", ":")))


def _meets(row: object) -> bool:
    """The done-when target: at a million vectors, recall@10 >= 0.95 at p99 <= 5 ms."""
    if not isinstance(row, dict):
        return False
    return bool(
        row["recall@10"] >= TARGET_RECALL and row["p99_ms"] <= TARGET_P99_MS and row["n"] >= 1_000_000
    )


def _table(results: dict[str, object], n: int) -> str:
    heads = ("build s", "MiB", "recall@10", "p50 ms", "p99 ms")
    lines = [f"{'type':<9} {'n':>10} {'params':<48} " + " ".join(f"{h:>9}" for h in heads)]
    for kind in (*INDEX_TYPES, "milvus"):
        row = results.get(kind)
        if not isinstance(row, dict):
            continue
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        memory = row["memory_mb"]
        mib = f"{memory:>9,.0f}" if isinstance(memory, int | float) else f"{'-':>9}"
        lines.append(
            f"{kind:<9} {row['n']:>10,} {params:<48} {row['build_s']:>9.1f} {mib} "
            f"{row['recall@10']:>9.4f} {row['p50_ms']:>9.3f} {row['p99_ms']:>9.3f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
