"""Ctrl-C and SIGTERM as exceptions where the program is, for the commands and the batch alike: a job in flight
unwinds (its writer deletes the partial file), and an interruption Python swallowed is still acted on.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: the job in flight unwinds the same way (its writer deletes the
    partial file) and the command ends with status 143 instead of 130."""

    signal_number = signal.SIGTERM


def raise_terminated(signum: int, frame: Any) -> None:
    """A SIGTERM handler: raise `Terminated` where the program is."""
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (only there can Python take signals);
    the handler before it is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class InterruptFlag:
    """Ctrl-C and SIGTERM remembered as well as raised (`Terminated` for SIGTERM): Python drops a KeyboardInterrupt
    that lands in a garbage-collection callback ("Exception ignored in ..."), and short jobs make that likely; a
    batch (or a batch worker) then stops after the job that swallowed it (`check`), instead of running on, and
    prints no traceback. Only in the main thread, where signal handlers live, and only over handlers that are
    Python's defaults (or `raise_terminated`); `restore` puts them back."""

    def __init__(self) -> None:
        self.hit: KeyboardInterrupt | None = None
        self.previous: dict[int, Any] = {}
        self.previous_hook = sys.unraisablehook
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, defaults in ((signal.SIGINT, (signal.default_int_handler,)),
                                 (signal.SIGTERM, (signal.SIG_DFL, raise_terminated))):
            if signal.getsignal(signum) in defaults:
                self.previous[signum] = signal.signal(signum, self._on_signal)
        sys.unraisablehook = self._unraisable

    def _unraisable(self, info) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt) and self.hit:
            return  # remembered above: no "Exception ignored" traceback for the user
        self.previous_hook(info)

    def _on_signal(self, signum, frame) -> None:
        self.hit = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        raise self.hit

    def check(self) -> None:
        if self.hit:
            raise self.hit

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}
        sys.unraisablehook = self.previous_hook
