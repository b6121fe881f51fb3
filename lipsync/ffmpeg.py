"""Running the ffmpeg binary that imageio-ffmpeg ships: safely, with a time limit, one way.

Every call goes through here, so every call gets the same protections:
- an argument list, never a shell, so any character in a path is safe;
- `input_args`: files are opened only as plain local files (`-protocol_whitelist file`)
  and only by the demuxers of the containers we accept (`-format_whitelist`), so a
  playlist or manifest (HLS, DASH, concat, …) that would make ffmpeg read other files
  is refused, and a name with `%` is never taken as an image-sequence pattern;
- a time limit on every call (`LIPSYNC_FFMPEG_TIMEOUT`), so no input can hang a worker;
- its own session, so a Ctrl-C in a terminal reaches only us, and we stop ffmpeg.
"""

from __future__ import annotations

import functools
import os
import subprocess
import threading

from .errors import LipSyncError

# The demuxers of the containers we accept (ffmpeg names; a demuxer whose name lists several, such as
# "mov,mp4,m4a,3gp,3g2,mj2", is allowed when one of them is here). Playlists, manifests and concat files
# (hls, dash, concat, ffconcat, image2 sequences, …) are not, so they cannot point ffmpeg at other files.
ACCEPTED_DEMUXERS = ("mov", "mp4", "matroska", "webm", "avi", "flv", "mpegts", "mpeg", "asf", "ogg", "wav", "w64",
                     "mp3", "flac", "aac", "aiff", "caf", "amr", "ac3", "eac3", "wv", "ape", "gif", "dv", "mxf",
                     "rawvideo")
TIMEOUT_SECONDS = float(os.environ.get("LIPSYNC_FFMPEG_TIMEOUT", "900") or 900)

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


def command(*args: str) -> list[str]:
    """An ffmpeg argument list: quiet, never reading the terminal."""
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]


def run(args: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg to completion, capturing its output; a call over the time limit is stopped and reported."""
    limit = timeout or TIMEOUT_SECONDS
    try:
        return subprocess.run(args, capture_output=True, timeout=limit, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise LipSyncError(f"{what} took longer than {limit:.0f} s and was stopped. The file may be damaged or "
                           "unusually long; re-export it (e.g. as MP4 or WAV) and try again.") from None


def popen(args: list[str], timeout: float | None = None, **kwargs) -> subprocess.Popen:
    """Start a streaming ffmpeg in its own session, stopped by a watchdog after the time limit.

    A Ctrl-C in the terminal reaches only us; the caller stops ffmpeg (`stop`) when it is done with it.
    """
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    watchdog = threading.Timer(timeout or TIMEOUT_SECONDS, _kill, args=(proc,))
    watchdog.daemon = True
    watchdog.start()
    proc.watchdog = watchdog  # type: ignore[attr-defined]
    return proc


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
