"""`BoxMap`: where S3FD would put a cheap detector's face box (lipsync.faces.detectors, lipsync.faces.blazeface).

Its own module so that the detectors can share it without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence


class BoxMap(NamedTuple):
    """Where S3FD would put a detector's box: each edge = the box's centre + a coefficient x its size.

    x1' = cx + x1 w, x2' = cx + x2 w, y1' = cy + y1 h, y2' = cy + y2 h, for a raw box of
    centre (cx, cy) and size (w, h). Linear, so it commutes with the official 5-frame
    smoothing and can be fitted by least squares (bench/fit_box_map.py); invertible, so
    a tracker can get its own box back from a mapped one.
    """

    x1: float
    x2: float
    y1: float
    y2: float

    def apply(self, raw: Sequence[float]) -> tuple[float, float, float, float]:
        cx, cy, w, h = (raw[0] + raw[2]) / 2, (raw[1] + raw[3]) / 2, raw[2] - raw[0], raw[3] - raw[1]
        return cx + self.x1 * w, cy + self.y1 * h, cx + self.x2 * w, cy + self.y2 * h

    def invert(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        w, h = (box[2] - box[0]) / (self.x2 - self.x1), (box[3] - box[1]) / (self.y2 - self.y1)
        cx, cy = box[0] - self.x1 * w, box[1] - self.y1 * h
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


IDENTITY_MAP = BoxMap(-0.5, 0.5, -0.5, 0.5)  # the raw box itself (what the fit starts from)
