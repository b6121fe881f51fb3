"""Running the ffmpeg binary that imageio-ffmpeg ships: safely, with a time limit, one way.

Every call goes through here, so every call gets the same protections:
- an argument list, never a shell, so any character in a path is safe;
- `input_args`: files are opened only as plain local files (`-protocol_whitelist file`)
  and only by the demuxers of the containers we accept (`-format_whitelist`), so a
  playlist or manifest (HLS, DASH, concat, …) that would make ffmpeg read other files
  is refused, and a name with `%` is never taken as an image-sequence pattern;
- a time limit on every call (`LIPSYNC_FFMPEG_TIMEOUT`), so no input can hang a worker: a one-shot call
  (`run`) may take that long in all; a streaming one (`popen`) may go that long without moving a byte while we
  wait on it (`Watchdog`), so a long job runs as long as its own limits allow;
- its own session, so a Ctrl-C in a terminal reaches only us, and we stop ffmpeg.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, Iterator

from ..environment import FFMPEG_TIMEOUT
from ..errors import LipSyncError

# The demuxers of the containers we accept (ffmpeg names; a demuxer whose name lists several, such as
# "mov,mp4,m4a,3gp,3g2,mj2", is allowed when one of them is here). Playlists, manifests and concat files
# (hls, dash, concat, ffconcat, image2 sequences, …) are not, so they cannot point ffmpeg at other files.
ACCEPTED_DEMUXERS = ("mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "asf", "ogg", "wav", "w64",
                     "mp3", "flac", "aac", "aiff", "caf", "amr", "ac3", "eac3", "wv", "ape", "gif", "dv", "mxf",
                     "rawvideo")

# OpenCV's own ffmpeg (used to read the frame rate, as the official code does) gets the same whitelists.
os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = ("protocol_whitelist;file,pipe|format_whitelist;"
                                               + ",".join(ACCEPTED_DEMUXERS))


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg (no system ffmpeg needed)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def input_args(path: str) -> list[str]:
    """`-i path` with the protocol and container whitelists that keep ffmpeg to this one local file."""
    return ["-protocol_whitelist", "file,pipe", "-format_whitelist", ",".join(ACCEPTED_DEMUXERS), "-i", path]


def error_summary(stderr: bytes | str, default: str = "unknown ffmpeg error") -> str:
    """The line of ffmpeg's stderr that says what went wrong (its last non-empty one), at most 200 characters."""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][-200:] if lines else default


def shift_filter(seconds: float) -> str:
    """The audio filter that shifts a sound by `seconds` (positive: later, behind that much silence; negative:
    earlier, its start cut off), sample-exact, as an `-af` value ('' when there is nothing to do). The sound keeps
    its end: a job's output carries all of it, as without a shift."""
    if seconds > 0:
        return f"adelay=delays={seconds * 1000:.4f}:all=1"
    if seconds < 0:
        return f"atrim=start={-seconds:.6f},asetpts=PTS-STARTPTS"
    return ""


def command(*args: str) -> list[str]:
    """An ffmpeg argument list: quiet, never reading the terminal."""
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]


def run(args: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg to completion, capturing its output; a call over the time limit is stopped and reported."""
    limit = timeout or FFMPEG_TIMEOUT.read()
    try:
        return subprocess.run(args, capture_output=True, timeout=limit, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise LipSyncError(f"{what} took longer than {limit:.0f} s and was stopped. The file may be damaged or "
                           "unusually long; re-export it (e.g. as MP4 or WAV) and try again.") from None


CHUNK_BYTES = 1 << 20  # a frame is written in pieces of this size, so a large frame shows progress as it goes


class Watchdog:
    """Stops a streaming ffmpeg that moves no bytes for `timeout` seconds while we wait on it.

    Inactivity, not total time: a healthy ffmpeg moves bytes all along, however long the job (30 minutes of
    audio on a CPU takes longer than any fixed limit we would pick), and one that stalls on a damaged file
    stops moving them. Only time spent waiting on ffmpeg counts (reading its output, writing its input, waiting
    for it to finish): while the model is busy and does not read, an idle decoder is not stalled. Progress is
    bytes through our pipes and, for an encoder finishing its file, the growth of `output`.
    """

    def __init__(self, proc: subprocess.Popen, timeout: float, output: str | None = None) -> None:
        self.proc, self.timeout, self.output = proc, timeout, output
        self.fired = False
        self._lock = threading.Lock()
        self._waiting = 0
        self._last = time.monotonic()  # the last sign of life: bytes moved, a wait begun, the output grown
        self._size = -1
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="lipsync-ffmpeg-watchdog", daemon=True)
        self._thread.start()

    def moved(self) -> None:
        self._last = time.monotonic()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        with self._lock:
            if not self._waiting:
                self._last = max(self._last, time.monotonic())  # idle time before we waited was not ffmpeg's
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def _watch(self) -> None:
        poll = min(1.0, self.timeout / 4)
        while not self._done.wait(poll) and self.proc.poll() is None:
            self._output_grew()
            with self._lock:
                stalled = self._waiting and time.monotonic() - self._last > self.timeout
            if stalled:
                self.fired = True
                _kill(self.proc)
                return

    def _output_grew(self) -> None:
        if self.output is None:
            return
        try:
            size = os.path.getsize(self.output)
        except OSError:
            return
        if size != self._size:
            self._size = size
            self.moved()

    def cancel(self) -> None:
        self._done.set()


class _Reader:
    """ffmpeg's stdout, telling the watchdog when we wait on it and when bytes come."""

    def __init__(self, raw: IO[bytes], watchdog: Watchdog) -> None:
        self.raw, self.watchdog = raw, watchdog

    def readinto(self, buffer) -> int:
        with self.watchdog.waiting():
            n = self.raw.readinto(buffer)
        if n:
            self.watchdog.moved()
        return n

    def read(self, size: int = -1) -> bytes:
        with self.watchdog.waiting():
            data = self.raw.read(size)
        if data:
            self.watchdog.moved()
        return data

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed


class _Writer:
    """ffmpeg's stdin, written in pieces so that a large frame shows progress as ffmpeg takes it."""

    def __init__(self, raw: IO[bytes], watchdog: Watchdog) -> None:
        self.raw, self.watchdog = raw, watchdog

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        with self.watchdog.waiting():
            for start in range(0, len(view), CHUNK_BYTES):
                self.raw.write(view[start:start + CHUNK_BYTES])
                self.watchdog.moved()
        return len(view)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()

    @property
    def closed(self) -> bool:
        return self.raw.closed


class _Process(subprocess.Popen):
    """A Popen whose waits count as waiting on ffmpeg (see Watchdog)."""

    watchdog: Watchdog | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.watchdog is None:
            return super().wait(timeout)
        with self.watchdog.waiting():
            return super().wait(timeout)


def popen(args: list[str], timeout: float | None = None, output: str | None = None, **kwargs) -> subprocess.Popen:
    """Start a streaming ffmpeg in its own session, stopped by a `Watchdog` when it moves no bytes for the time
    limit while we wait on it. `output`: the file it writes, whose growth counts as progress.

    A Ctrl-C in the terminal reaches only us; the caller stops ffmpeg (`stop`) when it is done with it.
    """
    proc = _Process(args, start_new_session=True, **kwargs)
    proc.watchdog = Watchdog(proc, timeout or FFMPEG_TIMEOUT.read(), output)
    if proc.stdout is not None:
        proc.stdout = _Reader(proc.stdout, proc.watchdog)  # type: ignore[assignment]
    if proc.stdin is not None:
        proc.stdin = _Writer(proc.stdin, proc.watchdog)  # type: ignore[assignment]
    return proc


def failure(proc: subprocess.Popen, stderr: bytes | str) -> str:
    """Why a streaming ffmpeg failed, in a few words: stopped by its watchdog, else its own last error line."""
    watchdog = getattr(proc, "watchdog", None)
    if watchdog is not None and watchdog.fired:
        return (f"ffmpeg moved no data for {watchdog.timeout:.0f} s and was stopped; raise LIPSYNC_FFMPEG_TIMEOUT "
                "if the machine is that busy")
    return error_summary(stderr)


def stdout_pieces(args: list[str], piece_bytes: int, failed: Callable[[str], Exception]) -> Iterator[bytes]:
    """A streaming ffmpeg's stdout in pieces of at most `piece_bytes`; once it has all come, a failed ffmpeg
    raises `failed(why)` (why: `failure`'s few words), so each caller words its own sentence. Its stderr goes to
    a temporary file, never a pipe ffmpeg could stall on; it is stopped however the reading ends."""
    with tempfile.TemporaryFile() as stderr_file:
        proc = popen(args, stdout=subprocess.PIPE, stderr=stderr_file)
        try:
            yield from iter(lambda: proc.stdout.read(piece_bytes), b"")
            code = proc.wait()
        finally:
            stop(proc)
            proc.stdout.close()
        if code != 0:
            stderr_file.seek(0)
            raise failed(failure(proc, stderr_file.read()))


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()


def stop(proc: subprocess.Popen) -> None:
    """Stop ffmpeg if it still runs, reap it and its watchdog."""
    _kill(proc)
    proc.wait()
    watchdog = getattr(proc, "watchdog", None)
    if watchdog is not None:
        watchdog.cancel()
