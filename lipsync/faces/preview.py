"""The face-box preview: the first frame with the detected face and the padded crop drawn on it.

With a detector that can follow a chosen face (a tracker: BlazeFace), every face on the
frame is found and drawn: the one a job will follow in colour (the most prominent, or the one
at the face point), the others in grey, so a click can pick another speaker.

Lets a person tune the pads in seconds: detection runs once per face file and setting,
then each change of the pads only redraws the rectangles. What is kept between
redraws is a small copy of the frame (at most PREVIEW_SIDE pixels a side), never the
full decoded frame, so a server holding many visitors' previews stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import cv2
import numpy as np

from ..geometry import Box
from ..media import limits
from ..media.probe import probe_media
from ..media.source import FaceSource
from ..options import Options
from .detection import ClipDetection, Detection, FaceTracker, ScoredBox, choose_face
from .detectors import get_detector

PREVIEW_SIDE = 640  # px: the longer side of the kept copy
DETECTED_COLOUR = (255, 200, 0)  # BGR: the detector's own box
CROP_COLOUR = (0, 220, 0)  # BGR: what the model will see (box + pads)
OTHER_COLOUR = (160, 160, 160)  # BGR: faces found but not followed
POINT_COLOUR = (0, 0, 255)  # BGR: the face point


@dataclass(frozen=True)
class FacePreview:
    """The first frame (small copy), the face found on it, and by which detector."""

    image: np.ndarray  # BGR, shrunk to PREVIEW_SIDE
    scale: float  # preview pixels per frame pixel
    frame_width: int
    frame_height: int
    detection: Detection  # in frame pixels
    detector: str
    detector_reason: str
    faces: tuple[Box, ...] = ()  # every face found (with a detector that can follow a chosen one), frame pixels
    scores: tuple[float, ...] = ()
    can_pick: bool = False  # whether a face point can choose among `faces`

    def picked(self, point: Optional[tuple[int, int]]) -> Detection:
        """The face a job with this face point follows (None: the point is on no face, or there is no face)."""
        if not self.can_pick:
            return self.detection
        index = choose_face([ScoredBox(b, s) for b, s in zip(self.faces, self.scores)], point)
        return None if index is None else self.faces[index]

    def to_frame(self, x: float, y: float) -> tuple[int, int]:
        """A point on the shown (shrunk) image in frame pixels: what --face_point takes."""
        return (min(self.frame_width - 1, max(0, int(x / self.scale))),
                min(self.frame_height - 1, max(0, int(y / self.scale))))


def make_preview(face: str, options: Options, device: str = "cpu") -> FacePreview:
    """Probe, check the limits (size, rate, work, time), decode the first frame and detect its faces (on `device`)."""
    info = probe_media(face)
    limits.check_face(info, options, face)
    limits.check_work(info, options, 1, face)
    deadline = limits.with_deadline(lambda *args: None, options.time_limit, "The face-box preview",
                                    "Use a smaller video (the resize option) or a fixed face box")
    frame = FaceSource(info, options.with_changes(static=True)).first()
    deadline("Decoding", 1, 1)
    height, width = frame.shape[:2]
    choice = get_detector(options.detector, device, options.face_det_batch_size, det_max_side=options.det_max_side)
    detection, faces, scores = None, (), ()
    can_pick = isinstance(choice.detector, FaceTracker)
    if options.fixed_box is None and can_pick:
        found = choice.detector.faces(frame)
        faces, scores = tuple(f.box for f in found), tuple(f.score for f in found)
    elif options.fixed_box is None:
        detection = choice.detector.detect([frame])[0]
        faces, scores = ((detection,), (1.0,)) if detection is not None else ((), ())
    deadline("Detecting faces", 1, 1)
    scale = min(1.0, PREVIEW_SIDE / max(height, width))
    small = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else frame.copy()
    preview = FacePreview(small, scale, width, height, detection, choice.name, choice.reason, faces, scores,
                          can_pick)
    return replace(preview, detection=preview.picked(None)) if can_pick else preview  # the most prominent face


def draw_boxes(preview: FacePreview, options: Options) -> np.ndarray:
    """An RGB copy of the preview with the followed face (thin), its padded crop (thick), the other faces
    (grey) and the face point (a red cross) drawn."""
    canvas = preview.image.copy()
    thickness = max(2, round(max(canvas.shape[:2]) / 300))
    fixed = options.fixed_box
    if fixed is not None:
        limits.check_box(fixed, preview.frame_height, preview.frame_width)
        _rectangle(canvas, fixed, preview.scale, CROP_COLOUR, thickness)
        return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    if options.point is not None:
        limits.check_point(options.point, preview.frame_height, preview.frame_width)
    picked = preview.picked(options.point)
    for face in preview.faces:
        if face != picked:
            _rectangle(canvas, face, preview.scale, OTHER_COLOUR, max(1, thickness // 2))
    if picked is not None:  # the padded crop first, so the detector's thinner box stays visible on top
        padded = picked.padded(options.pads, preview.frame_height, preview.frame_width)
        _rectangle(canvas, padded, preview.scale, CROP_COLOUR, thickness)
        _rectangle(canvas, picked, preview.scale, DETECTED_COLOUR, max(1, thickness // 2))
    if options.point is not None:
        x, y = (round(v * preview.scale) for v in options.point)
        cv2.drawMarker(canvas, (x, y), POINT_COLOUR, cv2.MARKER_CROSS, 6 * thickness, thickness)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)


def _rectangle(canvas: np.ndarray, box: Box, scale: float, colour: tuple[int, int, int], thickness: int) -> None:
    small = Box.of(box.scaled(scale))
    cv2.rectangle(canvas, (small.x1, small.y1), (small.x2 - 1, small.y2 - 1), colour, thickness)


SCAN_SAMPLES = 120  # frames looked at when a whole clip is scanned for faces before a job


def scan_faces(face: str, options: Options, device: str = "cpu", samples: int = SCAN_SAMPLES) -> list[bool]:
    """Whether a face is found, at up to `samples` moments evenly spread over the clip: the face timeline
    before a job, so a person sees where the sync would be missing and can change pads, crop or box first.
    Within the job's limits: the work of the frames it looks at (checked first), and the time (checked at each)."""
    from ..media.video import read_frames

    info = probe_media(face)
    limits.check_face(info, options, face)
    if options.fixed_box is not None:
        return [True]
    looks = 1 if info.is_image else max(1, min(samples, round(info.duration * info.fps) or samples))
    limits.check_work(info, options, looks, face)
    deadline = limits.with_deadline(lambda *args: None, options.time_limit, "Checking the faces through the clip",
                                    "Use a smaller video (the resize option) or a fixed face box")
    source = FaceSource(info, options.with_changes(static=info.is_image))
    choice = get_detector(options.detector, device, options.face_det_batch_size, det_max_side=options.det_max_side)
    if info.is_image:
        frames = [source.first()]
    else:
        rate = min(info.fps, samples / max(info.duration, 0.04))
        frames = (source.prepare(f) for f in read_frames(info, max_frames=samples, sample_fps=rate))
    clip = ClipDetection(choice.detector, consecutive=False)  # the looks are far apart: no motion between them
    found: list[bool] = []
    for frame in frames:  # one at a time, each starting from the last face, within the time limit
        deadline("Checking faces", len(found), samples)
        found.append(clip([frame])[0] is not None)
    return found
