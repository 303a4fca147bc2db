"""The local run of the jobs' stages: reader → device → embed → a writer, overlapped on consecutive batches.

Reading runs in worker processes (reader.py), moving to the device in a thread (device.py), the forward
passes are queued by the caller's thread (embed.py) and the writes run in a thread of their own, so on a GPU
host the forward pass is rarely waiting. `cbir index` writes rows (writer.py) and `cbir reindex` staged
vectors through the same run; the Ray run (ray.py) places the first stages on a cluster instead.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from app.files.decoding import Skipped
from app.jobs.device import DeviceStage, ahead, wait_for
from app.jobs.embed import Embedded, EmbedStage, Slot
from app.jobs.reader import Known, ReadOptions, batch_loader, nothing_known
from app.jobs.sources import SourceItem
from models import Encoder, ImageEncoder

__all__ = ["Write", "read_options", "run_stages"]

# Called in the writer thread, in order: the forward batches embedded since the last call (their vectors
# still to wait for), the files dropped as duplicates, and those skipped as unreadable.
Write = Callable[[Sequence[Embedded], int, Sequence[Skipped]], None]
# Batches embedded but not yet written: bounds memory, and what an interruption can lose.
WRITES_IN_FLIGHT = 2


def read_options(
    encoder: ImageEncoder, max_pixels: int, gpu_decode: bool, local_features: bool = True
) -> ReadOptions:
    """Pixels for the encoder, and local features for the rows; JPEGs left to the GPU's decoder when it is
    a CUDA encoder and allowed to."""
    on_gpu = isinstance(encoder, Encoder) and encoder.device.type == "cuda" and gpu_decode
    return ReadOptions(
        max_side=encoder.max_side, max_pixels=max_pixels, device_jpeg=on_gpu, local_features=local_features
    )


def run_stages(
    items: Sequence[SourceItem],
    encoder: ImageEncoder,
    write: Write,
    *,
    max_pixels: int,
    gpu_decode: bool,
    workers: int,
    known: Known = nothing_known,
    slot: Slot | None = None,
    stop: threading.Event | None = None,
    local_features: bool = True,
) -> bool:
    """Embed every item and hand it to ``write``; True when ``stop`` ended the run early (the batches in
    flight are written, no more read). A failure in ``write`` is raised once the writes in flight end.
    ``local_features``: extract them too (the records' ``local_features``)."""
    cuda = encoder.device.type == "cuda"
    loader = batch_loader(
        items,
        read_options(encoder, max_pixels, gpu_decode, local_features),
        batch_size=encoder.batch_size,
        workers=workers,
        known=known,
        pin_memory=cuda,
    )
    embedder = EmbedStage(encoder, max_waiting=4 * encoder.batch_size, slot=slot)
    stopped = False
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cbir-write") as writes:
        pending: deque[Future[None]] = deque()

        def submit(embedded: list[Embedded], dropped: int = 0, skipped: Sequence[Skipped] = ()) -> None:
            pending.append(writes.submit(write, embedded, dropped, skipped))
            while len(pending) > WRITES_IN_FLIGHT or (pending and pending[0].done()):
                pending.popleft().result()

        try:
            stage = DeviceStage(encoder, max_pixels=max_pixels)
            for batch in ahead(iter(loader), stage):
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                wait_for(batch, encoder.device)
                submit(embedder.add(batch), batch.duplicates, batch.skipped)
            submit(embedder.flush())
        finally:
            for future in pending:  # write what was embedded; raise the first failure
                future.result()
    return stopped
