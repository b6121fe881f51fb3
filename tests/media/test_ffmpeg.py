"""The ffmpeg watchdog: a streaming ffmpeg is stopped when it stalls, never for running long."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cli_runner import run_lipsync

from lipsync.media import ffmpeg

ROOT = Path(__file__).resolve().parents[2]
FRAME = 64 * 48 * 3


def _decoder(seconds: float, realtime: bool = True) -> list[str]:
    """ffmpeg writing `seconds` of 64x48 frames to stdout, at their own pace when `realtime` (a long, busy job)."""
    return ffmpeg.command("-v", "error", *(["-re"] if realtime else []), "-f", "lavfi", "-i",
                          f"testsrc=size=64x48:rate=25:duration={seconds}", "-f", "rawvideo", "-pix_fmt", "bgr24", "-")


def _read_all(proc: subprocess.Popen) -> int:
    frames = 0
    buffer = bytearray(FRAME)
    while proc.stdout.readinto(memoryview(buffer)) == FRAME:  # a pipe may return less; good enough at 9 KB
        frames += 1
    return frames


@pytest.mark.slow  # waits out a real timeout; the stall and idle cases below stay in the fast lane
def test_a_busy_ffmpeg_runs_past_the_timeout():
    start = time.monotonic()
    proc = ffmpeg.popen(_decoder(3.0), timeout=0.5, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        frames = _read_all(proc)
        assert proc.wait() == 0
    finally:
        ffmpeg.stop(proc)
    assert time.monotonic() - start > 1.5  # three times the timeout, in all
    assert not proc.watchdog.fired and frames == 75


def test_a_stalled_ffmpeg_is_stopped_and_says_why():
    """ffmpeg waiting for input that never comes, while we wait for its output: stopped after the timeout."""
    cmd = ffmpeg.command("-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "64x48", "-i", "-",
                         "-f", "rawvideo", "-")
    start = time.monotonic()
    proc = ffmpeg.popen(cmd, timeout=1.0, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert _read_all(proc) == 0
        assert proc.wait() != 0
    finally:
        ffmpeg.stop(proc)
        proc.stdin.close()
    assert proc.watchdog.fired and 1.0 <= time.monotonic() - start < 10
    assert "moved no data for 1 s" in ffmpeg.failure(proc, b"")


def test_idle_while_we_are_busy_is_not_a_stall():
    """A decoder whose pipe is full because we are busy elsewhere (the model) waits for us: not ffmpeg's fault."""
    proc = ffmpeg.popen(_decoder(1.0, realtime=False), timeout=0.3, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # busy elsewhere, not reading: ffmpeg has filled the pipe and waits
        frames = _read_all(proc)
        assert proc.wait() == 0
    finally:
        ffmpeg.stop(proc)
    assert frames == 25 and not proc.watchdog.fired


@pytest.mark.slow
def test_a_job_longer_than_the_ffmpeg_timeout_completes(checkpoint, tmp_path):
    """LIPSYNC_FFMPEG_TIMEOUT=3 and a job of more than twice that on the CPU (fp32: bf16 hosts finish a short clip
    sooner than that): the encoder lives as long as the job."""
    import media

    speech = media.make_speech(tmp_path / "long.wav", seconds=12.0)
    out = tmp_path / "out.mp4"
    start = time.monotonic()
    proc = run_lipsync("--face", ROOT / "examples" / "astronaut.mp4", "--audio", speech, "--outfile", out,
                       "--checkpoint_path", checkpoint, "--detector", "haar", "--device", "cpu",
                       "--precision", "fp32", env={"LIPSYNC_FFMPEG_TIMEOUT": "3"})
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert seconds > 6, f"the job took {seconds:.1f} s: too short to show the old 3 s limit"
    from lipsync.media.probe import probe_media

    assert probe_media(str(out)).duration == pytest.approx(12.0, abs=0.5)
