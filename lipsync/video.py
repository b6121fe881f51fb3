"""Probe media, stream frames in and out through the ffmpeg binary imageio-ffmpeg ships.

Frames travel as raw BGR bytes over pipes, one at a time, so memory does not grow with
the clip's length. ffmpeg is always run with an argument list, never through a shell,
so any character in a path is safe. The output is encoded into a hidden temporary file
beside the destination and moved into place only once ffmpeg has finished cleanly.
"""

from __future__ import annotations

import functools
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from .errors import LipSyncError

IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),  # PNG
    (0, b"BM"),  # BMP
    (0, b"II*\x00"),  # TIFF, little-endian
    (0, b"MM\x00*"),  # TIFF, big-endian
    (8, b"WEBP"),  # WebP (RIFF....WEBP)
)


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled with imageio-ffmpeg (no system ffmpeg needed)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class MediaInfo:
    """What the pipeline needs to know about an input file before reading it."""

    path: str
    is_image: bool = False
    has_video: bool = False
    width: int = 0  # as displayed, i.e. after rotation metadata is applied
    height: int = 0
    fps: float = 0.0
    rotation: int = 0  # degrees of the display matrix, informative
    has_audio: bool = False
    audio_rate: int = 0
    audio_channels: int = 0
    duration: float = 0.0  # seconds, 0 when unknown
    container: str = ""  # ffmpeg's demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    video_codec: str = ""  # e.g. "h264"
    pixel_format: str = ""  # e.g. "yuv420p"
    audio_codec: str = ""  # e.g. "aac"

    @property
    def plays_in_browsers(self) -> bool:
        """H.264 4:2:0 in MP4 with AAC sound or none: what every browser plays as it is."""
        return (not self.is_image and "mp4" in self.container.split(",") and self.video_codec == "h264"
                and self.pixel_format == "yuv420p" and self.audio_codec in ("", "aac"))


def is_image_file(path: str) -> bool:
    """Whether the file is a still image, judged by its first bytes, not its name."""
    with open(path, "rb") as f:
        head = f.read(16)
    return any(head[offset: offset + len(sig)] == sig for offset, sig in IMAGE_SIGNATURES)


def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise LipSyncError(f"File not found: '{path}'. Check the path and try again.")
    if os.path.isdir(path):
        raise LipSyncError(f"'{path}' is a folder, not a file. Give the path of a video, photo or audio file.")
    if os.path.getsize(path) == 0:
        raise LipSyncError(f"'{path}' is empty (0 bytes). The upload or copy did not finish; use the original file.")


_CONTAINER = re.compile(r"Input #0, ([\w,]+), from")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<rest>.*)")
_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Audio: (?P<rest>.*)")
_SIZE = re.compile(r"(?<![\dx])(\d{2,5})x(\d{2,5})(?![\dx])")
_FPS = re.compile(r"([\d.]+)(k?) fps")
_TBR = re.compile(r"([\d.]+)(k?) tbr")
_RATE = re.compile(r"(\d+) Hz")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


MIN_FPS, MAX_FPS = 1.0, 240.0  # frame rates outside this range are a damaged or odd file, not a video


def _snap_fps(value: float) -> float:
    """ffmpeg prints rates rounded to 2 decimals; recover the NTSC rationals (30000/1001, …)."""
    for base in (24, 30, 48, 60, 120):
        ntsc = base * 1000 / 1001
        if abs(value - ntsc) < 0.006:
            return ntsc
    return value


def _cv2_fps(path: str) -> float:
    """The frame rate as OpenCV reports it: the very number the official inference.py uses."""
    cap = cv2.VideoCapture(path)
    try:
        return float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()


def probe_media(path: str) -> MediaInfo:
    """Read the stream facts from `ffmpeg -i` (there is no ffprobe in imageio-ffmpeg)."""
    _check_readable(path)
    if is_image_file(path):
        image = read_image(path)
        return MediaInfo(path=path, is_image=True, has_video=True, width=image.shape[1], height=image.shape[0])
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", path], capture_output=True)
    text = proc.stderr.decode(errors="replace")
    if "Invalid data found" in text or ("Stream #" not in text):
        raise LipSyncError(
            f"'{path}' is not a video, photo or audio file that can be read (damaged, truncated or of an "
            "unknown format). Re-export it as MP4, JPG/PNG or WAV/MP3 and try again."
        )
    info: dict = {"path": path}
    container = _CONTAINER.search(text)
    if container:
        info["container"] = container.group(1)
    for line in text.splitlines():
        video = _VIDEO_STREAM.search(line)
        if video and "attached pic" not in line and not info.get("has_video"):
            rest = video.group("rest")
            info["video_codec"] = rest.split(" ", 1)[0].rstrip(",")
            pixel_format = re.search(r"\), (\w+)[(,]|, (yuv\w+|rgb\w+|gray\w*|bgr\w+)", rest)
            if pixel_format:
                info["pixel_format"] = pixel_format.group(1) or pixel_format.group(2)
            size = _SIZE.search(rest)
            if size:
                info.update(has_video=True, width=int(size.group(1)), height=int(size.group(2)))
            rate = _FPS.search(rest) or _TBR.search(rest)
            if rate:
                info["fps"] = _snap_fps(float(rate.group(1)) * (1000 if rate.group(2) else 1))
        audio = _AUDIO_STREAM.search(line)
        if audio and not info.get("has_audio"):
            rest = audio.group("rest")
            info["audio_codec"] = rest.split(" ", 1)[0].rstrip(",")
            rate = _RATE.search(rest)
            layout = next((n for name, n in _CHANNELS.items() if re.search(rf"\b{re.escape(name)}\b", rest)), None)
            channels = re.search(r"(\d+) channels", rest)
            info.update(has_audio=True, audio_rate=int(rate.group(1)) if rate else 0,
                        audio_channels=layout or (int(channels.group(1)) if channels else 1))
        rotation = _ROTATION.search(line)
        if rotation and info.get("has_video") and "rotation" not in info:
            info["rotation"] = int(round(float(rotation.group(1))))
        duration = _DURATION.search(line)
        if duration:
            h, m, s = duration.groups()
            info["duration"] = int(h) * 3600 + int(m) * 60 + float(s)
    if info.get("rotation", 0) % 180 != 0:
        info["width"], info["height"] = info["height"], info["width"]
    if info.get("has_video"):
        # The official inference.py times the mel windows by OpenCV's number; for variable-frame-rate
        # clips it can differ from the rate ffmpeg prints, so it wins whenever it is plausible.
        exact = _cv2_fps(path)
        if MIN_FPS <= exact <= MAX_FPS:
            info["fps"] = exact
        if not MIN_FPS <= info.get("fps", 0) <= MAX_FPS:
            raise LipSyncError(f"'{path}' has no usable frame rate ({info.get('fps', 0):g} fps). Re-export it as an "
                               "MP4 at a constant frame rate (e.g. 25 or 30 fps) and try again.")
    return MediaInfo(**info)


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


def _last_error_line(stderr_file) -> str:
    stderr_file.seek(0)
    lines = [ln.strip() for ln in stderr_file.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown ffmpeg error"


def _truncated(stderr_file) -> bool:
    """ffmpeg decodes what there is of a cut-off MP4 and exits 0, but says 'partial file'."""
    stderr_file.seek(0)
    return b"partial file" in stderr_file.read()


def read_frames(info: MediaInfo) -> Iterator[np.ndarray]:
    """Stream a video's frames as BGR uint8 arrays, upright, every decoded frame once.

    `-fps_mode passthrough` keeps ffmpeg from duplicating or dropping frames of
    variable-frame-rate clips, so the frames are those OpenCV (and the original) reads.
    """
    width, height = info.width, info.height
    frame_bytes = width * height * 3
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", info.path, "-map", "0:v:0", "-an", "-sn",
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    with tempfile.TemporaryFile() as stderr_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr_file, bufsize=frame_bytes,
                                start_new_session=True)  # Ctrl-C reaches us, and we stop ffmpeg in `finally`
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
                raise LipSyncError(f"Could not decode the video '{info.path}' ({_last_error_line(stderr_file)}). "
                                   "The file may be damaged; re-export it as MP4 and try again.")
            if _truncated(stderr_file):
                raise LipSyncError(f"The video '{info.path}' is truncated: it ends part-way through (an upload or "
                                   "copy that did not finish). Use the complete file.")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def fps_fraction(fps: float) -> Fraction:
    """A float rate as the small rational ffmpeg should use (29.97002997 -> 30000/1001)."""
    return Fraction(fps).limit_denominator(1001)


ENCODERS = ("auto", "libx264", "h264_nvenc")


@functools.lru_cache(maxsize=1)
def has_h264_nvenc() -> bool:
    """NVIDIA hardware H.264 encoding works here (a GPU with NVENC and a driver that exposes it)."""
    try:
        proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                               "color=black:s=256x256:d=0.1", "-c:v", "h264_nvenc", "-f", "null", "-"],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def choose_encoder(name: str, device: str) -> str:
    """'auto': NVIDIA's hardware encoder when the models run on CUDA and it works here, else libx264."""
    if name not in ENCODERS:
        raise LipSyncError(f"Unknown encoder '{name}'. Choose one of: {', '.join(ENCODERS)}.")
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
    """

    def __init__(self, outfile: str, width: int, height: int, fps: float, audio_path: str | None,
                 video_codec: str = "libx264", crf: int = 18, preset: str = "superfast") -> None:
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
            fd, self.partial = tempfile.mkstemp(prefix=f".{Path(self.outfile).stem}.", suffix=".partial.mp4",
                                                dir=out_dir)
        except OSError as err:
            raise LipSyncError(f"Cannot write in the folder '{out_dir}' ({err.strerror}). Choose an output path in "
                               "a folder you can write to.") from None
        os.close(fd)
        rate = fps_fraction(fps)
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{self.even_width}x{self.even_height}",
               "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "-"]
        if audio_path:
            cmd += ["-i", audio_path, "-map", "0:v:0", "-map", "1:a:0"]
        if video_codec == "h264_nvenc":
            cmd += ["-c:v", "h264_nvenc", "-preset", "p4", "-cq", str(crf + 1)]
        else:
            cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf)]
        cmd += ["-pix_fmt", "yuv420p", "-r", f"{rate.numerator}/{rate.denominator}"]
        if audio_path:
            cmd += ["-c:a", "aac", "-b:a", "192k"]
        cmd += ["-movflags", "+faststart", "-f", "mp4", self.partial]
        self._stderr = tempfile.TemporaryFile()
        # Its own session: a Ctrl-C in the terminal must not make ffmpeg finish the partial file on its own;
        # the writer decides (complete: moved into place; interrupted: killed and deleted).
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._stderr, start_new_session=True)
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
            raise LipSyncError(f"The video encoder stopped: {_last_error_line(self._stderr)}")
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
            self._proc.wait()
            if not self._proc.stdin.closed:
                try:
                    self._proc.stdin.close()
                except OSError:
                    pass
            self._stderr.close()
            if os.path.exists(self.partial):
                os.remove(self.partial)

    def _finish(self) -> None:
        self._stop_feeder()
        if self._feed_error is not None:
            self._proc.wait()
            raise LipSyncError(f"The video encoder stopped: {_last_error_line(self._stderr)}")
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if self._proc.wait() != 0:
            raise LipSyncError(f"Encoding the output failed: {_last_error_line(self._stderr)}")
        if self.frames_written == 0:
            raise LipSyncError("No frame was produced, so no video was written.")
        os.chmod(self.partial, 0o644)  # mkstemp makes it private; the result is an ordinary file
        os.replace(self.partial, self.outfile)


def browser_copy(info: MediaInfo, outfile: str, audio_path: str | None = None, seconds: float = 0.0) -> str:
    """An H.264/AAC MP4 of the original face input that any browser plays, for side-by-side viewing.

    A video keeps its own sound; a photo becomes a still clip of `seconds` over `audio_path`.
    A video that browsers already play (H.264 4:2:0 + AAC in a .mp4) is returned as it is:
    re-encoding a minute of 1080p only to show it would cost more than the lip sync.
    """
    if info.plays_in_browsers and Path(info.path).suffix.lower() in (".mp4", ".m4v"):
        return info.path
    even = "pad=ceil(iw/2)*2:ceil(ih/2)*2"
    if info.is_image:
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-loop", "1", "-framerate", "25", "-i", info.path]
        if audio_path:
            cmd += ["-i", audio_path, "-map", "0:v", "-map", "1:a:0", "-c:a", "aac"]
        cmd += ["-t", f"{max(seconds, 0.04):.3f}", "-vf", even, "-c:v", "libx264", "-tune", "stillimage"]
    else:
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-v", "error", "-i", info.path, "-map", "0:v:0", "-map", "0:a:0?",
               "-vf", even, "-c:v", "libx264", "-c:a", "aac"]
    cmd += ["-preset", "superfast", "-crf", "20", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4"]
    partial = outfile + ".partial"
    proc = subprocess.run(cmd + [partial], capture_output=True)
    if proc.returncode != 0:
        if os.path.exists(partial):
            os.remove(partial)
        raise LipSyncError(f"Could not convert '{info.path}' for display: "
                           f"{proc.stderr.decode(errors='replace').strip()[-200:]}")
    os.replace(partial, outfile)
    return outfile
