"""What geometric verification adds to a single query: today's default beside the new one, in one run.

A collection of Corel-1K photos is indexed through the service's own Collection; then single queries
(edited copies of some of its photos, bench/copies.py, the uploads' path: decode, embed, rank) are timed
with verification off (`verify_candidates=0`: the ranking of cbir before issue 13, re-ranking on) and on
(the default), alternating the two sides query by query so that a busy machine slows both alike. "warm":
the candidates' local features were derived before (the steady state of a service); "cold": the first
query that meets them, which derives them from the stored files.

    python bench/query_cost.py [--images N] [--queries Q]

Prints median and mean ms per query of each side and their ratio; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.collection.facade import Collection  # noqa: E402
from app.config import Settings  # noqa: E402
from app.encoders import encoder_from_settings  # noqa: E402
from app.search.verification import VerifyOptions  # noqa: E402
from bench.copies import make_copies  # noqa: E402
from bench.quality import DATASETS, _decoded, labelled_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corel", type=Path, default=DATASETS / "corel1k")
    parser.add_argument("--images", type=int, default=300, help="photos indexed (evenly over the classes)")
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    paths, _ = labelled_files(args.corel)
    chosen = np.linspace(0, len(paths) - 1, args.images).round().astype(int)
    with tempfile.TemporaryDirectory(prefix="cbir-cost-") as folder:
        settings = Settings(data_dir=Path(folder))
        collection = Collection.open(settings, encoder_from_settings(settings))
        for i in chosen.tolist():
            collection.add_upload(paths[i].read_bytes(), paths[i].name)
        originals = chosen[np.random.default_rng(5).permutation(len(chosen))[: args.queries]]
        copies = make_copies([_decoded(paths[i].read_bytes(), settings) for i in originals], originals, 3)
        sides = {
            "before (no verification)": VerifyOptions(0),
            "default (verification)": collection.verification,
        }
        for image_id in collection.index.ids().tolist():  # warm: the steady state of a running service
            collection.local_features(int(image_id))
        times: dict[str, list[float]] = {name: [] for name in sides}
        for number, copy in enumerate(copies):
            for name in list(sides) if number % 2 == 0 else list(sides)[::-1]:
                collection.verification = sides[name]
                tick = time.perf_counter()
                collection.search_image(copy.data, 10)
                times[name].append((time.perf_counter() - tick) * 1000)
        cold: list[float] = []  # a fresh feature cache for every query
        collection.verification = sides["default (verification)"]
        for copy in copies[:10]:
            collection.local_features.clear()
            tick = time.perf_counter()
            collection.search_image(copy.data, 10)
            cold.append((time.perf_counter() - tick) * 1000)
        collection.close()
    before, after = times["before (no verification)"], times["default (verification)"]
    summary = {
        "images": int(args.images),
        "queries": len(copies),
        "before_median_ms": round(statistics.median(before), 1),
        "default_median_ms": round(statistics.median(after), 1),
        "before_mean_ms": round(statistics.mean(before), 1),
        "default_mean_ms": round(statistics.mean(after), 1),
        "ratio_median": round(statistics.median(after) / statistics.median(before), 3),
        "cold_median_ms": round(statistics.median(cold), 1),
    }
    for name, values in times.items():
        print(
            f"{name:<28} median {statistics.median(values):7.1f} ms, mean {statistics.mean(values):7.1f} ms"
        )
    print(f"default, candidates' features not yet derived (cold): median {summary['cold_median_ms']} ms")
    print(f"ratio (median, default / before): {summary['ratio_median']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
