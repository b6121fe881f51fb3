"""What SyncNet's evaluation reads, from any clip: 16 kHz int16 samples, frames at 25 fps, one face box per frame.

- Sound: ffmpeg's own downmix and resampler to 16 kHz mono 16-bit, the command the official
  pipeline runs (`-ac 1 -ar 16000 -acodec pcm_s16le`), read from its stdout. The official takes
  it from an AVI copy whose sound went through MP3, which delays it by the encoder's priming
  (measured with ffmpeg 9: 25 ms for 44.1/48 kHz sound, 69 ms for 16 kHz): that bias is not
  reproduced, the sound is decoded from the file itself.
- Frames: decoded at exactly 25 fps by ffmpeg's `-r 25`, the official conversion, so frames
  are repeated or dropped by time exactly as there (lipsync.media.video.read_frames), streamed.
- Boxes: the project's own detector or tracker (lipsync.faces.detectors.get_detector, run through a
  clip by lipsync.faces.detection.ClipDetection) on those frames, in one pass that keeps only the
  boxes. A frame without a face takes a box interpolated between the nearest frames that
  have one (the official interpolates inside a track the same way), or the nearest one's
  before the first and after the last face; the official would cut the track there instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..errors import LipSyncError
from ..faces.detection import AnyDetector, ClipDetection
from ..media import ffmpeg
from ..media.probe import MediaInfo
from ..media.video import read_frames
from ..results import SCORE_FPS
from .mfcc import SAMPLE_RATE

CHUNK_BYTES = 1 << 20

Progress = Callable[[str, int, int], None]


def read_pcm16(path: str) -> np.ndarray:
    """The sound of `path` as 16 kHz mono int16 samples, made by ffmpeg as the official pipeline makes them."""
    cmd = ffmpeg.command("-v", "error", *ffmpeg.input_args(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar",
                         str(SAMPLE_RATE), "-acodec", "pcm_s16le", "-f", "s16le", "-")
    data = bytearray()
    for piece in ffmpeg.stdout_pieces(cmd, CHUNK_BYTES, lambda why: LipSyncError(
            f"Could not decode the sound of '{path}' ({why}). Convert it to WAV or MP4 and try again.")):
        data += piece
    del data[len(data) - len(data) % 2:]
    return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)


def frames_at_25(info: MediaInfo) -> Iterator[np.ndarray]:
    """The clip's frames at 25 fps, BGR uint8, streamed."""
    return read_frames(info, rate=SCORE_FPS)


def expected_frames(info: MediaInfo) -> int:
    """About how many frames the clip has at 25 fps (for progress)."""
    return max(1, round(info.duration * SCORE_FPS))


def fill_gaps(found: list[np.ndarray | None]) -> tuple[np.ndarray, int]:
    """(n, 4) boxes with every missing one filled (linear between neighbours, held at the ends), and the number
    that were missing. Raises when no frame has a face."""
    have = np.array([i for i, box in enumerate(found) if box is not None])
    if len(have) == 0:
        raise LipSyncError("No face was found in the clip, so there are no lips to score. Check that the video shows "
                           "a face, or score the whole frame (crop='none') if it is already a face crop.")
    known = np.array([found[i] for i in have], dtype=np.float64)
    frames = np.arange(len(found))
    boxes = np.stack([np.interp(frames, have, known[:, k]) for k in range(4)], axis=1)
    return boxes, len(found) - len(have)


def face_boxes(info: MediaInfo, detector: AnyDetector, progress: Progress | None = None) -> tuple[np.ndarray, int]:
    """One face box per 25 fps frame (x1, y1, x2, y2, frame pixels) and how many frames had none of their own."""
    progress = progress or (lambda stage, done, total: None)
    clip = ClipDetection(detector)
    total = expected_frames(info)
    batch: list[np.ndarray] = []
    found: list[np.ndarray | None] = []

    def detect() -> None:
        found.extend(None if box is None else np.asarray(box, dtype=np.float64) for box in clip(batch))
        batch.clear()
        progress("Finding the face", len(found), max(total, len(found)))

    for frame in frames_at_25(info):
        batch.append(frame)
        if len(batch) >= max(1, detector.batch_size):
            detect()
    if batch:
        detect()
    if not found:
        raise LipSyncError(f"No frame could be decoded from '{info.path}'. Re-export it and try again.")
    return fill_gaps(found)
