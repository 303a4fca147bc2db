"""What geometric verification adds to a single query: today's default beside the previous one, in one run.

A collection of Corel-1K photos is indexed through the service's own Collection; then single queries
of both kinds through the uploads' path (decode, embed, rank) are timed: edited copies of some of its
photos (bench/copies.py: "the same picture") and photos of the same classes that are not in the collection
("similar pictures", which rarely match as they are, so their mirrored query is verified too); they are timed
with verification off (`verify_candidates=0`: the default of cbir before issue 13, re-ranking on) and on
(the default), alternating the two sides query by query and starting each round with the other side, so
that a busy machine slows both alike; the rounds repeat the same queries. "warm": the candidates' local
features are in the collection's memory (the steady state of a service); "cold": every default query
meets an empty memory and reads its candidates' features from their database rows, where indexing stored
them (the first queries after a start; app/collection/features.py), again alternating with the previous
default. A third side is the default when issue 13 was filed: the same, on torch fp32 (CBIR_RUNTIME=torch;
the OpenVINO runtime came with issue 17), for what an upgrade costs. The machine's load average is printed
beside the figures, and the extra storage: the stored
features' bytes per image in the database, and in memory once read.

    python bench/query_cost.py [--images N] [--queries Q] [--rounds R] [--cold C]

Prints median and mean ms per query of each side and their ratio, warm and cold; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.collection.facade import Collection  # noqa: E402
from app.config import Settings  # noqa: E402
from app.db.tables import StoredLocalFeatures  # noqa: E402
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
    parser.add_argument("--rounds", type=int, default=2, help="times every warm query is repeated")
    parser.add_argument("--cold", type=int, default=20, help="queries timed with an empty feature cache")
    parser.add_argument(
        "--no-filed",
        dest="filed",
        action="store_false",
        help="skip the third side: the default when issue 13 was filed (torch fp32, no verification)",
    )
    args = parser.parse_args()
    paths, _ = labelled_files(args.corel)
    chosen = np.linspace(0, len(paths) - 1, args.images).round().astype(int)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="cbir-cost-") as folder:
        settings = Settings(data_dir=Path(folder))
        encoder = encoder_from_settings(settings)
        collection = Collection.open(settings, encoder)
        for i in chosen.tolist():
            collection.add_upload(paths[i].read_bytes(), paths[i].name)
        rng = np.random.default_rng(5)
        originals = chosen[rng.permutation(len(chosen))[: args.queries]]
        copies = make_copies([_decoded(paths[i].read_bytes(), settings) for i in originals], originals, 3)
        unindexed = np.setdiff1d(np.arange(len(paths)), chosen)
        others = unindexed[rng.permutation(len(unindexed))[: args.queries]]
        kinds = {  # "the same picture" and "similar pictures" (photos of the classes not in the collection)
            "copies": [copy.data for copy in copies],
            "similar": [paths[i].read_bytes() for i in others.tolist()],
        }
        before, default = "before (no verification)", "default (verification)"
        sides = {before: (VerifyOptions(0), encoder), default: (collection.verification, encoder)}
        # The default when issue 13 was filed: torch fp32 (CBIR_RUNTIME=torch), re-ranking, no verification.
        # Its vectors are within the fp32 tolerance of the runtime's, with the same fingerprint, so it
        # searches the same index.
        filed_encoder = encoder_from_settings(settings.model_copy(update={"runtime": "torch"}))
        if filed_encoder.fingerprint == encoder.fingerprint and args.filed:
            sides[FILED] = (VerifyOptions(0), filed_encoder)

        def timed(name: str, data: bytes, cold: bool = False) -> float:
            collection.verification, collection.encoder = sides[name]
            if cold and name == default:
                collection.local_features.clear()
            tick = time.perf_counter()
            collection.search_image(data, 10)
            return (time.perf_counter() - tick) * 1000

        names = list(sides)
        for data in kinds["copies"][:2]:  # the first queries of a process pay for lazy set-up on all sides
            for name in names:
                timed(name, data)
        times: dict[tuple[str, str], dict[str, list[float]]] = {}
        for kind, queries in kinds.items():
            collection.local_features(collection.index.ids().tolist())  # warm: a running service's state
            warm = times[kind, "warm"] = {name: [] for name in names}
            for round_number in range(args.rounds):
                for number, data in enumerate(queries):
                    for name in _rotated(names, number + round_number):
                        warm[name].append(timed(name, data))
            cold = times[kind, "cold"] = {name: [] for name in names}
            for number, data in enumerate(queries[: args.cold]):
                for name in _rotated(names, number):
                    cold[name].append(timed(name, data, cold=True))
        collection.verification, collection.encoder = sides[default]
        runtime = getattr(getattr(encoder, "runtime", None), "name", "torch")
        with collection.sessions() as session:
            stored = session.scalar(select(func.avg(func.length(StoredLocalFeatures.data))))
            rows = session.scalar(select(func.count()).select_from(StoredLocalFeatures))
        held = collection.local_features(collection.index.ids().tolist()[:50])
        in_memory = statistics.mean(f.nbytes for f in held if f is not None)
        collection.close()
    if rows != len(chosen):
        raise SystemExit(f"{rows} of {len(chosen)} images have stored local features")
    feature_bytes = float(stored or 0)
    load_after = _load()
    summary: dict[str, object] = {
        "images": int(args.images),
        "queries": {kind: len(queries) for kind, queries in kinds.items()},
        "rounds": args.rounds,
        "runtime": runtime,
        "load_before": load_before,
        "load_after": load_after,
        "local_feature_bytes_per_image": round(feature_bytes),
        "extra_disk_bytes_per_image": round(feature_bytes),
        "local_feature_memory_bytes_per_image": round(in_memory),
    }
    print(f"runtime {runtime}; load average (1, 5, 15 min) before {load_before}, after {load_after}")
    for (kind, label), sides_times in times.items():
        if not sides_times[before]:
            print(f"{kind}: no queries (every photo is indexed)")
            continue
        for name, values in sides_times.items():
            side = name.split()[0]
            summary[f"{kind}_{label}_{side}_median_ms"] = round(statistics.median(values), 1)
            summary[f"{kind}_{label}_{side}_mean_ms"] = round(statistics.mean(values), 1)
            print(
                f"{kind:<7} {label} {name:<30} median {statistics.median(values):7.1f} ms, "
                f"mean {statistics.mean(values):7.1f} ms ({len(values)} queries)"
            )
        ratio = statistics.median(sides_times[default]) / statistics.median(sides_times[before])
        summary[f"{kind}_{label}_ratio_median"] = round(ratio, 3)
        print(f"{kind:<7} {label} ratio (median, default / before): {ratio:.3f}")
        if FILED in sides_times:
            ratio = statistics.median(sides_times[default]) / statistics.median(sides_times[FILED])
            summary[f"{kind}_{label}_ratio_to_filed_median"] = round(ratio, 3)
            print(f"{kind:<7} {label} ratio (median, default / filed): {ratio:.3f}")
    print(
        f"extra storage per image: {feature_bytes / 1024:.1f} KB in the database (local features, mean of "
        f"{rows} rows); in memory, once read, {in_memory / 1024:.1f} KB (mean over 50 of the photos)"
    )
    print(json.dumps(summary))


FILED = "filed (torch fp32, no verif.)"


def _rotated(names: list[str], shift: int) -> list[str]:
    """Each query starts with another side, so a busy machine slows every side alike."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
