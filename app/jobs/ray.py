"""`cbir index --ray ADDRESS`: embed on a Ray cluster with Ray Data, merge into the collection here.

This module is only the remote map step. Workers run the local job's reader, device and embed stages
(reader.py, device.py, embed.py: an actor per GPU, or per CPU slot, builds the encoder once;
``map_batches`` feeds it batches of paths), so a vector from the cluster equals one from `cbir index` on the
same kind of device. Only this process writes, through the local job's writer (writer.py): it streams the
results and commits them batch by batch with the same save cadence, deduplicating by sha256 against the
database exactly like the local job. The database stays the source of truth, so an interrupted run is rerun
as is: stored files are skipped by the workers (they get the stored hashes) and never stored twice.

Paths must be readable by every worker under the same name (a shared file system or the same mount on
every node); the workers' environment must hold cbir and its dependencies (README, "A Ray cluster").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.collection.facade import Collection
from app.config import Settings
from app.db import vectors as vectors_codec
from app.errors import JobError
from app.files.decoding import Skipped
from app.jobs.device import DeviceStage, wait_for
from app.jobs.embed import Embedded, EmbedStage
from app.jobs.reader import collate, read_file
from app.jobs.records import ImageRecord
from app.jobs.runner import read_options
from app.jobs.sources import SourceItem
from app.jobs.writer import BulkReport, Progress, Writer

LOCAL = "local"


class RayUnavailableError(JobError):
    """Ray is not installed; the message says how to install it."""


def _ray() -> Any:
    try:
        import ray
        import ray.data  # ray without its data extra has no ray.data
    except ImportError as exc:
        raise RayUnavailableError(
            "--ray needs Ray Data: pip install 'cbir[ray]' (or 'ray[data]') in this environment and on the "
            "cluster's workers"
        ) from exc
    return ray


def connect(address: str | None, *, num_cpus: int | None = None) -> None:
    """Join the cluster at ADDRESS ('auto', 'host:6379', 'ray://host:10001'), or start one here ('local');
    a runtime already started in this process (ray.init) is used as it is."""
    ray = _ray()
    if ray.is_initialized():
        return
    if address in (None, LOCAL):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)


@dataclass(frozen=True)
class RayPlan:
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float


def plan(resources: dict[str, float], actors: int | None = None) -> RayPlan:
    """One actor per GPU when the cluster has GPUs; else one per CPU, one CPU each."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus:
        return RayPlan(actors or gpus, 1.0, max(1.0, cpus // gpus - 1.0))
    return RayPlan(actors or cpus, 0.0, 1.0)


class EmbedBatch:
    """The Ray Data UDF: paths in, vectors (and what the collection stores) out; one encoder per actor."""

    def __init__(
        self,
        settings: Settings,
        known: Any,
        setup: Callable[[], None] | None = None,
    ) -> None:
        import ray
        import torch

        if setup is not None:
            setup()  # e.g. registering a backbone that only the caller's code defines
        from app.encoders import encoder_from_settings

        self.encoder = encoder_from_settings(settings)
        if self.encoder.device.type == "cpu":
            assigned = ray.get_runtime_context().get_assigned_resources()
            torch.set_num_threads(max(1, int(assigned.get("CPU", 1))))  # the CPUs Ray gave this actor
        self.known: frozenset[str] = ray.get(known) if isinstance(known, ray.ObjectRef) else known
        self.options = read_options(self.encoder, settings.max_pixels, settings.gpu_decode)
        self.stage = DeviceStage(self.encoder, max_pixels=settings.max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            SourceItem(Path(str(path)), json.loads(str(meta)), name=str(name) or None)
            for path, meta, name in zip(batch["path"], batch["meta"], batch["name"], strict=True)
        ]
        ready = self.stage(
            collate([read_file(item, self.options, self.known.__contains__) for item in items])
        )
        wait_for(ready, self.encoder.device)
        embedder = EmbedStage(self.encoder, max_waiting=len(ready.items))  # all of it, in this call
        rows = []
        for embedded in embedder.add(ready) + embedder.flush():
            rows += [
                _row(item, vector) for item, vector in zip(embedded.items, embedded.vectors(), strict=True)
            ]
        rows += [_skipped_row(skipped) for skipped in ready.skipped]
        rows += [_skipped_row(Skipped(Path(""), "duplicate", duplicate=True))] * ready.duplicates
        return {key: np.array([row[key] for row in rows], dtype=object) for key in _COLUMNS}


_COLUMNS = (
    *("status", "reason", "sha256", "data", "width", "height"),
    *("format", "name", "source", "meta", "vector", "features", "has_features"),
)


def _row(item: ImageRecord, vector: np.ndarray) -> dict[str, Any]:
    return {
        "status": "ok",
        "reason": "",
        "sha256": item.sha256,
        "data": item.data,  # the row stores its size; the file store its bytes (unless --no-copy)
        "width": item.width,
        "height": item.height,
        "format": item.format,
        "name": item.original_name,
        "source": item.source_path or "",
        "meta": json.dumps(item.meta),
        "vector": vectors_codec.encode(vector),
        "features": item.local_features or b"",
        "has_features": item.local_features is not None,  # b"": a picture without keypoints
    }


def _skipped_row(skipped: Skipped) -> dict[str, Any]:
    return {
        "status": "duplicate" if skipped.duplicate else "skipped",
        "reason": skipped.reason,
        "sha256": "",
        "data": b"",
        "width": 0,
        "height": 0,
        "format": "",
        "name": "",
        "source": str(skipped.path),
        "meta": "{}",
        "vector": b"",
        "features": b"",
        "has_features": False,
    }


def index_with_ray(
    collection: Collection,
    items: Sequence[SourceItem],
    *,
    address: str | None = LOCAL,
    copy_files: bool = True,
    on_progress: Progress | None = None,
    skipped: Sequence[Skipped] = (),
    actors: int | None = None,
    num_cpus: int | None = None,
    setup: Callable[[], None] | None = None,
) -> BulkReport:
    """Embed items on the Ray cluster and commit the results here, one transaction per batch."""
    ray = _ray()
    connect(address, num_cpus=num_cpus)
    settings = collection.settings
    report = BulkReport(files=len(items), skipped=list(skipped))
    started = time.perf_counter()
    known = ray.put(frozenset(collection.known_sha256()))
    layout = plan(ray.cluster_resources(), actors)
    # The workers choose their device; "auto" lets a GPU actor use its GPU and a CPU actor the CPU.
    worker_settings = settings.model_copy(update={"device": "auto" if layout.gpus_per_actor else "cpu"})
    dataset = ray.data.from_items(
        [
            # name: the path as indexed (relative to the source), as the local job stores it
            {"path": str(item.path.resolve()), "meta": json.dumps(item.meta), "name": item.name or ""}
            for item in items
        ]
    )
    batch_size = collection.encoder.batch_size
    results = dataset.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={
            "settings": worker_settings,
            "known": known,
            "setup": setup,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=layout.actors),
        num_gpus=layout.gpus_per_actor or None,
        num_cpus=layout.cpus_per_actor,
    )
    writer = Writer(collection, report, copy_files=copy_files, on_progress=on_progress)
    for batch in results.iter_batches(batch_size=max(batch_size, 64), batch_format="numpy"):
        records, vectors, dropped, unreadable = [], [], 0, []
        for i, status in enumerate(batch["status"]):
            if status == "skipped":
                unreadable.append(Skipped(Path(str(batch["source"][i])), str(batch["reason"][i])))
            elif status == "duplicate":
                dropped += 1
            else:  # a repeat across actors is a duplicate for ingest_many, as a repeat of a stored file
                records.append(_record(batch, i))
                vectors.append(vectors_codec.decode(batch["vector"][i]))
        embedded = [Embedded.ready(records, np.stack(vectors))] if records else []
        writer(embedded, dropped, unreadable)
    writer.finish()
    report.seconds = time.perf_counter() - started
    return report


def _record(batch: dict[str, np.ndarray], i: int) -> ImageRecord:
    source = str(batch["source"][i]) or None
    return ImageRecord(
        sha256=str(batch["sha256"][i]),
        data=bytes(batch["data"][i]),
        width=int(batch["width"][i]),
        height=int(batch["height"][i]),
        format=str(batch["format"][i]),
        original_name=str(batch["name"][i]),
        source_path=source,
        meta=json.loads(str(batch["meta"][i])),
        local_features=bytes(batch["features"][i]) if batch["has_features"][i] else None,
    )
