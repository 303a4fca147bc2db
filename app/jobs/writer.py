"""The jobs' last stage: commit embedded batches to the collection, with one cadence for saving the index.

The local run (bulk.py) calls it from its writer thread and the Ray run (ray.py) from the loop that
streams the actors' results, so both commit and save alike. Every batch is committed to the database (rows
with their vectors) in one transaction and added to the index in one call as soon as it is embedded; the
index file is saved every ``commit_every`` images but at most every few seconds (the database is the source
of truth, and a crash costs only a replay of its vectors at the next open). An interrupted run loses at
most the batches in flight, and a rerun skips what is stored (by sha256).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.collection.facade import Collection
from app.files.decoding import Skipped
from app.jobs.embed import Embedded

__all__ = ["MIN_SECONDS_BETWEEN_SAVES", "BulkReport", "Progress", "Writer"]

Progress = Callable[[int, int], None]  # (files done, images added)

# Saving rewrites the whole index file: with a save every commit_every images, a job of n images would
# write O(n^2) bytes. The database holds every vector, so a less recent file only lengthens the replay
# at the next open after a crash.
MIN_SECONDS_BETWEEN_SAVES = 10.0


@dataclass
class BulkReport:
    files: int = 0
    added: int = 0
    duplicates: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False  # by a signal: the files after the last batch were not read

    @property
    def images_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


class Writer:
    """Commits embedded batches in order (one transaction and one index add each) and reports progress.

    Progress is reported after the commit, so what a progress callback sees in the database is exactly
    what was reported.
    """

    def __init__(
        self, collection: Collection, report: BulkReport, *, copy_files: bool, on_progress: Progress | None
    ) -> None:
        self.collection, self.report = collection, report
        self.made_by = collection.encoder.fingerprint  # the encoder the run embeds with, to its end
        self.copy_files, self.on_progress = copy_files, on_progress
        self.done = 0
        self.since_save = 0
        self.last_save = time.monotonic()

    def __call__(
        self, embedded: Sequence[Embedded], dropped: int = 0, skipped: Sequence[Skipped] = ()
    ) -> None:
        """Write the batches embedded since the last call (waiting for their vectors); ``dropped`` files
        were duplicates of this run or of the collection, ``skipped`` ones unreadable."""
        report = self.report
        for batch in embedded:
            added, duplicates = self.collection.ingest_many(
                batch.items, batch.vectors(), copy_files=self.copy_files, made_by=self.made_by
            )
            report.added += added
            report.duplicates += duplicates
            self.since_save += added
        report.duplicates += dropped
        report.skipped.extend(skipped)
        now = time.monotonic()
        if (
            self.since_save >= self.collection.settings.commit_every
            and now - self.last_save >= MIN_SECONDS_BETWEEN_SAVES
        ):
            self.collection.save_index()
            self.since_save, self.last_save = 0, now
        if self.on_progress is not None:
            settled = dropped + len(skipped) + sum(len(batch.items) for batch in embedded)
            for _ in range(settled):  # per file, so a callback may act at any file count
                self.done += 1
                self.on_progress(self.done, report.added)

    def finish(self) -> None:
        """Save what the last cadence left unsaved (or the first file of a new collection)."""
        if self.since_save or not self.collection.settings.index_path.exists():
            self.collection.save_index()
        if self.on_progress is not None:
            self.on_progress(self.done, self.report.added)
