"""BlazeFace (MediaPipe) with a face tracker: the CPU face detector.

Why: on a CPU, S3FD (what Wav2Lip was trained with) costs seconds per frame, and
OpenCV's Haar cascade misses turned, covered and small faces. BlazeFace, whose models
ship inside the mediapipe 0.10.14 wheel, found the right face in every frame of 14 hard
clips (rotated ±20°, yaw, a phone over the mouth, grain, a painting, 43-48 px faces in
720p, two people) at 2.3-8.3 ms per 720p frame on 2 cores (bench/RESULTS.md).

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

Boxes are mapped to where S3FD puts its box by BOX_MAP; the face track then adds the
pads and the official 5-frame smoothing, as for S3FD.

The detector object is shared by concurrent jobs: it holds only MediaPipe graphs, each
lent to one thread at a time (they are not thread-safe). A clip's tracking state is a
`TrackState` the caller creates with `new_state` and hands back with each batch.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from .boxmap import BoxMap
from .errors import LipSyncError
from .geometry import Box

Detection = Optional[Box]  # as in lipsync.faces (which imports this module, so it cannot be imported here)

# BlazeFace box -> S3FD box, fitted by bench/fit_box_map.py on the calibration clip (the official boxes minus
# pads 0 10 0 0). With pads 0 10 0 0 and the official smoothing: IoU 0.910 vs the official boxes, bottom edge
# -0.5 px on average (mean |offset| 5.0 px); the raw BlazeFace box scores 0.734.
BOX_MAP = BoxMap(-0.4851, 0.4659, -0.7369, 0.4761)

SHORT_RANGE, FULL_RANGE = 0, 1  # MediaPipe's two models: faces within ~2 m filling the input, and anything else
_QUIET = threading.Lock()  # serialises the brief silencing of the C++ logs (stderr is process-wide)


class Face(NamedTuple):
    """A BlazeFace box in frame pixels (its own, not mapped) and its score (0 for a box carried by flow)."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float

    @property
    def size(self) -> float:
        return max(self.x2 - self.x1, self.y2 - self.y1)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def iou(self, other: "Face") -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        union = (self.x2 - self.x1) * (self.y2 - self.y1) + (other.x2 - other.x1) * (other.y2 - other.y1) - ix * iy
        return ix * iy / union if union > 0 else 0.0

    def overlap(self, other: "Face") -> float:
        """The intersection over the smaller box's area: 1 when one face box lies inside the other."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        smaller = min((self.x2 - self.x1) * (self.y2 - self.y1), (other.x2 - other.x1) * (other.y2 - other.y1))
        return ix * iy / smaller if smaller > 0 else 0.0

    def shifted(self, dx: float, dy: float) -> "Face":
        return Face(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy, 0.0)


@dataclass
class TrackState:
    """One clip's tracking state, created by the caller per clip and handed back with every batch."""

    point: Optional[tuple[int, int]] = None  # where the face to follow is in the first frame (None: most prominent)
    last: Optional[Face] = None  # the face being tracked
    lost_at: Optional[Face] = None  # the last face before the track was lost (re-acquisition stays near it)
    coast: int = 0  # frames carried by optical flow since the last detection
    prev_grey: Optional[np.ndarray] = None  # the previous frame, for the flow
    frames: int = 0  # frames seen so far


def point_on_no_face(point: tuple[int, int]) -> LipSyncError:
    return LipSyncError(f"The face point {point[0]} {point[1]} is on no face found in the first frame; click on "
                        "the face to sync in the preview (or give --face_point on it), or use -1 -1 for the most "
                        "prominent face.")


def choose_face(boxes: Sequence[Box], scores: Sequence[float], point: Optional[tuple[int, int]]) -> Optional[int]:
    """The index of the face to follow: the most prominent (area x score), or the one at `point`.

    A point picks the face whose box it lies in, or failing that the nearest box within
    POINT_MARGIN of its size; None when no face is there (or there are no faces).
    Shared by the detector and the preview, so the preview marks the face a job follows.
    """
    if not boxes:
        return None
    if point is None:
        return max(range(len(boxes)), key=lambda i: boxes[i].area * scores[i])
    px, py = point

    def distance(box: Box) -> float:
        return float(np.hypot(max(box.x1 - px, 0, px - box.x2), max(box.y1 - py, 0, py - box.y2)))

    near = [i for i, b in enumerate(boxes) if distance(b) <= POINT_MARGIN * max(b.width, b.height)]
    if not near:
        return None
    return min(near, key=lambda i: (distance(boxes[i]), np.hypot(boxes[i].centre[0] - px, boxes[i].centre[1] - py)))


POINT_MARGIN = 0.25  # a point this far outside a face box (in face sizes) still picks it


def _import_mediapipe() -> Any:
    """mediapipe, with its C++ logging and protobuf's deprecation warning kept out of the CLI's and app's logs."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=r".*SymbolDatabase\.GetPrototype\(\) is deprecated.*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"google\.protobuf.*")
    import mediapipe

    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    return mediapipe


class _StderrSilenced:
    """File descriptor 2 pointed at /dev/null for a moment: TFLite and absl print their start-up lines there
    from C++ (XNNPACK delegate, feedback manager) where no Python setting reaches."""

    def __enter__(self) -> None:
        _QUIET.acquire()
        self._saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)

    def __exit__(self, *exc: Any) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        _QUIET.release()


class _GraphPool:
    """MediaPipe graphs, each lent to one thread at a time (a graph is not thread-safe).

    A pool rather than one graph per thread: every job detects on a thread of its own, and
    graphs kept per thread are never freed when the thread ends (about 15 MB and two OS
    threads per job, measured). The pool holds as many graphs as were ever in use at once.
    """

    def __init__(self, make: Callable[[int, float], Any]) -> None:
        self._make = make
        self._free: dict[tuple[int, float], list[Any]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, model: int, score: float) -> Iterator[Any]:
        with self._lock:
            free = self._free.setdefault((model, score), [])
            graph = free.pop() if free else None
        if graph is None:
            graph = self._make(model, score)
        try:
            yield graph
        finally:
            with self._lock:
                self._free[(model, score)].append(graph)


class BlazeFaceDetector:
    """BlazeFace with window tracking and optical-flow coasting (see the module docstring)."""

    name = "blazeface"
    batch_size = 8

    ROI_SCALE = 1.5  # tracking window side, in face sizes (1.5: IoU 0.910 on the calibration clip, 2.0: 0.900)
    MIN_IOU = 0.25  # a detection in the window must overlap the last box this much
    COAST_FRAMES = 50  # frames (2 s) a box may be carried by optical flow without a detection
    TRACK_SCORE = 0.5  # BlazeFace score needed in the tracking window
    ACQUIRE_SCORE = 0.6  # ... and to start a track on a whole frame (false positives have room there)
    TILE_SCORE = 0.75  # ... and on a tile: textures score 0.60-0.66 there, real faces of 40-50 px 0.84-0.93
    REACQUIRE_DIST = 2.0  # after a loss, a face must lie within this many face sizes of the last one
    MIN_TILE = 160  # px: the smallest tile searched for small faces
    FLOW_SIDE = 160  # px: the face is tracked by flow at this size (cost independent of the frame size)

    def __init__(self, box_map: BoxMap = BOX_MAP) -> None:
        self._mp = _import_mediapipe()  # an ImportError here means: no mediapipe (the factory falls back)
        self.box_map = box_map
        self._graphs = _GraphPool(self._new_graph)

    # ---- the public interface -------------------------------------------------------------

    def new_state(self, point: Optional[tuple[int, int]] = None) -> TrackState:
        """Tracking state for one clip; `point` (x, y in first-frame pixels) picks the face to follow."""
        return TrackState(point=point)

    def detect(self, frames: Sequence[np.ndarray], previous: Detection = None,
               state: Optional[TrackState] = None) -> list[Detection]:
        """One mapped box per BGR frame (None: no face). Without `state`, tracking starts from `previous`."""
        if state is None:
            state = TrackState(last=self._unmap(previous) if previous is not None else None)
        return [self._step(frame, state) for frame in frames]

    def faces(self, frame: np.ndarray) -> list[tuple[Box, float]]:
        """Every face on a BGR frame (whole frame and tiles) as (mapped box, score): what a point can pick."""
        height, width = frame.shape[:2]
        found = self._acquire(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), everywhere=True)
        return [(self._map(f, height, width), f.score) for f in found]

    # ---- per frame ----------------------------------------------------------------------

    def _step(self, frame: np.ndarray, state: TrackState) -> Detection:
        """Track (or find) the face in one frame, updating `state`."""
        height, width = frame.shape[:2]
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        first, state.frames = state.frames == 0, state.frames + 1
        prev_grey, state.prev_grey = state.prev_grey, grey
        found = None
        if state.last is not None:
            found = self._in_window(rgb, state.last)
            if found is None and prev_grey is not None and state.coast < self.COAST_FRAMES:
                carried = self._flow(prev_grey, grey, state.last)
                if carried is not None:
                    state.last, state.coast = carried, state.coast + 1
                    return self._map(carried, height, width)
            if found is None:
                state.lost_at, state.last = state.last, None
        if found is None:
            found = self._acquire_one(rgb, state.point if first else None, state.lost_at)
        if found is None:
            return None
        state.last, state.coast, state.lost_at = found, 0, None
        return self._map(found, height, width)

    def _acquire_one(self, rgb: np.ndarray, point: Optional[tuple[int, int]], near: Optional[Face]) -> Optional[Face]:
        """The face to start a track on: at `point`, near `near` (after a loss), else the most prominent."""
        height, width = rgb.shape[:2]
        faces = self._acquire(rgb, everywhere=point is not None or near is not None)
        if near is not None:
            return self._near(faces, near)
        mapped = [self._map(f, height, width) for f in faces]
        index = choose_face(mapped, [f.score for f in faces], point)
        if index is None and point is not None:
            raise point_on_no_face(point)
        return None if index is None else faces[index]

    def _near(self, faces: Sequence[Face], last: Face) -> Optional[Face]:
        """After a loss: the face at about the same place and size as `last`, or None (never another person)."""
        cx, cy = last.centre

        def distance(f: Face) -> float:
            return float(np.hypot(f.centre[0] - cx, f.centre[1] - cy))

        ok = [f for f in faces if distance(f) < self.REACQUIRE_DIST * last.size and 0.5 < f.size / last.size < 2.0]
        return min(ok, key=distance) if ok else None

    # ---- BlazeFace ----------------------------------------------------------------------

    def _new_graph(self, model: int, score: float) -> Any:
        """A MediaPipe graph for a model and threshold, started."""
        # Starting a graph prints C++ start-up lines from its worker threads, at any time until the first frame
        # is through: both stay inside the silenced stretch.
        with _StderrSilenced():
            graph = self._mp.solutions.face_detection.FaceDetection(model_selection=model,
                                                                    min_detection_confidence=score)
            graph.process(np.zeros((64, 64, 3), np.uint8))
        return graph

    def _run(self, rgb: np.ndarray, x0: int, y0: int, model: int, score: float) -> list[Face]:
        """BlazeFace on an RGB image whose top-left corner is at (x0, y0) in the frame; boxes in frame pixels."""
        height, width = rgb.shape[:2]
        with self._graphs.borrow(model, score) as graph:
            result = graph.process(np.ascontiguousarray(rgb))
        found = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            found.append(Face(x0 + b.xmin * width, y0 + b.ymin * height, x0 + (b.xmin + b.width) * width,
                              y0 + (b.ymin + b.height) * height, float(d.score[0])))
        return found

    def _acquire(self, rgb: np.ndarray, everywhere: bool) -> list[Face]:
        """Faces on the whole frame; then (if none, or `everywhere`) on overlapping tiles, for small faces."""
        height, width = rgb.shape[:2]
        found = self._run(rgb, 0, 0, FULL_RANGE, self.ACQUIRE_SCORE)
        if found and not everywhere:
            return found
        side = max(192, min(height, width) // 2)
        while side >= self.MIN_TILE:
            step = side // 2
            for y in range(0, max(1, height - step), step):
                for x in range(0, max(1, width - step), step):
                    tile = rgb[y:min(height, y + side), x:min(width, x + side)]
                    found += [f for f in self._run(tile, x, y, FULL_RANGE, self.ACQUIRE_SCORE)
                              if f.score >= self.TILE_SCORE and all(f.overlap(g) < 0.4 for g in found)]
            if found and not everywhere:
                break
            side //= 2
        return found

    def _in_window(self, rgb: np.ndarray, last: Face) -> Optional[Face]:
        """The face in a window around the last one, if it overlaps the last box enough."""
        height, width = rgb.shape[:2]
        cx, cy = last.centre
        half = self.ROI_SCALE * last.size / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(width, cx + half)), int(min(height, cy + half))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        window = rgb[y0:y1, x0:x1]
        found = (self._run(window, x0, y0, SHORT_RANGE, self.TRACK_SCORE)
                 or self._run(window, x0, y0, FULL_RANGE, self.TRACK_SCORE))  # short range misses tiny windows
        best = max(found, key=last.iou, default=None)
        return best if best is not None and best.iou(last) >= self.MIN_IOU else None

    def _flow(self, prev_grey: np.ndarray, grey: np.ndarray, last: Face) -> Optional[Face]:
        """`last` shifted by the median Lucas-Kanade flow of corners inside it (None when unreliable)."""
        height, width = grey.shape[:2]
        fw, fh = last.x2 - last.x1, last.y2 - last.y1
        s = self.FLOW_SIDE / max(fw, 1.0)
        mx, my = max(0, int(last.x1 - fw * 0.5)), max(0, int(last.y1 - fh * 0.5))
        nx, ny = min(width, int(last.x2 + fw * 0.5)), min(height, int(last.y2 + fh * 0.5))
        if nx - mx < 8 or ny - my < 8:
            return None
        a = cv2.resize(prev_grey[my:ny, mx:nx], None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        b = cv2.resize(grey[my:ny, mx:nx], (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
        mask = np.zeros_like(a)
        mask[int((last.y1 - my) * s):int((last.y2 - my) * s), int((last.x1 - mx) * s):int((last.x2 - mx) * s)] = 255
        points = cv2.goodFeaturesToTrack(a, 40, 0.01, 4, mask=mask)
        if points is None or len(points) < 6:
            return None
        moved, ok, _ = cv2.calcOpticalFlowPyrLK(a, b, points, None, winSize=(15, 15), maxLevel=3)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(b, a, moved, None, winSize=(15, 15), maxLevel=3)
        good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (np.linalg.norm(back - points, axis=2).ravel() < 1.0)
        if good.sum() < 6:  # too few points that flow there and back to the same place
            return None
        dx, dy = np.median((moved - points).reshape(-1, 2)[good], axis=0) / s
        return last.shifted(float(dx), float(dy))

    # ---- the box map --------------------------------------------------------------------

    def _map(self, face: Face, height: int, width: int) -> Box:
        return Box.of(self.box_map.apply(face[:4])).clipped(height, width)

    def _unmap(self, box: Box) -> Face:
        return Face(*self.box_map.invert(box), 1.0)
