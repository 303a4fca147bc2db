"""Retrieval quality of every descriptor configuration cbir ships, on Corel-1K and CIFAR-10-test, in one run.

One row per configuration: mAP and P@10 on Corel-1K (every image against the other 999, as `cbir evaluate`
does), mAP and P@100 on CIFAR-10-test (the first 100 images of each class against the other 9,000, as
../shared/datasets/README.md specifies), the descriptor's dimension, images/s and ms per query.

How each number is made, so the table describes what the product does:
- Images are decoded and resized exactly as uploads are (max side 320: CIFAR's 32x32 images are upscaled to
  320x320, which is what the service does to a thumbnail). The backbone runs once per image and scale; every
  head then pools the same feature maps, through the product's own Encoder, heads and projection.
- NetVLAD and projections are fitted with `cbir fit`'s own code (app/learn/fit.py, default options: a
  seeded sample of at most 1,000 images, K = 8) on the images of the dataset itself, without its labels, as
  a user fits on their collection; the "reference" rows fit on the *other* dataset instead.
- The fine-tuned row runs `cbir finetune`'s own code with its default options on the dataset's pictures,
  self-supervised (two augmented views of a picture are positives; the labels are never given to it),
  starting from the NetVLAD of the row "as initialised". Its views are new forward passes (not counted in
  img/s: training is a one-off); the trained head then pools the same cached maps as every other row.
- Rankings are the service's ranking functions' (app/search/reranking.py, app/search/verification.py),
  re-ranking and verification included where the row says so; Corel's leave-one-out excludes each query
  from the database it is ranked against. Ranking the whole collection for every query (what mAP needs) is
  batched in bench/full_ranking.py, the same arithmetic as matrix products; every row checks it against the
  service's own functions on 20 queries per dataset and prints the largest difference of AP.
- The backbone runs on the service's runtime (CBIR_RUNTIME, auto: OpenVINO bf16 on this project's CPU,
  whose vectors are within the fp32 tolerance); the run prints which.
- img/s is embedding throughput on Corel: backbone time at the row's scales plus its pooling, for all
  images, divided into the image count (decoding, shared by every row, excluded). ms/query is the service's
  own ranking of the whole Corel collection per query (the check's queries, local features already
  derived), the part that re-ranking and verification make dearer; a single query is bench/query_cost.py's.

Beside the category figures, an instance ("same picture") benchmark: edited copies of some pictures of each
dataset (bench/copies.py) query the whole unedited collection, R@1 and R@10 of the original, in a tuned part
(what app/search/verification.py's threshold and calibration were chosen on) and a held-out part (other
seed, disjoint originals, never tuned on); for the rows with geometric verification, the precision and
recall of the "same" decision over each copy's first 10 results. Then the decision on pairs: every held-out
copy verified against its original and against its original's category neighbours (Corel: all 99; CIFAR:
99 of 999, seeded), precision and recall; and (last) the tuned pairs' precision and recall per inlier
threshold with a logistic fit of P(same | inliers). For the category queries with verification on, how
many verified results were marked "same" (CIFAR's 32x32 pictures are upscaled to 256 px for ORB).

    python bench/quality.py [--corel DIR] [--cifar DIR] [--cache DIR] [--no-cifar] [--only-default]

--cache keeps the feature maps (per runtime) and the local features between runs (CIFAR's maps take
~2.6 GB), so that a rerun costs minutes, not the full embedding; a cached run reports the embedding times
measured when the cache was made. The last line is JSON: {"runtime", "load", "rows": [{"config",
"corel_mAP", "corel_P@10", "cifar_mAP", "cifar_P@100", "dim", "img_s", "query_ms",
"<dataset>_copies_<part>_R@1", "..._R@10", "..._same_precision", "..._same_recall",
"<dataset>_check_max_dAP", "<dataset>_verified_pairs", "<dataset>_verified_same"}, ...],
"decisions": [{"dataset", "part", "precision", "recall", "copies", "negatives", "false_same"}]}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.files.decoding import decode_or_raise, list_files  # noqa: E402
from app.jobs.reader import load_files  # noqa: E402
from app.jobs.records import ImageRecord  # noqa: E402
from app.learn.evaluation import average_precisions  # noqa: E402
from app.learn.finetune import FinetuneOptions, finetune_encoder  # noqa: E402
from app.learn.fit import FitOptions, fit_parameters  # noqa: E402
from app.search.reranking import NeighbourCache, RerankOptions, options_from_settings, rank  # noqa: E402
from app.search.verification import (  # noqa: E402
    FeaturesOf,
    QueryFeatures,
    VerifyOptions,
    probability,
    rank_verified,
    verify,
)
from bench.copies import make_copies, split_originals  # noqa: E402
from bench.full_ranking import FullRanking, blend_verified  # noqa: E402
from index import VectorIndex  # noqa: E402
from models import build_encoder, to_tensor  # noqa: E402
from models.encoder import Encoder  # noqa: E402
from models.fitted import save_fitted  # noqa: E402
from models.local_features import LocalFeatures, extract, extract_pair  # noqa: E402

DATASETS = ROOT.parent / "shared" / "datasets"
SCALES = (1.0, 0.7071, 0.5)
CIFAR_QUERIES_PER_CLASS = 100
CIFAR_P_AT = 100
CHECKPOINT = 1000  # images embedded between two part files of an embedding in progress (--cache)
COPIES_PER_PART = {"corel": 150, "cifar": 100}  # edited copies per part (tuned, held-out) and dataset


@dataclass
class Dataset:
    name: str
    labels: np.ndarray
    maps: list[torch.Tensor]  # per image, (1, C, h, w) float16 at scale 1
    multiscale: np.ndarray  # GAP over SCALES, as the multi-scale encoder makes it
    multiscale_pool_s: float  # seconds that pooling took, all images
    forward_s: dict[float, float]  # backbone seconds per scale, all images
    runtime: str  # the backbone's runtime (models/runtimes) that made the maps
    cached: bool = False

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Row:
    config: str
    dim: int
    img_s: float | None
    corel: tuple[float, float] | None = None  # mAP, P@10
    cifar: tuple[float, float] | None = None  # mAP, P@100
    query_ms: float | None = None
    note: str = ""
    copies: dict[tuple[str, str], CopyFigures] = field(default_factory=dict)  # (dataset, part)
    checks: dict[str, Check] = field(default_factory=dict)  # per dataset: the batched ranking's check


def labelled_files(root: Path) -> tuple[list[Path], np.ndarray]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        files = list_files(folder)
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, np.array(labels)


def embed_dataset(name: str, root: Path, settings: Settings, cache: Path | None) -> Dataset:
    """Feature maps at scale 1 and multi-scale GAP vectors of every image; backbone seconds per scale."""
    where = root.resolve().as_posix().replace("/", "_")
    cache_file = cache / f"{name}-{where}-{settings.runtime}.pt" if cache else None
    paths, labels = labelled_files(root)
    return embed_paths(name, paths, labels, settings, cache_file)


def embed_paths(
    name: str, paths: list[Path], labels: np.ndarray, settings: Settings, cache_file: Path | None
) -> Dataset:
    """embed_dataset for a list of files (the edited copies: labels are their originals' positions)."""
    if cache_file is not None and cache_file.exists():
        # The bench's own cache, in a folder the user named: it holds numpy arrays, so not weights-only.
        saved = torch.load(cache_file, weights_only=False)
        return Dataset(
            name,
            saved["labels"],
            saved["maps"],
            saved["multiscale"],
            saved["pool_s"],
            saved["forward_s"],
            saved["runtime"],
            True,
        )
    per_scale, multiscale_encoder = _embedding_encoders(settings)
    forward_s = dict.fromkeys(SCALES, 0.0)
    pool_s = 0.0
    maps: dict[int, torch.Tensor] = {}
    multiscale: dict[int, np.ndarray] = {}
    pending: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    batch_size = per_scale[1.0].batch_size
    started = time.perf_counter()
    # An interrupted embedding goes on where it stopped: every CHECKPOINT images are kept in a part file.
    parts = sorted(cache_file.parent.glob(f"{cache_file.stem}.part*.pt")) if cache_file else []
    for part_file in parts:
        saved = torch.load(part_file, weights_only=False)
        maps.update(saved["maps"])
        multiscale.update(saved["multiscale"])
        pool_s += saved["pool_s"]
        for scale in SCALES:
            forward_s[scale] += saved["forward_s"][scale]
    if parts:
        print(f"  {name}: {len(maps)} images from {len(parts)} part files", file=sys.stderr)
    done = set(maps)
    fresh: list[int] = []
    last = {"pool": pool_s, **{str(scale): forward_s[scale] for scale in SCALES}}  # at the last part

    def checkpoint() -> None:
        """The images embedded since the last part file, with the seconds they took, in a new one."""
        if cache_file is None or not fresh:
            return
        part_file = cache_file.parent / f"{cache_file.stem}.part{len(parts):03d}.pt"
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "maps": {i: maps[i] for i in fresh},
                "multiscale": {i: multiscale[i] for i in fresh},
                "pool_s": pool_s - last["pool"],
                "forward_s": {scale: forward_s[scale] - last[str(scale)] for scale in SCALES},
            },
            part_file,
        )
        parts.append(part_file)
        last.update({"pool": pool_s, **{str(scale): forward_s[scale] for scale in SCALES}})
        fresh.clear()

    def run(group: list[tuple[int, torch.Tensor]]) -> None:
        """Same-size pictures share a batch of the encoder's size, as Encoder.embed batches them."""
        nonlocal pool_s
        batch = torch.stack([tensor for _, tensor in group])
        scale_maps = []
        for scale, encoder in per_scale.items():
            tick = time.perf_counter()
            [fmap] = encoder.feature_maps(batch)
            forward_s[scale] += time.perf_counter() - tick
            scale_maps.append(fmap)
        tick = time.perf_counter()
        pooled = multiscale_encoder.pool_maps(scale_maps)
        pool_s += time.perf_counter() - tick
        for row, (position, _) in enumerate(group):
            maps[position] = scale_maps[0][row : row + 1].to(torch.float16)
            multiscale[position] = pooled[row]
            fresh.append(position)
        if len(maps) // 500 != (len(maps) - len(group)) // 500:
            rate = (len(maps) - len(done)) / (time.perf_counter() - started)
            print(f"  {name}: {len(maps)}/{len(paths)} images, {rate:.1f} img/s", file=sys.stderr)
        if len(fresh) >= CHECKPOINT:
            checkpoint()

    loaded = load_files(
        paths, max_side=settings.max_side, max_pixels=settings.max_pixels, workers=settings.workers
    )
    for position, item in enumerate(loaded):
        if position in done:
            continue
        if not isinstance(item, ImageRecord):
            print(f"  skipped {item.path}: {item.reason}", file=sys.stderr)
            continue
        tensor = to_tensor(item.decoded.image, settings.max_side)
        group = pending.setdefault(tuple(tensor.shape), [])
        group.append((position, tensor))
        if len(group) == batch_size:
            run(pending.pop(tuple(tensor.shape)))
    for group in pending.values():
        run(group)
    kept = sorted(maps)
    data = Dataset(
        name,
        labels[kept],
        [maps[i] for i in kept],
        np.stack([multiscale[i] for i in kept]),
        pool_s,
        forward_s,
        per_scale[1.0].runtime.name,
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "labels": data.labels,
                "maps": data.maps,
                "multiscale": data.multiscale,
                "pool_s": pool_s,
                "forward_s": forward_s,
                "runtime": data.runtime,
            },
            cache_file,
        )
        for part_file in parts:
            part_file.unlink(missing_ok=True)  # another run may have taken it in first
    return data


_EMBEDDING: dict[str, tuple[dict[float, Encoder], Encoder]] = {}


def _embedding_encoders(settings: Settings) -> tuple[dict[float, Encoder], Encoder]:
    """One encoder per scale on the service's runtime, and the multi-scale pooling, built once per run:
    each runtime encoder compiles its model (seconds on a busy machine), and every dataset and copy part
    uses the same ones."""
    if settings.runtime not in _EMBEDDING:
        per_scale = {scale: _encoder(settings, "gap", forward=True, scales=(scale,)) for scale in SCALES}
        _EMBEDDING[settings.runtime] = per_scale, _encoder(settings, "gap", scales=SCALES)
    return _EMBEDDING[settings.runtime]


@dataclass
class CopyPart:
    """Edited copies of some of a dataset's pictures: their feature maps (labels: the originals' positions
    in the dataset), the edits made, and their local features (as is, mirrored)."""

    dataset: str
    part: str  # "tuned" or "held-out"
    data: Dataset
    edits: list[tuple[str, ...]]
    features: list[QueryFeatures]

    @property
    def originals(self) -> np.ndarray:
        return self.data.labels


def copy_parts(
    name: str, root: Path, settings: Settings, workdir: Path, cache: Path | None
) -> list[CopyPart]:
    """The tuned and the held-out copies of a dataset (bench/copies.py), embedded like uploads."""
    paths, _labels = labelled_files(root)
    tuned, held_out = split_originals(len(paths), min(COPIES_PER_PART[name], len(paths) // 2))
    folder = (cache or workdir) / f"copies-{name}"
    out: list[CopyPart] = []
    for part, originals, seed in (("tuned", tuned, 1), ("held-out", held_out, 2)):
        images = [_decoded(paths[i].read_bytes(), settings) for i in originals.tolist()]
        copies = make_copies(images, originals, seed)
        target = folder / f"{part}-{seed}"
        target.mkdir(parents=True, exist_ok=True)
        files = []
        for number, made in enumerate(copies):
            file = target / f"{number:04d}.jpg"
            if not file.exists() or file.read_bytes() != made.data:
                file.write_bytes(made.data)
            files.append(file)
        cache_file = (
            cache / f"copies-{name}-{part}-{seed}-{len(copies)}-{settings.runtime}.pt" if cache else None
        )
        data = embed_paths(f"{name} copies ({part})", files, originals, settings, cache_file)
        features = [_query_features(c.data, settings) for c in copies]
        out.append(CopyPart(name, part, data, [c.edits for c in copies], features))
    return out


def _decoded(data: bytes, settings: Settings) -> Image.Image:
    """The picture as the service decodes an upload (EXIF-rotated, long side at most max_side)."""
    return decode_or_raise(data, max_side=settings.max_side, max_pixels=settings.max_pixels).image


def _query_features(data: bytes, settings: Settings) -> QueryFeatures:
    plain, mirrored = extract_pair(_decoded(data, settings))
    return QueryFeatures(plain=plain, mirrored=mirrored)


class OriginalFeatures:
    """Local features of a dataset's pictures, from their files as the service derives them, on demand;
    kept in `cache_file` between runs (--cache), with the inlier counts of the verified (query, candidates)
    (every row with verification verifies the same plain first results)."""

    def __init__(self, root: Path, settings: Settings, cache_file: Path | None = None) -> None:
        self.paths, _ = labelled_files(root)
        self.settings = settings
        self.items: dict[int, LocalFeatures] = {}
        self.cache_file = cache_file
        self._counts: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self._saved = 0
        if cache_file is not None and cache_file.exists():
            with np.load(cache_file) as saved:
                blob, offsets = saved["blob"].tobytes(), saved["offsets"]
                for number, position in enumerate(saved["positions"].tolist()):
                    part = blob[offsets[number] : offsets[number + 1]]
                    self.items[position] = LocalFeatures.from_bytes(part)
            self._saved = len(self.items)

    @classmethod
    def none(cls) -> OriginalFeatures:
        """For rankings without verification, which never ask for local features."""
        return cls.__new__(cls)

    def __call__(self, position: int) -> LocalFeatures:
        if position not in self.items:
            self.items[position] = extract(self.picture(position))
        return self.items[position]

    def many(self, positions: Sequence[int]) -> list[LocalFeatures | None]:
        """rank_verified's features_of: every candidate of a query at once, as the collection gives them."""
        return [self(p) for p in positions]

    def picture(self, position: int) -> Image.Image:
        return _decoded(self.paths[position].read_bytes(), self.settings)

    def query(self, position: int) -> QueryFeatures:
        """The picture as a query (for the category figures with verification on)."""
        if position in self.items:
            return QueryFeatures(image=self.picture(position), plain=self.items[position])
        return QueryFeatures(image=self.picture(position))

    def counts(self, position: int, candidates: list[int]) -> np.ndarray:
        """verify() of the picture as a query against the candidates (app/search/verification.py)."""
        key = (position, tuple(candidates))
        if key not in self._counts:
            self._counts[key] = verify(self.query(position), [self(i) for i in candidates])
        return self._counts[key]

    def save(self) -> None:
        if self.cache_file is None or len(self.items) == self._saved:
            return
        positions = sorted(self.items)
        parts = [self.items[p].to_bytes() for p in positions]
        offsets = np.cumsum([0, *(len(part) for part in parts)])
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        blob = np.frombuffer(b"".join(parts), np.uint8)
        np.savez(self.cache_file, positions=np.array(positions), offsets=offsets, blob=blob)
        self._saved = len(self.items)


def _encoder(settings: Settings, head: str, *, forward: bool = False, **kwargs: object) -> Encoder:
    """An encoder of the settings' backbone; `forward`: one that runs the backbone, on the service's
    runtime (CBIR_RUNTIME, auto: OpenVINO bf16 on an AMX / AVX-512 BF16 CPU). The others only pool cached
    maps (in float32 torch on every runtime), so they skip the runtime's conversion."""
    return build_encoder(
        settings.backbone,
        head,
        weights=settings.weights,
        max_side=settings.max_side,
        device=settings.device,
        require_fitted=False,
        runtime=settings.runtime if forward else "torch",
        runtime_cache=settings.runtime_cache_dir,
        threads=settings.inference_threads,
        **kwargs,  # type: ignore[arg-type]
    )


def pool(encoder: Encoder, data: Dataset) -> tuple[np.ndarray, float]:
    """Vectors of every image from its scale-1 map, and the seconds the pooling (and projection) took."""
    tick = time.perf_counter()
    vectors = np.concatenate([encoder.pool_maps([fmap]) for fmap in data.maps])
    return vectors, time.perf_counter() - tick


def fitted_encoder(settings: Settings, on: Dataset, options: FitOptions, workdir: Path) -> Encoder:
    """Fit like `cbir fit` on a seeded sample of `on`, write the file, and load it like `--fitted` does."""
    return _encoder(settings, "netvlad", fitted=fitted_file(settings, on, options, workdir))


def fitted_file(settings: Settings, on: Dataset, options: FitOptions, workdir: Path) -> Path:
    """The file `cbir fit` would write for `on` (written once per dataset and options)."""
    path = workdir / f"netvlad-{on.name}-{options.projection_dim}-{options.eigen_power}.safetensors"
    if path.exists():
        return path
    encoder = _encoder(
        settings, "netvlad", head_options={"clusters": options.clusters} if options.clusters else None
    )
    chosen = sorted(np.random.default_rng(options.seed).permutation(len(on))[: options.max_images].tolist())
    params = fit_parameters(encoder, [[on.maps[i]] for i in chosen], options, source=f"{on.name} (bench)")
    save_fitted(params, path)
    return path


def finetuned_encoder(settings: Settings, root: Path, on: Dataset, start: Path, workdir: Path) -> Encoder:
    """`cbir finetune` with its default options on the dataset's own pictures, self-supervised (the labels
    are never given to it), starting from the NetVLAD `cbir fit` made of them; loaded like `--fitted`."""
    out = workdir / f"finetuned-{on.name}.safetensors"
    if out.exists():  # trained once per dataset; the copies are pooled by the same head
        return _encoder(settings, "netvlad", fitted=out)
    paths, _labels = labelled_files(root)
    tuned = settings.model_copy(update={"head": "netvlad", "fitted": start})
    report = finetune_encoder(tuned, paths, out, FinetuneOptions(), source=f"{on.name} (bench)")
    run = report.training
    print(
        f"  fine-tuned on {on.name}: {run.stop_reason} after {run.epochs_run} epochs ({run.seconds:.0f} s "
        f"of training), best epoch {run.best_epoch}, validation loss {run.first_val_loss:.4f} -> "
        f"{run.best_val_loss:.4f}",
        file=sys.stderr,
    )
    return _encoder(settings, "netvlad", fitted=out)


CHECKED_QUERIES = 20  # per dataset and row: ranked by the service's own functions too, and compared
CHECK_TOLERANCE = 1e-4  # largest difference of AP allowed (exactly tied scores may come out reordered)


@dataclass
class Check:
    """The batched ranking (bench/full_ranking.py) against the service's rank()/rank_verified() on a
    sample of queries: the largest difference of average precision, and the service's ms per query."""

    max_ap_difference: float
    service_ms: float
    verified: VerifiedPairs | None = None  # the category queries' verified results (verification on)


@dataclass
class VerifiedPairs:
    """What verification did to category queries: pairs verified, marked "same", of those same class."""

    pairs: int = 0
    same: int = 0
    same_in_category: int = 0


@dataclass
class CategoryQueries:
    """One dataset's category protocol for one row: its vectors, the row's ranking, the queries (Corel:
    every picture, left out of its own database; CIFAR: 100 a class against the rest), P@p_at."""

    vectors: np.ndarray
    data: Dataset
    rerank: RerankOptions
    verification: VerifyOptions
    originals: OriginalFeatures
    queries: np.ndarray
    leave_one_out: bool
    p_at: int

    @property
    def database(self) -> np.ndarray:
        everything = np.arange(len(self.data))
        return everything if self.leave_one_out else np.setdiff1d(everything, self.queries)


def category_figures(task: CategoryQueries) -> tuple[float, float, Check]:
    """Category mAP and P@p_at as the service ranks (re-ranking, and verification of the queries' own
    pictures against their first results when it is on). Whole-collection rankings come from
    bench/full_ranking.py, checked against the service's own."""
    vectors, labels, queries, database = task.vectors, task.data.labels, task.queries, task.database
    relevant = np.array([(labels[database] == labels[q]).sum() - int(task.leave_one_out) for q in queries])
    full = FullRanking(vectors[database], task.rerank)
    index = VectorIndex(vectors.shape[1], "bench")
    index.add(database.astype(np.int64), vectors[database])
    aps: list[np.ndarray] = []
    hits_at = 0
    stats = VerifiedPairs()
    for start in range(0, len(queries), 250):
        part = queries[start : start + 250]
        exclude = part.tolist() if task.leave_one_out else None  # database positions = dataset positions
        scores, positions = full.rank(vectors[part], exclude)
        ids = database[positions]
        if task.verification.active:
            ids = _verified_rows(task, index, scores, ids, part, exclude, stats)
        ranked = labels[ids]
        aps.append(average_precisions(ranked, labels[part], relevant[start : start + 250]))
        hits_at += int((ranked[:, : task.p_at] == labels[part][:, None]).sum())
    all_aps = np.concatenate(aps)
    check = _check(task, index, relevant, all_aps)
    check.verified = stats if task.verification.active else None
    return float(all_aps.mean()), hits_at / (len(queries) * task.p_at), check


def corel_figures(vectors: np.ndarray, data: Dataset, rerank: RerankOptions) -> tuple[float, float, float]:
    """Corel's leave-one-out mAP, P@10 (what `cbir evaluate` computes) and the service's ms per query of
    ranking the whole collection, without verification (bench/netvlad_sweep.py)."""
    task = CategoryQueries(
        vectors, data, rerank, VerifyOptions(0), OriginalFeatures.none(), np.arange(len(data)), True, 10
    )
    mean_ap, p10, check = category_figures(task)
    return mean_ap, p10, check.service_ms


def _verified_rows(
    task: CategoryQueries,
    index: VectorIndex,
    scores: np.ndarray,
    ids: np.ndarray,
    positions: np.ndarray,
    exclude: list[int] | None,
    stats: VerifiedPairs,
) -> np.ndarray:
    """rank_verified's step after rank(), for whole-collection rows: the plain first candidates verified,
    their scores blended with P(same), re-sorted (bench/full_ranking.blend_verified)."""
    labels = task.data.labels
    plain_scores, plain_ids = rank(
        index, task.vectors[positions], task.verification.candidates, RerankOptions.off(), exclude=exclude
    )
    out = ids.copy()
    for row, position in enumerate(positions.tolist()):
        checked = plain_ids[row][plain_ids[row] >= 0]
        counts = task.originals.counts(position, checked.tolist())
        plain = plain_scores[row][: len(checked)]
        _, out[row], _ = blend_verified(scores[row], ids[row], checked, counts, plain)
        same = probability(counts, plain) >= 0.5
        stats.pairs += len(checked)
        stats.same += int(same.sum())
        stats.same_in_category += int((same & (labels[checked] == labels[position])).sum())
    return out


def _check(task: CategoryQueries, index: VectorIndex, relevant: np.ndarray, aps: np.ndarray) -> Check:
    """CHECKED_QUERIES queries (spread over the classes) through the service's own ranking at the
    evaluation's depth; a difference of AP above CHECK_TOLERANCE is reported as a failed check."""
    vectors, data, queries = task.vectors, task.data, task.queries
    rerank, verification, leave_one_out = task.rerank, task.verification, task.leave_one_out
    chosen = np.linspace(0, len(queries) - 1, CHECKED_QUERIES).round().astype(int)
    part = queries[chosen]
    exclude = part.tolist() if leave_one_out else None
    depth = index.ntotal - int(leave_one_out)
    tick = time.perf_counter()
    if verification.active:
        features = [task.originals.query(int(q)) for q in part]
        ids = rank_verified(
            index,
            vectors[part],
            depth,
            rerank,
            verification,
            features,
            task.originals.many,
            cache=NeighbourCache(),
            exclude=exclude,
        ).ids
    else:
        _, ids = rank(index, vectors[part], depth, rerank, cache=NeighbourCache(), exclude=exclude)
    ms = (time.perf_counter() - tick) / len(part) * 1000
    service = average_precisions(data.labels[ids], data.labels[part], relevant[chosen])
    difference = float(np.abs(service - aps[chosen]).max())
    if difference > CHECK_TOLERANCE:  # reported with the table, and in its JSON line
        print(
            f"  CHECK FAILED: bench/full_ranking.py and the service's ranking differ on {data.name} by "
            f"{difference:.2e} AP: do not trust this row's {data.name} figures",
            file=sys.stderr,
        )
    return Check(difference, ms)


NEIGHBOURS_PER_COPY = 99  # category neighbours each held-out copy is verified against (Corel: all of them)


@dataclass
class Decision:
    """The "same" decision on pairs: each copy against its original (positives) and against pictures of
    its original's category (negatives), every pair verified on its own as the service verifies one."""

    dataset: str
    part: str
    copies: int
    negatives: int
    true_same: int
    false_same: int

    @property
    def precision(self) -> float:
        return self.true_same / max(1, self.true_same + self.false_same)

    @property
    def recall(self) -> float:
        return self.true_same / max(1, self.copies)


def decision_against_category(
    part: CopyPart,
    vectors: np.ndarray,
    copy_vectors: np.ndarray,
    labels: np.ndarray,
    originals: OriginalFeatures,
) -> Decision:
    """app/search/verification.py's decision, P(same) >= 0.5 from the inliers and the plain cosine (here
    of the off-the-shelf GAP vectors, the default's), on every (copy, original) and (copy, category
    neighbour) pair; CIFAR's 999 neighbours per copy are sampled down to NEIGHBOURS_PER_COPY (seeded)."""
    rng = np.random.default_rng(7)
    true_same = false_same = negatives = 0
    for row, original in enumerate(part.originals.tolist()):
        others = np.flatnonzero(labels == labels[original])
        others = others[others != original]
        if len(others) > NEIGHBOURS_PER_COPY:
            others = np.sort(rng.choice(others, NEIGHBOURS_PER_COPY, replace=False))
        candidates = [original, *others.tolist()]
        counts = np.array([verify(part.features[row], [originals(c)])[0] for c in candidates])
        cosines = vectors[candidates] @ copy_vectors[row]
        same = probability(counts, cosines) >= 0.5
        true_same += int(same[0])
        false_same += int(same[1:].sum())
        negatives += len(others)
    return Decision(part.dataset, part.part, len(part.originals), negatives, true_same, false_same)


@dataclass
class CopyFigures:
    recall_at_1: float
    recall_at_10: float
    # The "same picture" decision over each query's first 10 results (None: verification off): precision,
    # recall (the original marked "same"), and false "same" among the original's category neighbours.
    same_precision: float | None = None
    same_recall: float | None = None
    same_false_in_category: int | None = None
    pairs: list[tuple[int, bool, bool]] = field(default_factory=list)  # (inliers, is the original, same cat.)
    queries: int = 0


def copy_figures(
    vectors: np.ndarray,
    labels: np.ndarray,
    copy_vectors: np.ndarray,
    part: CopyPart,
    rerank: RerankOptions,
    verification: VerifyOptions,
    features_of: FeaturesOf,
) -> CopyFigures:
    """Copies query the whole unedited collection (originals included): R@1, R@10 of the original."""
    index = VectorIndex(vectors.shape[1], "bench")
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    features = part.features if verification.active else [None] * len(part.features)
    ranked = rank_verified(
        index, copy_vectors, 10, rerank, verification, features, features_of, cache=NeighbourCache()
    )
    originals = part.originals
    found = ranked.ids == originals[:, None]
    figures = CopyFigures(float(found[:, 0].mean()), float(found.any(axis=1).mean()), queries=len(originals))
    if verification.active:
        same = ranked.same
        true_same = int((same & found).sum())
        figures.same_precision = true_same / max(1, int(same.sum()))
        figures.same_recall = true_same / len(originals)
        category = labels[np.maximum(ranked.ids, 0)] == labels[originals][:, None]
        figures.same_false_in_category = int((same & ~found & category).sum())
        for row in range(len(originals)):
            for column in np.flatnonzero(ranked.inliers[row] >= 0).tolist():
                figures.pairs.append(
                    (int(ranked.inliers[row, column]), bool(found[row, column]), bool(category[row, column]))
                )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corel", type=Path, default=DATASETS / "corel1k")
    parser.add_argument("--cifar", type=Path, default=DATASETS / "cifar10-test")
    parser.add_argument("--cache", type=Path, default=None, help="keep feature maps here between runs")
    parser.add_argument(
        "--no-cifar", action="store_true", help="Corel-1K only (CIFAR takes most of the time)"
    )
    parser.add_argument(
        "--only-default", action="store_true", help="only the rows of the default ranking (quicker)"
    )
    args = parser.parse_args()

    settings = Settings()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="cbir-quality-"))
    if settings.runtime_cache is None:  # converted models beside the bench's cache, not in ./data
        settings = settings.model_copy(update={"runtime_cache": (args.cache or workdir) / "runtime-cache"})
    corel = embed_dataset("corel", args.corel, settings, args.cache)
    cifar = None if args.no_cifar else embed_dataset("cifar", args.cifar, settings, args.cache)
    datasets = [d for d in (corel, cifar) if d is not None]
    roots = {corel.name: args.corel, **({cifar.name: args.cifar} if cifar is not None else {})}
    parts = {d.name: copy_parts(d.name, roots[d.name], settings, workdir, args.cache) for d in datasets}
    local = {
        d.name: OriginalFeatures(
            roots[d.name], settings, args.cache / f"local-{d.name}.npz" if args.cache else None
        )
        for d in datasets
    }
    embedded = time.perf_counter() - started
    configured = options_from_settings(settings)
    # The service's re-ranking; when the environment turns it off, the options' own defaults.
    default_rerank = configured if configured.active else RerankOptions()
    default_verify = VerifyOptions(settings.verify_candidates or VerifyOptions().candidates)
    off = RerankOptions.off()
    no_verify = VerifyOptions(0)
    rows: list[Row] = []

    def measure(
        config: str,
        make: Callable[[Dataset, Dataset], tuple[np.ndarray, float]],
        scales: Sequence[float] = (1.0,),
        rerank: RerankOptions = off,
        verification: VerifyOptions = no_verify,
    ) -> None:
        row = Row(config=config, dim=0, img_s=None)
        try:
            for data in datasets:
                vectors, pool_s = make(data, data)
                row.dim = vectors.shape[1]
                if data is corel:
                    forward = sum(corel.forward_s[s] for s in scales)
                    row.img_s = len(corel) / (forward + pool_s)
                    everything = np.arange(len(corel))
                    mean_ap, p10, check = category_figures(
                        CategoryQueries(
                            vectors, corel, rerank, verification, local[corel.name], everything, True, 10
                        )
                    )
                    row.corel, row.query_ms = (mean_ap, p10), check.service_ms
                else:
                    queries = cifar_queries(data)
                    mean_ap, p_at, check = category_figures(
                        CategoryQueries(
                            vectors, data, rerank, verification, local[data.name], queries, False, CIFAR_P_AT
                        )
                    )
                    row.cifar = (mean_ap, p_at)
                row.checks[data.name] = check
                if verification.active:
                    local[data.name].save()
                for part in parts[data.name]:
                    copy_vectors, _ = make(data, part.data)
                    figures = copy_figures(
                        vectors, data.labels, copy_vectors, part, rerank, verification, local[data.name].many
                    )
                    row.copies[(data.name, part.part)] = figures
        except Exception as exc:  # one row's failure (a fit, a training) is reported, the others still run
            row.note = f"FAILED: {type(exc).__name__}: {exc}"
            print(f"  {config} failed: {exc!r}", file=sys.stderr)
        rows.append(row)
        print(f"  measured {config}", file=sys.stderr)

    def headed(head: str) -> Callable[[Dataset, Dataset], tuple[np.ndarray, float]]:
        encoder = _encoder(settings, head)
        return lambda data, target: pool(encoder, target)

    def multiscale(data: Dataset, target: Dataset) -> tuple[np.ndarray, float]:
        return target.multiscale, target.multiscale_pool_s  # pooled while embedding, from all three maps

    def netvlad(
        options: FitOptions, reference: bool = False
    ) -> Callable[[Dataset, Dataset], tuple[np.ndarray, float]]:
        def make(data: Dataset, target: Dataset) -> tuple[np.ndarray, float]:
            source = data
            if reference:
                others = [d for d in datasets if d is not data]
                if not others:
                    raise SystemExit("the reference rows need both datasets: drop --no-cifar")
                source = others[0]
            return pool(fitted_encoder(settings, source, options, workdir), target)

        return make

    k = FitOptions().clusters or 8
    default_name = (
        f"GAP + re-ranking ({_describe(default_rerank)}) + verification of {default_verify.candidates}"
    )
    measure("GAP (off-the-shelf)", headed("gap"))
    if not args.only_default:
        measure("GeM p=3", headed("gem"))
        measure("SPP levels 1+2", headed("spp"))
        measure("GAP multi-scale 1, 1/sqrt2, 1/2", multiscale, scales=SCALES)
        measure(f"NetVLAD K={k} as initialised (k-means)", netvlad(FitOptions(clusters=k)))
        measure(
            f"NetVLAD K={k} + PCA-whitening 512",
            netvlad(FitOptions(clusters=k, projection_dim=512, eigen_power=-0.5)),
        )
        if cifar is not None:
            measure(
                f"NetVLAD K={k} + PCA-whitening 512, fitted on the other dataset",
                netvlad(FitOptions(clusters=k, projection_dim=512, eigen_power=-0.5), reference=True),
            )
        measure(
            f"NetVLAD K={k} + PCA 512", netvlad(FitOptions(clusters=k, projection_dim=512, eigen_power=0.0))
        )

        def finetuned(data: Dataset, target: Dataset) -> tuple[np.ndarray, float]:
            start = fitted_file(settings, data, FitOptions(clusters=k), workdir)
            return pool(finetuned_encoder(settings, roots[data.name], data, start, workdir), target)

        measure(f"NetVLAD K={k} fine-tuned, self-supervised (cbir finetune)", finetuned)
        measure(
            f"NetVLAD K={k} + PCA 512 + re-ranking",
            netvlad(FitOptions(clusters=k, projection_dim=512, eigen_power=0.0)),
            rerank=default_rerank,
        )
    measure(
        f"GAP + re-ranking ({_describe(default_rerank)}), no verification",
        headed("gap"),
        rerank=default_rerank,
    )
    measure(f"GAP + verification of {default_verify.candidates}", headed("gap"), verification=default_verify)
    measure(default_name, headed("gap"), rerank=default_rerank, verification=default_verify)
    rows[-1].note = f"= the default {rows[-1].note}".strip()
    gap = _encoder(settings, "gap")
    decisions = []
    for data in datasets:
        vectors, _ = pool(gap, data)
        for part in parts[data.name]:
            if part.part == "held-out":
                copy_vectors, _ = pool(gap, part.data)
                decisions.append(
                    decision_against_category(part, vectors, copy_vectors, data.labels, local[data.name])
                )
        local[data.name].save()
    print("  measured the 'same' decision against category neighbours", file=sys.stderr)

    print_table(rows, corel, cifar, parts, embedded, time.perf_counter() - started, decisions)
    print_calibration(rows[-1])


def cifar_queries(data: Dataset) -> np.ndarray:
    return np.concatenate(
        [
            members[: min(CIFAR_QUERIES_PER_CLASS, len(members) // 2)]  # a smaller set keeps a database
            for members in (np.flatnonzero(data.labels == label) for label in np.unique(data.labels))
        ]
    )


def print_calibration(row: Row) -> None:
    """What the "same" threshold and P(same) of app/search/verification.py were chosen from: the tuned
    copies' verified pairs (never the held-out ones), no labels."""
    figures = row.copies.get(("corel", "tuned"))
    if figures is None or not figures.pairs:
        return
    counts = np.array([p[0] for p in figures.pairs], np.float64)
    positive = np.array([p[1] for p in figures.pairs])
    copies = figures.queries
    print("tuning (Corel tuned copies, the default): inliers from which 'same' -> precision, recall")
    for threshold in (12, 16, 20, 24, 28, 32, 40):
        chosen = counts >= threshold
        true = int((chosen & positive).sum())
        print(
            f"  >= {threshold:2d}: precision {true / max(1, int(chosen.sum())):.3f}, "
            f"recall {true / copies:.3f}"
        )
    # Logistic regression of "is the original" on the inliers (Newton's method: two parameters).
    slope, offset = _logistic(counts, positive.astype(np.float64))
    print(f"  logistic fit of P(same | inliers): slope {slope:.3f}, midpoint {-offset / slope:.2f}")


def _logistic(x: np.ndarray, y: np.ndarray, steps: int = 50) -> tuple[float, float]:
    """Maximum-likelihood logistic regression on one feature (hand-written: two parameters, no library
    needed for it)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ weights))
        gradient = design.T @ (y - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        weights += np.linalg.solve(hessian, gradient)
    return float(weights[0]), float(weights[1])


def _describe(options: RerankOptions) -> str:
    return f"QE {options.query_expansion}, DBA {options.database_augmentation}, alpha {options.alpha:g}"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def print_table(
    rows: list[Row],
    corel: Dataset,
    cifar: Dataset | None,
    parts: dict[str, list[CopyPart]],
    embedded: float,
    total: float,
    decisions: list[Decision],
) -> None:
    copy_columns = [(d, part.part) for d, ps in parts.items() for part in ps]
    header = (
        f"{'configuration':<66} {'Corel mAP':>9} {'P@10':>6} {'CIFAR mAP':>9} {'P@100':>6} "
        + " ".join(f"{_short(d, p):>15}" for d, p in copy_columns)
        + f" {'dim':>6} {'img/s':>6} {'ms/q':>6}"
    )
    print("copies: R@1/R@10 of the original, per dataset and part (tuned / held-out)")
    print(header)
    print("-" * len(header))
    for row in rows:
        corel_map, corel_p = row.corel or (None, None)
        cifar_map, cifar_p = row.cifar or (None, None)
        copies = " ".join(
            f"{_fmt(row.copies[c].recall_at_1) + '/' + _fmt(row.copies[c].recall_at_10):>15}"
            if c in row.copies
            else f"{'—':>15}"
            for c in copy_columns
        )
        print(
            f"{row.config:<66} {_fmt(corel_map):>9} {_fmt(corel_p):>6} {_fmt(cifar_map):>9} "
            f"{_fmt(cifar_p):>6} {copies} {row.dim or '—':>6} {_fmt(row.img_s, 1):>6} "
            f"{_fmt(row.query_ms, 2):>6}" + (f"  {row.note}" if row.note else "")
        )
    sizes = f"Corel-1K {len(corel)} images" + (f", CIFAR-10-test {len(cifar)} images" if cifar else "")
    copy_sizes = ", ".join(f"{_short(p.dataset, p.part)} {len(p.edits)}" for ps in parts.values() for p in ps)
    cached = " (feature maps from the cache)" if corel.cached or (cifar is not None and cifar.cached) else ""
    forward = ", ".join(f"scale {s:g}: {corel.forward_s[s]:.0f} s" for s in SCALES)
    print(
        f"{sizes}; copies {copy_sizes}; embedding {embedded:.0f} s{cached}, whole run {total:.0f} s; "
        f"Corel backbone time {forward}"
    )
    if cifar is not None:
        cifar_forward = ", ".join(f"scale {s:g}: {cifar.forward_s[s]:.0f} s" for s in SCALES)
        print(f"CIFAR backbone time (32x32 upscaled to the max side) {cifar_forward}")
    print(
        f"backbone runtime: {corel.runtime} (CBIR_RUNTIME={Settings().runtime}); load average when done: "
        f"{_load()}"
    )
    checks = [(row.config, name, check) for row in rows for name, check in row.checks.items()]
    worst = max(checks, key=lambda item: item[2].max_ap_difference, default=("—", "—", Check(0.0, 0.0)))
    print(
        f"batched rankings checked against the service's rank()/rank_verified() on {CHECKED_QUERIES} queries"
        f" per row and dataset: largest AP difference {worst[2].max_ap_difference:.1e} ({worst[0]}, "
        f"{worst[1]}){'  CHECK FAILED' if worst[2].max_ap_difference > CHECK_TOLERANCE else ''}; ms/q is the "
        "service's own ranking of the whole collection for those queries (local features warm)"
    )
    for row in rows:
        for name, check in row.checks.items():
            if check.verified is not None:
                v = check.verified
                print(
                    f"verification of the category queries, {row.config}, {name}: {v.pairs} pairs verified, "
                    f"{v.same} marked 'same' ({v.same_in_category} of the same class)"
                )
    for d in decisions:
        print(
            f"'same' decision on pairs, {d.dataset} {d.part} copies: each against its original and "
            f"{d.negatives // max(1, d.copies)} pictures of its category: precision {d.precision:.3f}, "
            f"recall {d.recall:.3f} ({d.true_same} of {d.copies} originals, {d.false_same} false 'same' "
            f"among {d.negatives} category neighbours)"
        )
    for row in rows:
        for (dataset, part), figures in row.copies.items():
            if figures.same_precision is not None:
                print(
                    f"'same' decision, {row.config}, {dataset} {part}: precision {figures.same_precision:.3f}"
                    f", recall {figures.same_recall:.3f}, false 'same' among category neighbours "
                    f"{figures.same_false_in_category}"
                )
    summary = {
        "runtime": corel.runtime,
        "load": _load(),
        "rows": [_json_row(row) for row in rows],
        "decisions": [
            {
                "dataset": d.dataset,
                "part": d.part,
                "precision": _round(d.precision),
                "recall": _round(d.recall),
                "copies": d.copies,
                "negatives": d.negatives,
                "false_same": d.false_same,
            }
            for d in decisions
        ],
    }
    print(json.dumps(summary))


def _load() -> str:
    """The load averages (1, 5, 15 min) of this machine: shared machines make every timing slower."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _short(dataset: str, part: str) -> str:
    return f"{dataset} {'held' if part == 'held-out' else part}"


def _json_row(row: Row) -> dict[str, object]:
    out: dict[str, object] = {
        "config": row.config,
        "corel_mAP": _round(row.corel[0] if row.corel else None),
        "corel_P@10": _round(row.corel[1] if row.corel else None),
        "cifar_mAP": _round(row.cifar[0] if row.cifar else None),
        "cifar_P@100": _round(row.cifar[1] if row.cifar else None),
        "dim": row.dim or None,
        "img_s": _round(row.img_s, 1),
        "query_ms": _round(row.query_ms, 2),
    }
    for (dataset, part), figures in row.copies.items():
        key = f"{dataset}_copies_{part}"
        out[f"{key}_R@1"] = _round(figures.recall_at_1)
        out[f"{key}_R@10"] = _round(figures.recall_at_10)
        if figures.same_precision is not None:
            out[f"{key}_same_precision"] = _round(figures.same_precision)
            out[f"{key}_same_recall"] = _round(figures.same_recall)
    for name, check in row.checks.items():
        out[f"{name}_check_max_dAP"] = float(f"{check.max_ap_difference:.1e}")
        if check.verified is not None:
            out[f"{name}_verified_pairs"] = check.verified.pairs
            out[f"{name}_verified_same"] = check.verified.same
    if row.note:
        out["note"] = row.note
    return out


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


if __name__ == "__main__":
    main()
