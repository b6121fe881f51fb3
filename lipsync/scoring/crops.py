"""SyncNet's 224x224 crops as the official evaluation makes them (run_pipeline.py's crop_video), or the whole frame.

A face track's boxes (x1, y1, x2, y2, one per 25 fps frame) become, per frame:
- a half-size s = max(width, height) / 2 and a centre (x, y), each median-filtered over 13
  frames with zeros beyond the ends (scipy.signal.medfilt: the first and last six frames'
  values are pulled towards zero, as in the official);
- with crop_scale 0.4: the frame padded by int(s * 1.8) pixels of grey 110 on every side,
  then rows int(y - s) .. int(y + 1.8 s) and columns int(x - 1.4 s) .. int(x + 1.4 s) of it
  (from the chin well below the box to the brow, about 2.8 s on each side: the mouth sits
  in the lower middle), numpy's slice rules included;
- resized to 224x224 with cv2's default (bilinear) interpolation.
The padded frame is never built: only the crop's own grey canvas is, and the part of the
frame inside it is copied in, which gives the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import LipSyncError
from .distances import medfilt
from .layout import LIP_SIZE

CROP_SCALE = 0.4  # run_pipeline.py's --crop_scale default
SMOOTHING = 13  # frames of the median filter over the boxes' sizes and centres
PAD_VALUE = 110  # the grey the official pads frames with


@dataclass(frozen=True, eq=False)
class CropTrack:
    """Per frame: the smoothed half-size and centre of the face (frame pixels)."""

    size: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.size)


def smooth_track(boxes: np.ndarray) -> CropTrack:
    """(n, 4) boxes x1 y1 x2 y2 -> their median-filtered half-sizes and centres (crop_video's `dets`)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
        raise ValueError("boxes must be a non-empty (n, 4) array")
    size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    return CropTrack(medfilt(size, SMOOTHING), medfilt((boxes[:, 0] + boxes[:, 2]) / 2, SMOOTHING),
                     medfilt((boxes[:, 1] + boxes[:, 3]) / 2, SMOOTHING))


def _span(start: int, stop: int, padded: int) -> tuple[int, int]:
    """The rows (or columns) numpy's frame[start:stop] takes from an axis of `padded` elements (negative starts count
    from the end, stops are clamped), as the official's slice of its padded frame does."""
    first, last, _ = slice(start, stop).indices(padded)
    return first, max(first, last)


def crop_face(frame: np.ndarray, size: float, x: float, y: float, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """The official 224x224 crop of one BGR frame around a face of half-size `size` centred at (x, y)."""
    height, width = frame.shape[:2]
    pad = int(size * (1 + 2 * crop_scale))
    my, mx = y + pad, x + pad  # the centre in the padded frame
    rows = _span(int(my - size), int(my + size * (1 + 2 * crop_scale)), height + 2 * pad)
    cols = _span(int(mx - size * (1 + crop_scale)), int(mx + size * (1 + crop_scale)), width + 2 * pad)
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        raise LipSyncError("The face box is empty on some frame (a clip of a few frames, or a face of 0 pixels), so "
                           "it cannot be cropped for scoring; score the whole frame instead (crop='none').")
    canvas = np.full((rows[1] - rows[0], cols[1] - cols[0], 3), PAD_VALUE, np.uint8)
    # the frame occupies rows pad .. pad + height and columns pad .. pad + width of the padded frame
    top, bottom = max(rows[0], pad), min(rows[1], pad + height)
    left, right = max(cols[0], pad), min(cols[1], pad + width)
    if bottom > top and right > left:
        canvas[top - rows[0]:bottom - rows[0], left - cols[0]:right - cols[0]] = \
            frame[top - pad:bottom - pad, left - pad:right - pad]
    return cv2.resize(canvas, (LIP_SIZE, LIP_SIZE))


def crop_whole(frame: np.ndarray) -> np.ndarray:
    """crop='none': the whole frame resized to 224x224 (for clips that are already face crops)."""
    return cv2.resize(frame, (LIP_SIZE, LIP_SIZE))
