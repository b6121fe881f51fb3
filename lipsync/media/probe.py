"""What an input file is, read before any of it is decoded: kind, frame size, rate, duration, sound.

imageio-ffmpeg ships no ffprobe, so the stream facts come from the header summary that
`ffmpeg -i` prints. That text is meant for people, so what matters is cross-checked:
the frame size and rate against OpenCV's reading of the same header, photos by their
first bytes and their own header (PIL reads a PNG's or JPEG's size without decoding
it), and the audio decoder is always told the channel count and rate it must deliver,
so a misread layout can never garble the samples.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import LipSyncError
from . import ffmpeg

IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),  # PNG
    (0, b"BM"),  # BMP
    (0, b"II*\x00"),  # TIFF, little-endian
    (0, b"MM\x00*"),  # TIFF, big-endian
    (8, b"WEBP"),  # WebP (RIFF....WEBP)
)
MIN_FPS, MAX_FPS = 1.0, 240.0  # frame rates outside this range are a damaged or odd file, not a video


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
    audio_channels: int = 0  # 0 when the layout could not be read: the decoder then downmixes to mono
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


def check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise LipSyncError(f"File not found: '{path}'. Check the path and try again.")
    if os.path.isdir(path):
        raise LipSyncError(f"'{path}' is a folder, not a file. Give the path of a video, photo or audio file.")
    if os.path.getsize(path) == 0:
        raise LipSyncError(f"'{path}' is empty (0 bytes). The upload or copy did not finish; use the original file.")


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of a photo as it will be shown, from its header alone (nothing is decoded)."""
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # PIL only reads headers here (OpenCV decodes): our own size limit applies
    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            width, height = image.size
            # EXIF orientation lives in the header of a JPEG, TIFF or WebP; PIL would decode a PNG to look for it
            orientation = image.getexif().get(0x0112, 1) if image.format in ("JPEG", "MPO", "TIFF", "WEBP") else 1
    except Exception:  # PIL cannot read the header: a damaged file
        raise LipSyncError(f"'{path}' looks like an image but cannot be read (damaged or truncated). Save it again "
                           "as JPG or PNG and retry.") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


_CONTAINER = re.compile(r"Input #0, ([\w,]+), from")
_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: (?P<rest>.*)")
_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Audio: (?P<rest>.*)")
_SIZE = re.compile(r"(?<![\dx])(\d{1,6})x(\d{1,6})(?![\dx])")
_FPS = re.compile(r"([\d.]+)(k?) fps")
_TBR = re.compile(r"([\d.]+)(k?) tbr")
_RATE = re.compile(r"(\d+) Hz, ([^,]+)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
# ffmpeg's channel layout names (libavutil/channel_layout.c) and their channel counts
_LAYOUTS = {"mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4, "quad(side)": 4,
            "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6, "6.0": 6, "6.0(front)": 6,
            "hexagonal": 6, "3.1.2": 6, "6.1": 7, "6.1(back)": 7, "6.1(front)": 7, "7.0": 7, "7.0(front)": 7,
            "7.1": 8, "7.1(wide)": 8, "7.1(wide-side)": 8, "octagonal": 8, "5.1.2": 8, "cube": 8, "downmix": 2,
            "hexadecagonal": 16, "22.2": 24}


def _playlist_error(path: str) -> LipSyncError:
    return LipSyncError(f"'{path}' is a playlist, manifest or other container that refers to other files (HLS, "
                        "DASH, concat, …), which is not accepted. Give the media file itself (MP4, MOV, MKV, WebM, "
                        "WAV, MP3, …).")


def _snap_fps(value: float) -> float:
    """ffmpeg prints rates rounded to 2 decimals; recover the NTSC rationals (30000/1001, …)."""
    for base in (24, 30, 48, 60, 120):
        ntsc = base * 1000 / 1001
        if abs(value - ntsc) < 0.006:
            return ntsc
    return value


def _channels(layout: str) -> int:
    """The channel count of a layout as ffmpeg prints it ('stereo', '5.1(side)', '3 channels'), 0 if unknown."""
    layout = layout.strip()
    counted = re.fullmatch(r"(\d+) channels.*", layout)
    return int(counted.group(1)) if counted else _LAYOUTS.get(layout, 0)


def _opencv_header(path: str) -> tuple[float, int, int]:
    """(fps, width, height) as OpenCV reads them: the fps is the very number the official inference.py uses."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return 0.0, 0, 0
        return (float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def _parse_video(rest: str, info: dict) -> None:
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


def _parse_audio(rest: str, info: dict) -> None:
    info["audio_codec"] = rest.split(" ", 1)[0].rstrip(",")
    rate = _RATE.search(rest)
    info.update(has_audio=True, audio_rate=int(rate.group(1)) if rate else 0,
                audio_channels=_channels(rate.group(2)) if rate else 0)


def _parse(text: str, path: str) -> dict:
    info: dict = {"path": path}
    container = _CONTAINER.search(text)
    if container:
        info["container"] = container.group(1)
    for line in text.splitlines():
        video = _VIDEO_STREAM.search(line)
        if video and "attached pic" not in line and not info.get("has_video"):
            _parse_video(video.group("rest"), info)
        audio = _AUDIO_STREAM.search(line)
        if audio and not info.get("has_audio"):
            _parse_audio(audio.group("rest"), info)
        rotation = _ROTATION.search(line)
        if rotation and info.get("has_video") and "rotation" not in info:
            info["rotation"] = int(round(float(rotation.group(1))))
        duration = _DURATION.search(line)
        if duration:
            h, m, s = duration.groups()
            info["duration"] = int(h) * 3600 + int(m) * 60 + float(s)
    if info.get("rotation", 0) % 180 != 0:
        info["width"], info["height"] = info["height"], info["width"]
    return info


def _cross_check_video(info: dict, path: str) -> None:
    """Frame size and rate against OpenCV's reading of the header: a misread size would skew every frame."""
    fps, width, height = _opencv_header(path)
    if width and height and (width, height) != (info.get("width"), info.get("height")):
        raise LipSyncError(f"The frame size of '{path}' could not be read reliably (ffmpeg says {info.get('width')}x"
                           f"{info.get('height')}, OpenCV {width}x{height}). Re-export it as an MP4 (H.264) and try "
                           "again.")
    # The official inference.py times the mel windows by OpenCV's number; for variable-frame-rate clips
    # it can differ from the rate ffmpeg prints, so it wins whenever it is plausible.
    if MIN_FPS <= fps <= MAX_FPS:
        info["fps"] = fps
    if not MIN_FPS <= info.get("fps", 0) <= MAX_FPS:
        raise LipSyncError(f"'{path}' has no usable frame rate ({info.get('fps', 0):g} fps). Re-export it as an MP4 "
                           "at a constant frame rate (e.g. 25 or 30 fps) and try again.")


PLAYLIST_MARKERS = (b"#EXTM3U", b"ffconcat", b"<MPD", b"<?xml", b"[playlist]", b"<smil", b"#EXTINF")


def is_playlist(path: str) -> bool:
    """Whether the file is a playlist or manifest (HLS, DASH, concat, …), judged by its first bytes."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip()
    return any(marker.lower() in head.lower() for marker in PLAYLIST_MARKERS)


def probe_media(path: str) -> MediaInfo:
    """The facts of a video, photo or audio file; nothing is decoded (a photo's header only is read)."""
    check_readable(path)
    if is_playlist(path):
        raise _playlist_error(path)
    if is_image_file(path):
        width, height = image_size(path)
        return MediaInfo(path=path, is_image=True, has_video=True, width=width, height=height)
    proc = ffmpeg.run(ffmpeg.command(*ffmpeg.input_args(path)), f"Reading '{path}'", timeout=60)
    text = proc.stderr.decode(errors="replace")
    if "not on whitelist" in text:
        raise _playlist_error(path)
    if "Invalid data found" in text or "Stream #" not in text:
        raise LipSyncError(
            f"'{path}' is not a video, photo or audio file that can be read (damaged, truncated or of an "
            "unknown format). Re-export it as MP4, JPG/PNG or WAV/MP3 and try again.")
    info = _parse(text, path)
    if info.get("has_video"):
        _cross_check_video(info, path)
    return MediaInfo(**info)
