"""Admission control for inference: a few run, a few wait, the rest are told to come back.

A CPU saturated by one forward pass gains nothing from a second one in parallel, and a queue that grows
without bound turns every request slow. So inference runs ``concurrency`` at a time, at most ``max_waiting``
requests wait (each for at most ``timeout`` seconds), and beyond that a request fails fast with 503 and
Retry-After — latency for the admitted stays bounded. Bulk jobs pass ``bounded=False``: they are the
owner of the machine, not visitors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from app.errors import ServiceBusyError


class InferenceGate:
    def __init__(self, concurrency: int = 1, max_waiting: int = 4, timeout: float = 30.0) -> None:
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.timeout = timeout
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def running(self) -> int:
        return self._running

    @property
    def full(self) -> bool:
        """Whether a bounded request arriving now would be turned away (a hint: ``slot`` decides)."""
        return self._running + self._waiting >= self.concurrency + self.max_waiting

    def busy(self) -> ServiceBusyError:
        return ServiceBusyError(
            f"the service is busy ({self._running} inferences running, {self._waiting} waiting): "
            "retry in a moment"
        )

    @contextmanager
    def slot(self, *, bounded: bool = True) -> Iterator[None]:
        with self._lock:
            if bounded and self.full:
                raise self.busy()
            self._waiting += 1
        acquired = self._slots.acquire(timeout=self.timeout if bounded else None)
        with self._lock:
            self._waiting -= 1
            if acquired:
                self._running += 1
        if not acquired:
            raise ServiceBusyError(f"no inference slot freed up within {self.timeout:g} s: retry in a moment")
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()
