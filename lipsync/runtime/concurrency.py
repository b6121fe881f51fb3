"""Two small threading tools the stages share: read ahead on a thread, and build once per key."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Hashable, Iterable, Iterator, TypeVar

T = TypeVar("T")
V = TypeVar("V")

QUEUE_FRAMES = 4  # frames decoded ahead of each consumer: enough to overlap, few enough to keep memory flat


def prefetch(items: Iterable[T], depth: int = QUEUE_FRAMES) -> Iterator[T]:
    """Iterate `items` on a background thread, `depth` ahead, so decoding overlaps the work on each item."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as err:  # handed to the consumer, raised there
            q.put(err)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
        close = getattr(items, "close", None)
        if close:
            close()


class BuildOnce(Generic[V]):
    """Values built on first use, one per key, then shared (loaded models, detectors).

    Each key has its own lock: a checkpoint downloading for one key never blocks
    another key's callers (the preview's detector, say). A failed build is not kept,
    so the next caller tries again.
    """

    def __init__(self, build: Callable[..., V]) -> None:
        self._build = build
        self._values: dict[Hashable, V] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, *key: Hashable) -> V:
        with self._guard:
            if key in self._values:
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                value = self._build(*key)
                with self._guard:
                    self._values[key] = value
            return self._values[key]

    def clear(self) -> None:
        with self._guard:
            self._values.clear()
