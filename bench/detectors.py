"""Benchmark the CPU face detectors as the app runs them, on the calibration clip, degraded copies of it, and
synthetic clips of the astronaut photo.

Per detector and clip: frames with a face, hits (box centre on the target face), frames on the
other person (two-person clip), ms per frame. On the calibration clip also the final boxes (the
shipped map, pads 0 10 0 0, the official smoothing) against the official ones: IoU and mean
edge offsets. Reads ../shared/calibration beside the checkout (never copied into the repo).

    .venv/bin/python bench/detectors.py [--quick]      # --quick: the calibration clip only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fit_box_map as fit  # first: puts the repository on the path and imports lipsync before torch loads

# isort: split
import cv2
import numpy as np

from lipsync.faces.boxmap import BoxMap
from lipsync.faces.detectors import HaarDetector

OLD_HAAR_MAP = BoxMap(-0.5, 0.5, -0.4, 0.6)  # the former fixed shift: the cascade's box moved down 10%


def _box_through(matrix: np.ndarray, box) -> tuple:
    """The bounding box of `box`'s corners moved by a 3x3 matrix."""
    x1, y1, x2, y2 = box
    pts = np.array([[x1, y1], [x2, y1], [x1, y2], [x2, y2]], np.float64).reshape(-1, 1, 2)
    q = cv2.perspectiveTransform(pts, matrix).reshape(-1, 2)
    return (*q.min(0), *q.max(0))


def _background(width: int, height: int) -> np.ndarray:
    from skimage import data

    return cv2.GaussianBlur(cv2.resize(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), (width, height)), (0, 0), 3)


def _cover_mouth(img: np.ndarray, box, t: int) -> np.ndarray:
    """A dark 'phone' and a skin-coloured 'hand' over the lower face."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, my = (x1 + x2) / 2 + 0.08 * w * np.sin(t / 7), y1 + 0.8 * h
    cv2.rectangle(img, (int(cx - 0.3 * w), int(my - 0.16 * h)), (int(cx + 0.12 * w), int(my + 0.2 * h)),
                  (30, 30, 35), -1)
    cv2.ellipse(img, (int(cx + 0.2 * w), int(my + 0.12 * h)), (int(0.26 * w), int(0.17 * h)), 20, 0, 360,
                (120, 150, 200), -1)
    return img


def calibration_clips(quick: bool):
    """(name, frames, target boxes, other person's boxes or None): the real clip and transformed copies."""
    frames = fit.calibration_frames()
    gt = fit.official_unpadded()
    gt = gt + [gt[-1]] * (len(frames) - len(gt))
    yield "calib", frames, gt, None
    if quick:
        return
    yield "calib_phone", [_cover_mouth(f.copy(), b, i) for i, (f, b) in enumerate(zip(frames, gt))], gt, None
    out, moved = [], []
    for i, (f, b) in enumerate(zip(frames, gt)):
        m = cv2.getRotationMatrix2D((320, 320), 20 * np.sin(2 * np.pi * i / len(frames)), 1.0)
        out.append(cv2.warpAffine(f, m, (640, 640), borderMode=cv2.BORDER_REFLECT))
        moved.append(_box_through(np.vstack([m, [0, 0, 1]]), b))
    yield "calib_rot20", out, moved, None
    bg = _background(1280, 720)
    out, moved = [], []
    for f, b in zip(frames, gt):  # 720p: scaled to 720x720 in a 1280x720 frame
        c = bg.copy()
        c[:, 280:1000] = cv2.resize(f, (720, 720))
        out.append(c)
        moved.append((b[0] * 1.125 + 280, b[1] * 1.125, b[2] * 1.125 + 280, b[3] * 1.125))
    yield "calib_720p", out, moved, None
    out, moved = [], []
    for i, (f, b) in enumerate(zip(frames, gt)):  # small: face ~45 px wide, drifting in a 1280x720 frame
        c, s = bg.copy(), 0.28
        small = cv2.resize(f, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        ox, oy = int(700 + 200 * np.sin(i / 30)), int(400 + 60 * np.cos(i / 25))
        c[oy:oy + small.shape[0], ox:ox + small.shape[1]] = small
        out.append(c)
        moved.append((b[0] * s + ox, b[1] * s + oy, b[2] * s + ox, b[3] * s + oy))
    yield "calib_small45", out, moved, None


ASTRO_FACE = (168, 68, 282, 205)  # the astronaut's face in the 512x512 photo (S3FD-like, estimated)


def astronaut_clips(n: int = 75):
    from skimage import data

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    bg = _background(1280, 720)

    def place(canvas, matrix):
        warped = cv2.warpPerspective(photo, matrix, (1280, 720))
        mask = cv2.warpPerspective(np.full(photo.shape[:2], 255, np.uint8), matrix, (1280, 720)) > 0
        out = canvas.copy()
        out[mask] = warped[mask]
        return out

    def shift_scale(tx, ty, s):
        return np.array([[s, 0, tx], [0, s, ty], [0, 0, 1]], np.float64)

    def clip(name, make, other=None):
        frames, gt, oth = [], [], []
        for i in range(n):
            frame = place(bg, make(i))
            gt.append(_box_through(make(i), ASTRO_FACE))
            if other is not None:
                frame = place(frame, other(i))
                oth.append(_box_through(other(i), ASTRO_FACE))
            frames.append(frame)
        return name, frames, gt, oth or None

    def base(i):
        return shift_scale(300 + 120 * np.sin(i / 12), 60 + 30 * np.cos(i / 9), 1.2)

    yield clip("astro_rot20", lambda i: base(i) @ np.vstack(
        [cv2.getRotationMatrix2D((225, 136), 20 * np.sin(2 * np.pi * i / n), 1.0), [0, 0, 1]]))
    name, frames, gt, _ = clip("astro_phone", base)
    yield name, [_cover_mouth(f, b, i) for i, (f, b) in enumerate(zip(frames, gt))], gt, None
    yield clip("astro_small", lambda i: shift_scale(200 + 700 * i / n, 400 + 80 * np.sin(i / 8),
                                                    0.42 + 0.1 * np.sin(i / 10)))
    yield clip("astro_two", lambda i: shift_scale(80 + 60 * np.sin(i / 10), 80, 1.1),
               other=lambda i: shift_scale(800 - 330 * np.sin(np.pi * i / n), 120, 0.95))


def _centre_in(box, target) -> bool:
    return box is not None and target[0] <= (box[0] + box[2]) / 2 <= target[2] and \
        target[1] <= (box[1] + box[3]) / 2 <= target[3]


def detectors() -> dict:
    from lipsync.faces.blazeface_tracker import BlazeFaceTracker

    return {"blazeface": BlazeFaceTracker(), "haar": HaarDetector()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the calibration clip only")
    args = parser.parse_args()
    dets = detectors()
    clips = [*calibration_clips(args.quick), *([] if args.quick else astronaut_clips())]
    print("| detector | clip | size | face found | on target | on other person | ms/frame |")
    print("|---|---|---|---|---|---|---|")
    calib = {}
    for name, frames, gt, other in clips:
        for det_name, det in dets.items():
            fit.raw_boxes(det, frames[:2])  # warm-up (graphs, caches)
            start = time.perf_counter()
            boxes = fit.raw_boxes(det, frames)
            ms = (time.perf_counter() - start) * 1000 / len(frames)
            found = sum(b is not None for b in boxes)
            hits = sum(_centre_in(b, g) for b, g in zip(boxes, gt))
            wrong = sum(_centre_in(b, o) for b, o in zip(boxes, other)) if other else 0
            print(f"| {det_name} | {name} | {frames[0].shape[1]}x{frames[0].shape[0]} | {found}/{len(frames)} | "
                  f"{hits} | {wrong} | {ms:.1f} |", flush=True)
            if name == "calib":
                calib[det_name] = (boxes, frames[0].shape[:2])
    print("\nCalibration clip, final boxes (shipped map, pads 0 10 0 0, official smoothing) vs the official ones "
          "(225 frames)\n")
    print("| detector | IoU | edge offset T/B/L/R, mean (px) | mean abs (px) |")
    print("|---|---|---|---|")
    official = fit.official_boxes()
    rows = [(n, b, hw, None) for n, (b, hw) in calib.items()]
    if "haar" in calib:
        rows.append(("haar, former 10% chin shift", *calib["haar"], OLD_HAAR_MAP))
    for det_name, boxes, (height, width), old in rows:
        mapped = boxes if old is None else [  # back to the cascade's box, then the old shift
            None if b is None else old.apply(dets["haar"].BOX_MAP.invert(b)) for b in boxes]
        final = fit.final_boxes(mapped, fit.IDENTITY_MAP, height, width)
        m, off, absoff = fit.compare(final, official)
        print(f"| {det_name} | {m:.3f} | {' '.join(f'{v:+.1f}' for v in off)} | "
              f"{' '.join(f'{v:.1f}' for v in absoff)} |")


if __name__ == "__main__":
    main()
