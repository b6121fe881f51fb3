"""Stream frames in and out through ffmpeg (lipsync.media.ffmpeg), and the app's display copy.

Frames travel as raw BGR bytes over pipes, one at a time, so memory does not grow with
the clip's length. The output is encoded into a hidden temporary file beside the
destination and moved into place only once ffmpeg has finished cleanly.
"""

from __future__ import annotations

import functools
import os
import queue
import subprocess
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import LipSyncError
from ..storage import atomic
from . import ffmpeg
from .probe import MediaInfo
from .segments import SegmentPlan, keyframe_args, tee_output


def read_image(path: str) -> np.ndarray:
    """A photo as a BGR uint8 array: greyscale, alpha and CMYK are converted as cv2.imread does."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        data = np.fromfile(path, dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise LipSyncError(f"'{path}' looks like an image but cannot be decoded (damaged or truncated). "
                           "Save it again as JPG or PNG and retry.")
    return image


def _truncated(stderr_file) -> bool:
    """ffmpeg decodes what there is of a cut-off MP4 and exits 0, but says 'partial file'."""
    stderr_file.seek(0)
    return b"partial file" in stderr_file.read()


def read_frames(info: MediaInfo, max_frames: int = 0, sample_fps: float = 0.0, rate: float = 0.0
                ) -> Iterator[np.ndarray]:
    """Stream a video's frames as BGR uint8 arrays, upright, every decoded frame once (at most `max_frames`).

    `-fps_mode passthrough` keeps ffmpeg from duplicating or dropping frames of
    variable-frame-rate clips, so the frames are those OpenCV (and the original) reads.
    `sample_fps` instead keeps only that many frames per second (a quick look through a clip).
    `rate` instead gives exactly that many per second, frames repeated or dropped by time as
    `ffmpeg -r` does it (what SyncNet's official pipeline converts its clips to 25 fps with).
    """
    width, height = info.width, info.height
    frame_bytes = width * height * 3
    cmd = ffmpeg.command("-v", "error", *ffmpeg.input_args(info.path), "-map", "0:v:0", "-an", "-sn")
    if sample_fps:
        cmd += ["-vf", f"fps={sample_fps:.4f}"]
    else:
        cmd += ["-r", f"{rate:g}"] if rate else ["-fps_mode", "passthrough"]
    if max_frames:
        cmd += ["-frames:v", str(max_frames)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    with tempfile.TemporaryFile() as stderr_file:
        proc = ffmpeg.popen(cmd, stdout=subprocess.PIPE, stderr=stderr_file, bufsize=frame_bytes)
        try:
            while True:
                buf = bytearray(frame_bytes)
                view = memoryview(buf)
                got = 0
                while got < frame_bytes:
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < frame_bytes:
                    break
                yield np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
            if proc.wait() != 0:
                raise LipSyncError(f"Could not decode the video '{info.path}' ({_stderr_summary(proc, stderr_file)}). "
                                   "The file may be damaged; re-export it as MP4 and try again.")
            if _truncated(stderr_file):
                raise LipSyncError(f"The video '{info.path}' is truncated: it ends part-way through (an upload or "
                                   "copy that did not finish). Use the complete file.")
        finally:
            ffmpeg.stop(proc)
            proc.stdout.close()


def _stderr_summary(proc: subprocess.Popen, stderr_file) -> str:
    stderr_file.seek(0)
    return ffmpeg.failure(proc, stderr_file.read())


def fps_fraction(fps: float) -> Fraction:
    """A float rate as the small rational ffmpeg should use (29.97002997 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


@functools.lru_cache(maxsize=1)
def has_h264_nvenc() -> bool:
    """NVIDIA hardware H.264 encoding works here (a GPU with NVENC and a driver that exposes it)."""
    try:
        proc = ffmpeg.run(ffmpeg.command("-v", "error", "-f", "lavfi", "-i", "color=black:s=256x256:d=0.1",
                                         "-c:v", "h264_nvenc", "-f", "null", "-"), "Testing NVENC", timeout=20)
    except (OSError, LipSyncError):
        return False
    return proc.returncode == 0


def choose_encoder(name: str, device: str) -> str:
    """'auto': NVIDIA's hardware encoder when the models run on CUDA and it works here, else libx264."""
    if name == "h264_nvenc" and not has_h264_nvenc():
        raise LipSyncError("The h264_nvenc encoder does not work here (it needs an NVIDIA GPU with NVENC). "
                           "Use --encoder libx264.")
    if name == "auto":
        return "h264_nvenc" if device.startswith("cuda") and has_h264_nvenc() else "libx264"
    return name


class VideoWriter:
    """Encode BGR frames to an H.264 yuv420p + AAC MP4 that browsers play, atomically.

    Use as a context manager: the MP4 appears at `outfile` only when the block ends
    without an error and ffmpeg exits cleanly; otherwise the partial file is deleted.
    With `segments`, the same encoded stream also goes out in short MPEG-TS segments as it
    is made (lipsync.media.segments); the MP4 is byte for byte the same either way.
    """

    def __init__(self, outfile: str, width: int, height: int, fps: float, audio_path: str | None,
                 video_codec: str = "libx264", crf: int = 18, preset: str = "superfast",
                 segments: SegmentPlan | None = None, audio_shift: float = 0.0) -> None:
        self.outfile = os.path.abspath(outfile)
        self.width, self.height = width, height
        self.even_width, self.even_height = width + width % 2, height + height % 2
        out_dir = os.path.dirname(self.outfile)
        if not os.path.isdir(out_dir):
            raise LipSyncError(f"The output folder '{out_dir}' does not exist. Create it or choose another path.")
        if os.path.isdir(self.outfile):
            raise LipSyncError(f"The output '{outfile}' is a folder. Give a file name, e.g. "
                               f"{os.path.join(outfile, 'result.mp4')}.")
        try:
            self._partial = atomic.PartialFile(self.outfile, suffix=".partial.mp4")
        except OSError as err:
            raise LipSyncError(f"Cannot write in the folder '{out_dir}' ({err.strerror}). Choose an output path in "
                               "a folder you can write to.") from None
        self.partial = str(self._partial.path)
        rate = fps_fraction(fps)
        cmd = ffmpeg.command("-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
               "-s", f"{self.even_width}x{self.even_height}",
               "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "-")
        cmd += [*ffmpeg.input_args(audio_path), "-map", "0:v:0", "-map", "1:a:0"] if audio_path else ["-map", "0:v:0"]
        if video_codec == "h264_nvenc":
            cmd += ["-c:v", "h264_nvenc", "-preset", "p4", "-cq", str(crf + 1)]
        else:
            cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf)]
        cmd += ["-pix_fmt", "yuv420p", "-r", f"{rate.numerator}/{rate.denominator}", *keyframe_args()]
        if audio_path:
            shifted = ffmpeg.shift_filter(audio_shift)  # --audio_offset: the sound carried as the model heard it
            cmd += ["-c:a", "aac", "-b:a", "192k", *(["-af", shifted] if shifted else [])]
        cmd += tee_output(self.partial, segments)
        self._stderr = tempfile.TemporaryFile()
        # Its own session: a Ctrl-C in the terminal must not make ffmpeg finish the partial file on its own;
        # the writer decides (complete: moved into place; interrupted: killed and deleted).
        self._proc = ffmpeg.popen(cmd, stdin=subprocess.PIPE, stderr=self._stderr, output=self.partial)
        self.frames_written = 0
        # A feeder thread writes to ffmpeg so that encoding overlaps the model; the queue bounds memory.
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._feed_error: BaseException | None = None
        self.encode_seconds = 0.0  # time spent waiting on ffmpeg to take frames: the encoder's busy time
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self._feed_error is None:
                start = time.perf_counter()
                try:
                    self._proc.stdin.write(frame.data)
                    self.encode_seconds += time.perf_counter() - start
                except (BrokenPipeError, OSError, ValueError) as err:
                    self._feed_error = err

    def write(self, frame: np.ndarray) -> None:
        if self._feed_error is not None:
            self._proc.wait()
            raise LipSyncError(f"The video encoder stopped: {_stderr_summary(self._proc, self._stderr)}")
        if self.even_width != self.width or self.even_height != self.height:
            frame = np.pad(frame, ((0, self.even_height - self.height), (0, self.even_width - self.width), (0, 0)),
                           mode="edge")
        self._queue.put(np.ascontiguousarray(frame))
        self.frames_written += 1

    def _stop_feeder(self) -> None:
        if self._feeder.is_alive():
            self._queue.put(None)
            self._feeder.join()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            if self._proc.poll() is None:  # a failure before _finish: stop ffmpeg, which also unblocks the feeder
                self._proc.kill()
            self._stop_feeder()
            ffmpeg.stop(self._proc)
            if not self._proc.stdin.closed:
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass
            self._stderr.close()
            self._partial.discard()

    def _finish(self) -> None:
        self._stop_feeder()
        if self._feed_error is not None:
            self._proc.wait()
            raise LipSyncError(f"The video encoder stopped: {_stderr_summary(self._proc, self._stderr)}")
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if self._proc.wait() != 0:
            raise LipSyncError(f"Encoding the output failed: {_stderr_summary(self._proc, self._stderr)}")
        if self.frames_written == 0:
            raise LipSyncError("No frame was produced, so no video was written.")
        self._partial.commit()


def remux_shifted_sound(video: str, audio: str, seconds: float) -> None:
    """Replace the sound of the MP4 `video` by `audio` shifted by `seconds` (positive: later): the picture is copied
    as it is (nothing decoded or synthesised again), the sound encoded from the job's own audio file as the job's
    encoder does (one generation of AAC, not two). Atomic: `video` is replaced only once the new file is complete."""
    with atomic.replacing(video, suffix=".partial.mp4") as partial:
        cmd = ffmpeg.command("-y", "-v", "error", *ffmpeg.input_args(video), *ffmpeg.input_args(audio),
                             "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                             "-af", ffmpeg.shift_filter(seconds) or "anull", "-c:a", "aac", "-b:a", "192k",
                             "-movflags", "+faststart", "-f", "mp4", str(partial))
        proc = ffmpeg.run(cmd, "Shifting the sound of the result")
        if proc.returncode != 0:
            raise LipSyncError(f"Could not shift the sound of '{video}' ({ffmpeg.error_summary(proc.stderr)}); the "
                               "result was kept as it was made.")


def display_copy(info: MediaInfo, outfile: str, audio_path: str | None = None, seconds: float = 0.0) -> str:
    """An H.264/AAC MP4 of the original face input that any browser plays, for side-by-side viewing.

    A video keeps its own sound and is cut to `seconds` (the result's length: a long
    original is never transcoded whole); a photo becomes a still clip of `seconds` over
    `audio_path`. A video that browsers already play (H.264 4:2:0 + AAC in a .mp4) is
    returned as it is. A photo is re-read from the pixels we decoded, never by its name,
    so a name like `face%03d.png` is not taken for an image-sequence pattern.
    """
    if info.plays_in_browsers and Path(info.path).suffix.lower() in (".mp4", ".m4v"):
        return info.path
    even = "pad=ceil(iw/2)*2:ceil(ih/2)*2"
    length = ["-t", f"{max(seconds, 0.04):.3f}"]
    with tempfile.TemporaryDirectory(prefix="lipsync-display-") as work, \
            atomic.replacing(outfile, suffix=".partial.mp4") as partial:
        if info.is_image:
            still = os.path.join(work, "still.png")
            cv2.imwrite(still, read_image(info.path))
            cmd = ffmpeg.command("-y", "-v", "error", "-protocol_whitelist", "file", "-f", "image2",
                                 "-pattern_type", "none", "-loop", "1", "-framerate", "25", "-i", still)
            if audio_path:
                cmd += [*ffmpeg.input_args(audio_path), "-map", "0:v", "-map", "1:a:0", "-c:a", "aac"]
            cmd += [*length, "-vf", even, "-c:v", "libx264", "-tune", "stillimage"]
        else:
            cmd = ffmpeg.command("-y", "-v", "error", *ffmpeg.input_args(info.path), *length, "-map", "0:v:0",
                                 "-map", "0:a:0?", "-vf", even, "-c:v", "libx264", "-c:a", "aac")
        cmd += ["-preset", "superfast", "-crf", "20", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4"]
        proc = ffmpeg.run(cmd + [str(partial)], f"Preparing '{info.path}' for display")
        if proc.returncode != 0:
            raise LipSyncError(f"Could not convert '{info.path}' for display ({ffmpeg.error_summary(proc.stderr)}).")
    return outfile
