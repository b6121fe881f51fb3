"""One frame with the detected face box and the padded crop drawn on it.

Lets a person tune --pads in seconds: detection runs once per face file, then each
change of the pads only redraws the rectangles.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from .faces import Detection, FaceDetector, pad_detection
from .pipeline import FaceSource, Options
from .video import probe_media

DETECTED_COLOUR = (255, 200, 0)  # BGR: the detector's own box
CROP_COLOUR = (0, 220, 0)  # BGR: what the model will see (box + pads)


def first_frame(face: str, options: Options) -> np.ndarray:
    """The first prepared frame (after resize, rotate and crop) of a video or photo, BGR."""
    return FaceSource(probe_media(face), replace(options, static=True)).first()


def detect_first_frame(face: str, options: Options, detector: FaceDetector) -> tuple[np.ndarray, Detection]:
    frame = first_frame(face, options)
    return frame, detector.detect([frame])[0]


def draw_boxes(frame: np.ndarray, detection: Detection, options: Options) -> np.ndarray:
    """An RGB copy of the frame with the detection (thin) and the padded crop (thick) drawn."""
    canvas = frame.copy()
    thickness = max(2, round(max(frame.shape[:2]) / 300))
    height, width = frame.shape[:2]
    if options.fixed_box:
        y1, y2, x1, x2 = options.box
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), CROP_COLOUR, thickness)
    elif detection is not None:  # the padded crop first, so the detector's thinner box stays visible on top
        x1, y1, x2, y2 = pad_detection(detection, options.pads, height, width)
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), CROP_COLOUR, thickness)
        cv2.rectangle(canvas, detection[:2], (detection[2] - 1, detection[3] - 1), DETECTED_COLOUR, max(1, thickness // 2))
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
