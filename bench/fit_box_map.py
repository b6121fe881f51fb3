"""Fit the map from a cheap detector's box to where S3FD puts its box, on the calibration clip.

The target: the official Wav2Lip paste boxes of ../shared/calibration (S3FD, pads 0 10 0 0,
5-frame smoothing) minus the pads. The map (lipsync.faces.boxmap.BoxMap) puts each edge at the raw
box's centre + a coefficient x its size; the official smoothing is linear, so the fit is a
least-squares fit of smoothed centres and sizes against the smoothed official boxes, one
coefficient per edge: a = sum((t - S c) S s) / sum((S s)^2). The constants in
lipsync/follow.py (BOX_MAP) and lipsync/faces.py (HAAR_MAP) come from here.

    .venv/bin/python bench/fit_box_map.py [--detector blazeface|haar]

The calibration data is read from ../shared/calibration beside the checkout and never copied
into the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]  # the package, and the test helpers (media)
import lipsync  # noqa: F401  (first: OMP_WAIT_POLICY set before anything loads torch)

# isort: split
import numpy as np
from media import read_all_frames

CALIBRATION = ROOT.parent / "shared" / "calibration"
PADS = (0, 10, 0, 0)  # the official default, with which the official boxes were made

from lipsync.faces.boxmap import IDENTITY_MAP, BoxMap
from lipsync.faces.crops import crops_from_detections
from lipsync.faces.detection import ClipDetection
from lipsync.faces.detectors import HaarDetector
from lipsync.geometry import Box

Raw = Optional[Sequence[float]]  # (x1, y1, x2, y2) or None


def calibration_frames() -> list[np.ndarray]:
    if not (CALIBRATION / "talking_head.mp4").exists():
        sys.exit(f"The calibration data is not at {CALIBRATION} (it lives beside the checkout).")
    return read_all_frames(CALIBRATION / "talking_head.mp4")


def official_boxes(key: str = "default_pads") -> list[tuple[int, int, int, int]]:
    """The official paste boxes as (x1, y1, x2, y2), one per output frame (225)."""
    rows = json.loads((CALIBRATION / "talking_head_official_boxes.json").read_text())[key]
    return [(x1, y1, x2, y2) for (y1, y2, x1, x2) in rows]


def official_unpadded() -> list[tuple[int, int, int, int]]:
    top, bottom, left, right = PADS
    return [(x1 + left, y1 + top, x2 - right, y2 - bottom) for (x1, y1, x2, y2) in official_boxes()]


def raw_detector(name: str):
    """The integrated detector with the identity map: its own boxes, before any fitted map."""
    if name == "haar":
        detector = HaarDetector()
        detector.BOX_MAP = IDENTITY_MAP
        return detector
    from lipsync.faces.blazeface_tracker import BlazeFaceTracker

    return BlazeFaceTracker(IDENTITY_MAP)


def raw_boxes(detector, frames: Sequence[np.ndarray]) -> list[Raw]:
    """Detections of a whole clip in batches of 8 through one ClipDetection, as the face track feeds them."""
    clip = ClipDetection(detector)
    return [box for start in range(0, len(frames), 8) for box in clip(frames[start:start + 8])]


def _smooth_float(a: np.ndarray, window: int = 5) -> np.ndarray:
    a = np.asarray(a, np.float64).copy()
    for i in range(len(a)):
        a[i] = (a[len(a) - window:] if i + window > len(a) else a[i:i + window]).mean(axis=0)
    return a


def _filled(raw: Sequence[Raw]) -> np.ndarray:
    """Raw boxes with gaps linearly interpolated (for the fit only)."""
    idx = [i for i, b in enumerate(raw) if b is not None]
    arr = np.array([raw[i] for i in idx], np.float64)
    return np.stack([np.interp(np.arange(len(raw)), idx, arr[:, k]) for k in range(4)], 1)


def fit_map(raw: Sequence[Raw], target: Sequence[Sequence[float]]) -> BoxMap:
    r = _filled(raw)
    centre_size = np.stack([(r[:, 0] + r[:, 2]) / 2, (r[:, 1] + r[:, 3]) / 2, r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]], 1)
    s = _smooth_float(centre_size)[:len(target)]
    t = np.asarray(target, np.float64)
    coef = {}
    for edge, col, c, size in (("x1", 0, 0, 2), ("x2", 2, 0, 2), ("y1", 1, 1, 3), ("y2", 3, 1, 3)):
        coef[edge] = float(((t[:, col] - s[:, c]) * s[:, size]).sum() / (s[:, size] ** 2).sum())
    return BoxMap(**coef)


def final_boxes(raw: Sequence[Raw], box_map: BoxMap, height: int, width: int) -> list[Raw]:
    """Mapped, padded and smoothed exactly as a job does it (lipsync.faces.crops)."""
    mapped = [None if b is None else Box.of(box_map.apply(b)).clipped(height, width) for b in raw]
    return [None if c is None else tuple(c) for c in crops_from_detections(mapped, PADS, height, width)]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def compare(boxes: Sequence[Raw], ref: Sequence[Sequence[float]]):
    """Mean IoU over the frames of `ref` (a missing box scores 0), and the mean signed and absolute edge
    offsets (top, bottom, left, right; px, positive = further down or right than the reference)."""
    ious, offsets = [], []
    for b, r in zip(boxes, ref):
        ious.append(0.0 if b is None else iou(b, r))
        if b is not None:
            offsets.append((b[1] - r[1], b[3] - r[3], b[0] - r[0], b[2] - r[2]))
    off = np.array(offsets) if offsets else np.zeros((1, 4))
    return float(np.mean(ious)), off.mean(0), np.abs(off).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", choices=("blazeface", "haar"), default="blazeface")
    args = parser.parse_args()
    frames = calibration_frames()
    height, width = frames[0].shape[:2]
    raw = raw_boxes(raw_detector(args.detector), frames)
    target, official = official_unpadded(), official_boxes()
    box_map = fit_map(raw, target)
    print(f"{args.detector}: fitted map (x1, x2, y1, y2) = ({', '.join(f'{v:.4f}' for v in box_map)})")
    print(f"raw box vs official minus pads: IoU {compare(raw, target)[0]:.3f}")
    m, off, absoff = compare(final_boxes(raw, box_map, height, width), official)
    print(f"final (map, pads {' '.join(map(str, PADS))}, smoothing) vs official: IoU {m:.3f}; edge offsets T/B/L/R "
          f"{' '.join(f'{v:+.1f}' for v in off)} px, mean |offset| {' '.join(f'{v:.1f}' for v in absoff)} px")
    half = len(target) // 2  # held out: fit on the first half, check on the second
    first = fit_map(raw[:half + 4], target[:half])
    print(f"fit on frames 0-{half - 1} ({', '.join(f'{v:.4f}' for v in first)}): frames {half}- IoU "
          f"{compare(final_boxes(raw, first, height, width)[half:], official[half:])[0]:.3f}")


if __name__ == "__main__":
    main()
