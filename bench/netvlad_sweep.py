"""How NetVLAD's two choices were made: the number of clusters K and the softness of the assignment.

For K in --clusters and assignment ratio r in --ratios (alpha = ln r / mean similarity gap; the paper's
sharp assignment is r = 100), fits NetVLAD exactly as `cbir fit` does on Corel-1K (seeded sample, no labels)
and prints Corel-1K mAP and P@10 of the descriptor as initialised, in one run, with the GAP baseline beside.
The backbone's feature maps come from bench/quality.py's embedding (and its --cache).

    python bench/netvlad_sweep.py [--clusters 8,16,32,64] [--ratios 1.5,100] [--cache DIR]

The last line is JSON: {"gap": {...}, "rows": [{"clusters", "ratio", "mAP", "P@10", "dim"}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.learn.fit import FitOptions  # noqa: E402
from app.search.reranking import RerankOptions  # noqa: E402
from bench.quality import DATASETS, _encoder, corel_figures, embed_dataset, fitted_encoder, pool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corel", type=Path, default=DATASETS / "corel1k")
    parser.add_argument("--cache", type=Path, default=None, help="feature maps kept by bench/quality.py")
    parser.add_argument("--clusters", default="8,16,32,64")
    parser.add_argument("--ratios", default="1.5,100")
    args = parser.parse_args()

    settings = Settings()
    corel = embed_dataset("corel", args.corel, settings, args.cache)
    workdir = Path(tempfile.mkdtemp(prefix="cbir-netvlad-"))
    off = RerankOptions.off()
    gap_map, gap_p10, _ = corel_figures(pool(_encoder(settings, "gap"), corel)[0], corel, off)
    print(f"{'descriptor':<34} {'dim':>6} {'mAP':>7} {'P@10':>7}")
    print(f"{'GAP (baseline)':<34} {1280:>6} {gap_map:7.4f} {gap_p10:7.4f}")
    rows = []
    for clusters in (int(k) for k in args.clusters.split(",")):
        for ratio in (float(r) for r in args.ratios.split(",")):
            options = FitOptions(clusters=clusters, assignment_ratio=ratio)
            vectors, _ = pool(fitted_encoder(settings, corel, options, workdir), corel)
            mean_ap, p10, _ = corel_figures(vectors, corel, off)
            name = f"NetVLAD K={clusters}, r={ratio:g}"
            print(f"{name:<34} {vectors.shape[1]:>6} {mean_ap:7.4f} {p10:7.4f}")
            rows.append(
                {
                    "clusters": clusters,
                    "ratio": ratio,
                    "mAP": round(mean_ap, 4),
                    "P@10": round(p10, 4),
                    "dim": int(vectors.shape[1]),
                }
            )
    print(json.dumps({"gap": {"mAP": round(gap_map, 4), "P@10": round(gap_p10, 4)}, "rows": rows}))


if __name__ == "__main__":
    main()
