"""A live avatar, prepared once: its frames, their face boxes and their 96 px crops, in a loop without a jump.

A live session (lipsync.live.session) must spend its time on the one thing that depends on the
audio, the generator. Everything else is done here, before the session starts: the
photo or short clip is decoded and prepared (resize, rotate, crop options), its faces
are found with the job's detector and smoothing, and each frame's crop is cut and
resized to the model's size. A clip is played forwards then backwards (0, 1, …, n-1,
n-2, …, 1, 0, …), so the loop has no jump where it wraps. An avatar with no face is
refused here, with the same sentence a job gives, before any session exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import LipSyncError
from ..faces.crops import NO_FACE_MESSAGE, FaceDetection
from ..faces.detectors import FaceDetector
from ..geometry import IMG_SIZE, Box
from ..media import limits
from ..media.probe import probe_media
from ..media.source import FaceSource
from ..options import Options
from ..runtime.devices import frame_budget_bytes
from ..runtime.timings import StageTimes

AVATAR_MAX_SECONDS = 10.0  # a longer clip is cut: a live avatar loops, a few seconds of it are enough


@dataclass(frozen=True)
class Avatar:
    """The prepared frames of a photo or short clip, each with its face box and its crop at the model's size."""

    frames: tuple[np.ndarray, ...]  # BGR uint8, prepared (resize, rotate, crop), in clip order
    boxes: tuple[Box | None, ...]  # the padded, smoothed crop of each frame (None: no face there)
    faces: np.ndarray  # (n, 96, 96, 3) uint8: each crop resized for the model (zeros where there is no face)
    fps: float  # the clip's own rate (a photo: any, it has one frame)
    source: str  # the file it was made from
    detector: str  # what found the faces ("fixed box" with one)
    cut: bool = False  # the clip was longer than an avatar may be and only its start is used

    @property
    def width(self) -> int:
        return self.frames[0].shape[1]

    @property
    def height(self) -> int:
        return self.frames[0].shape[0]

    @property
    def loop_length(self) -> int:
        """Frames in one forward-and-back loop (1 for a photo)."""
        return max(1, 2 * len(self.frames) - 2)

    def index_at(self, seconds: float) -> int:
        """The clip frame shown `seconds` into a session: the forward-and-back loop at the clip's own rate."""
        n = len(self.frames)
        if n == 1:
            return 0
        step = int(round(seconds * self.fps)) % self.loop_length
        return step if step < n else self.loop_length - step


def prepare_avatar(path: str, options: Options, detector: FaceDetector | None, detector_name: str = "") -> Avatar:
    """Decode, detect and crop `path` once, for a live session; refuses a file without a face (LipSyncError)."""
    info = probe_media(path)
    limits.check_face(info, options, path)
    timings = StageTimes()
    source = FaceSource(info, options, timings)
    frame_bytes = source.width * source.height * 3
    wanted = 1 if source.static else max(1, int(round(AVATAR_MAX_SECONDS * info.fps)))
    limit = max(1, min(wanted, 2 * frame_budget_bytes() // frame_bytes))  # held for the whole session: twice a job's
    frames = tuple(source.head(limit))
    cut = not source.static and len(frames) == limit and source.frame_estimate > limit
    fixed = options.fixed_box
    if fixed is not None:
        limits.check_box(fixed, source.height, source.width)
        boxes: tuple[Box | None, ...] = (fixed,) * len(frames)
        detector_name = "fixed box"
    else:
        if detector is None:
            raise ValueError("a detector is needed unless the face box is fixed")
        detection = FaceDetection(source, len(frames), options, detector, timings).start()
        try:
            boxes = tuple(detection.crop(i, lambda stage, done, total: None) for i in range(len(frames)))
        finally:
            detection.stop()
        detector_name = detector_name or detector.name
    if all(box is None for box in boxes):
        raise LipSyncError(NO_FACE_MESSAGE)
    faces = np.zeros((len(frames), IMG_SIZE, IMG_SIZE, 3), np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        if box is not None:
            faces[i] = cv2.resize(frame[box.slices()], (IMG_SIZE, IMG_SIZE))
    return Avatar(frames=frames, boxes=boxes, faces=faces, fps=options.fps if source.static else info.fps,
                  source=path, detector=detector_name, cut=cut)
