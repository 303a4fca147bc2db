"""The bookkeeping every trainer keeps from epoch to epoch: best validation loss, patience, history, time.

Both trainers (the autoencoder's and the contrastive head's) keep the epoch with the best held-out loss and
stop after ``patience`` epochs without progress; keeping that rule in one place keeps them alike, and their
run states (which a checkpoint saves to resume) extend this one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EpochLedger", "EpochReport"]

# A validation loss must beat the best by this fraction to count as progress (not just float jitter).
_MIN_IMPROVEMENT = 1e-4


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float | None
    best_epoch: int
    improved: bool
    seconds: float  # this epoch's


@dataclass
class EpochLedger:
    epoch: int = 0  # epochs completed
    best_loss: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False
    stop_reason: str = ""  # "early stopping" or "epochs" once finished

    def close_epoch(
        self,
        epoch: int,
        epochs: int,
        train_loss: float,
        val_loss: float | None,
        *,
        patience: int,
        started: float,
    ) -> EpochReport:
        """Record a finished epoch; the report says whether it is the new best (the caller keeps its
        weights then) and ``finished`` whether to stop. Without validation every epoch counts as the best."""
        improved = (
            val_loss is None or self.best_loss is None or val_loss < self.best_loss * (1 - _MIN_IMPROVEMENT)
        )
        if improved:
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        self.epoch = epoch
        self.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        seconds = time.perf_counter() - started
        self.seconds += seconds
        stop = "early stopping" if val_loss is not None and self.bad_epochs >= patience else ""
        if epoch == epochs and not stop:
            stop = "epochs"
        self.finished, self.stop_reason = bool(stop), stop
        return EpochReport(epoch, epochs, train_loss, val_loss, self.best_epoch, improved, seconds)
