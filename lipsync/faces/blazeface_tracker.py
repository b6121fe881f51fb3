"""Following one face through a clip with BlazeFace: the CPU face tracker.

Why: on a CPU, S3FD (what Wav2Lip was trained with) costs seconds per frame, and
OpenCV's Haar cascade misses turned, covered and small faces. BlazeFace (its models
bundled, run by lipsync.faces.blazeface) found the right face in every frame of 14 hard
clips (rotated ±20°, yaw, a phone over the mouth, grain, a painting, 43-48 px faces in
720p, two people) at a few ms per 720p frame on 2 cores (bench/RESULTS.md).

How, per clip:
- acquisition (first frame, or after the face is lost): BlazeFace full-range on the
  whole frame and, when that finds nothing (or a face is to be chosen), on overlapping
  tiles, which find faces of ~45 px in 720p; the most prominent face (area x score) is
  kept, or the one at the chosen point;
- tracking: each later frame, BlazeFace on a window ROI_SCALE times the face size
  around the last box: the face fills the model's input whatever the frame size, and
  nobody outside the window can take over;
- a miss (a hand over the mouth, blur, a turned head): the box is carried by
  Lucas-Kanade optical flow for up to COAST_FRAMES frames;
- lost: only a face near the last one, of a similar size, is taken again, so the clip
  never switches person.

What a frame may cost is bounded: the first frame of a clip is searched in full (at
most the tiles of a 720p frame, lipsync.faces.blazeface.WORK_SIZE); a later search (no face yet,
or a lost one) runs at most TILE_BUDGET tiles per frame, going on where the last frame
stopped, and after a loss only tiles around the last face. Tracking costs one or two
model runs on a small window and a flow on a small patch, whatever the frame size.

Boxes are mapped to where S3FD puts its box by BOX_MAP; the face track then adds the
pads and the official 5-frame smoothing, as for S3FD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import cv2
import numpy as np

from ..geometry import Box
from .blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace
from .boxmap import BoxMap
from .detection import Detection, FaceTracker, Point, ScoredBox, choose_face, point_on_no_face

# BlazeFace box -> S3FD box, fitted by bench/fit_box_map.py on the calibration clip (the official boxes minus
# pads 0 10 0 0). With pads 0 10 0 0 and the official smoothing: IoU 0.910 vs the official boxes, bottom edge
# -0.5 px on average (mean |offset| 5.0 px); the raw BlazeFace box scores 0.734.
BOX_MAP = BoxMap(-0.4851, 0.4659, -0.7369, 0.4761)


class _Patch(NamedTuple):
    """A grey patch of the previous frame (top-left corner x, y): the region the flow will look at."""

    x: int
    y: int
    grey: np.ndarray


@dataclass
class TrackState:
    """One clip's tracking state, created by `BlazeFaceTracker.new_state` and handed back with every batch."""

    point: Optional[Point] = None  # where the face to follow is in the first frame (None: most prominent)
    consecutive: bool = True  # False: the frames are samples far apart (no flow; each starts from the last face)
    last: Optional[ScoredBox] = None  # the face being tracked
    lost_at: Optional[ScoredBox] = None  # the last face before the track was lost (re-acquisition stays near it)
    coast: int = 0  # frames carried by optical flow since the last detection
    patch: Optional[_Patch] = None  # the previous frame around `last`, for the flow
    frames: int = 0  # frames seen so far
    cursor: int = 0  # where the next budgeted tile search starts


class BlazeFaceTracker(FaceTracker[TrackState]):
    """BlazeFace with window tracking and optical-flow coasting (see the module docstring)."""

    name = "blazeface"
    batch_size = 8

    ROI_SCALE = 1.5  # tracking window side, in face sizes (1.5: IoU 0.910 on the calibration clip, 2.0: 0.900)
    MIN_IOU = 0.25  # a detection in the window must overlap the last box this much
    COAST_FRAMES = 50  # frames (2 s) a box may be carried by optical flow without a detection
    # scores needed: MediaPipe's own thresholds (short range 0.5, full range 0.6; lipsync.faces.blazeface) in the
    # window and
    # on the whole frame, and more on a tile: textures score 0.60-0.66 there, real faces of 40-50 px 0.84-0.93
    TILE_SCORE = 0.75
    REACQUIRE_DIST = 2.0  # after a loss, a face must lie within this many face sizes of the last one
    TILE_BUDGET = 16  # tiles a search may run per frame after a clip's first frame (a 720p frame has 119)
    FLOW_SIDE = 160  # px: the face is tracked by flow at this size (cost independent of the frame size)

    def __init__(self, box_map: BoxMap = BOX_MAP, threads: int = 1) -> None:
        self.box_map = box_map
        self.model = BlazeFace(threads)

    # ---- the public interface -------------------------------------------------------------

    def new_state(self, point: Optional[Point] = None, consecutive: bool = True) -> TrackState:
        return TrackState(point=point, consecutive=consecutive)

    def track(self, frames: Sequence[np.ndarray], state: TrackState) -> list[Detection]:
        return [self._step(frame, state) for frame in frames]

    def faces(self, frame: np.ndarray) -> list[ScoredBox]:
        height, width = frame.shape[:2]
        found, _ = self.model.search(frame, self.TILE_SCORE, everywhere=True)
        return [ScoredBox(self._map(f, height, width), f.score) for f in found]

    # ---- per frame ----------------------------------------------------------------------

    def _step(self, frame: np.ndarray, state: TrackState) -> Detection:
        """Track (or find) the face in one frame, updating `state`."""
        height, width = frame.shape[:2]
        first, state.frames = state.frames == 0, state.frames + 1
        if not state.consecutive:  # a sample: start from the last face found, without flow
            state.last, state.lost_at, state.patch = state.last or state.lost_at, None, None
        patch, state.patch = state.patch, None
        found = None
        if state.last is not None:
            found = self._in_window(frame, state.last)
            if found is None and patch is not None and state.coast < self.COAST_FRAMES:
                carried = self._flow(patch, frame, state.last)
                if carried is not None:
                    state.last, state.coast = carried, state.coast + 1
                    state.patch = self._patch(frame, carried)
                    return self._map(carried, height, width)
            if found is None:
                state.lost_at, state.last = state.last, None
        if found is None:
            found = self._acquire_one(frame, state, first)
        if found is None:
            return None
        state.last, state.coast, state.lost_at = found, 0, None
        state.patch = self._patch(frame, found) if state.consecutive else None
        return self._map(found, height, width)

    def _acquire_one(self, frame: np.ndarray, state: TrackState, first: bool) -> Optional[ScoredBox]:
        """The face to start a track on: at the state's point (first frame), near where it was lost, else the
        most prominent."""
        height, width = frame.shape[:2]
        point = state.point if first else None
        near = state.lost_at
        region = None
        if near is not None:  # a face there could only come from tiles that meet this square
            reach = (self.REACQUIRE_DIST + 0.5) * near.box.size
            cx, cy = near.box.centre
            region = Box(cx - reach, cy - reach, cx + reach, cy + reach)
        faces, state.cursor = self.model.search(frame, self.TILE_SCORE,
                                                everywhere=point is not None or near is not None, near=region,
                                                budget=0 if first else self.TILE_BUDGET, start=state.cursor)
        if near is not None:
            return self._near(faces, near)
        index = choose_face([ScoredBox(self._map(f, height, width), f.score) for f in faces], point)
        if index is None and point is not None:
            raise point_on_no_face(point)
        return None if index is None else faces[index]

    def _near(self, faces: Sequence[ScoredBox], last: ScoredBox) -> Optional[ScoredBox]:
        """After a loss: the face at about the same place and size as `last`, or None (never another person)."""
        cx, cy = last.box.centre

        def distance(f: ScoredBox) -> float:
            return float(np.hypot(f.box.centre[0] - cx, f.box.centre[1] - cy))

        size = last.box.size
        ok = [f for f in faces if distance(f) < self.REACQUIRE_DIST * size and 0.5 < f.box.size / size < 2.0]
        return min(ok, key=distance) if ok else None

    def _in_window(self, frame: np.ndarray, last: ScoredBox) -> Optional[ScoredBox]:
        """The face in a window around the last one, if it overlaps the last box enough."""
        height, width = frame.shape[:2]
        cx, cy = last.box.centre
        half = self.ROI_SCALE * last.box.size / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(width, cx + half)), int(min(height, cy + half))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        window = frame[y0:y1, x0:x1]
        found = (self.model.detect(window, SHORT_RANGE, x0, y0)
                 or self.model.detect(window, FULL_RANGE, x0, y0))  # short range misses tiny windows
        best = max(found, key=lambda f: last.box.iou(f.box), default=None)
        return best if best is not None and best.box.iou(last.box) >= self.MIN_IOU else None

    # ---- optical flow -------------------------------------------------------------------

    @staticmethod
    def _flow_region(last: ScoredBox, height: int, width: int) -> tuple[int, int, int, int]:
        """The frame region the flow compares: the box and half its size on every side, in the frame."""
        x1, y1, x2, y2 = last.box
        fw, fh = x2 - x1, y2 - y1
        return (max(0, int(x1 - fw * 0.5)), max(0, int(y1 - fh * 0.5)),
                min(width, int(x2 + fw * 0.5)), min(height, int(y2 + fh * 0.5)))

    def _patch(self, frame: np.ndarray, last: ScoredBox) -> _Patch:
        """The grey region around `last` the next frame's flow will start from (not the whole frame: at 4K its
        conversion alone would cost more than the tracking)."""
        mx, my, nx, ny = self._flow_region(last, *frame.shape[:2])
        return _Patch(mx, my, cv2.cvtColor(frame[my:ny, mx:nx], cv2.COLOR_BGR2GRAY))

    def _flow(self, patch: _Patch, frame: np.ndarray, last: ScoredBox) -> Optional[ScoredBox]:
        """`last` shifted by the median Lucas-Kanade flow of corners inside it (None when unreliable)."""
        mx, my, nx, ny = self._flow_region(last, *frame.shape[:2])
        if nx - mx < 8 or ny - my < 8:
            return None
        x1, y1, x2, y2 = last.box
        s = self.FLOW_SIDE / max(x2 - x1, 1.0)
        a = cv2.resize(patch.grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(frame[my:ny, mx:nx], cv2.COLOR_BGR2GRAY)
        b = cv2.resize(grey, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
        mask = np.zeros_like(a)
        mask[int((y1 - my) * s):int((y2 - my) * s), int((x1 - mx) * s):int((x2 - mx) * s)] = 255
        points = cv2.goodFeaturesToTrack(a, 40, 0.01, 4, mask=mask)
        if points is None or len(points) < 6:
            return None
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(a, b, points, None, winSize=(15, 15), maxLevel=3)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(b, a, moved, None, winSize=(15, 15), maxLevel=3)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (np.linalg.norm(back - points, axis=2).ravel() < 1.0)
        if good.sum() < 6:  # too few points that flow there and back to the same place
            return None
        dx, dy = np.median((moved - points).reshape(-1, 2)[good], axis=0) / s
        return ScoredBox(last.box.shifted(float(dx), float(dy)), 0.0)

    # ---- the box map --------------------------------------------------------------------

    def _map(self, face: ScoredBox, height: int, width: int) -> Box:
        return Box.of(self.box_map.apply(face.box)).clipped(height, width)
