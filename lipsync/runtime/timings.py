"""Seconds each stage was busy, summed over the threads that ran it."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class StageTimes:
    """Busy seconds per stage; with overlap they add up to more than the wall time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Charge the time spent in the block to `name`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def timed(self, stage: str, items: Iterable[T]) -> Iterator[T]:
        """Iterate `items`, charging the time spent producing each one to `stage`."""
        iterator = iter(items)
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.add(stage, time.perf_counter() - start)
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()
