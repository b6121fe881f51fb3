"""What a face detector is: two kinds, one result type, and one way to run either through a clip.

- `FaceDetector` (S3FD, Haar): stateless. Each call looks at its frames alone, given at
  most a hint (the last face found before them, which it may search around first), so
  one instance serves concurrent jobs.
- `FaceTracker` (BlazeFace): follows one face through a clip. The tracker object holds
  only models and is shared by concurrent jobs; a clip's tracking state is an object
  the caller gets from `new_state` and hands back with every batch. Only a tracker can
  follow a chosen face (a point in the first frame) and list every face on a frame.

A detection is a `Box` in frame pixels, or None when a frame has no face; `ScoredBox`
is a face with its detector's confidence. `ClipDetection` runs either kind through
one clip, batch by batch, so the face track, the scan and the benches need not know
which kind they hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, NamedTuple, Optional, Sequence, TypeVar

import numpy as np

from ..errors import LipSyncError
from ..geometry import Box

Detection = Optional[Box]
Point = tuple[int, int]  # (x, y) in first-frame pixels


class ScoredBox(NamedTuple):
    """A face and its detector's confidence (0 to 1; 0 for a box a tracker carried without a detection)."""

    box: Box
    score: float


class FaceDetector(ABC):
    """A stateless detector: one detection (the most confident face) per BGR frame."""

    name: str
    batch_size: int  # frames it is best given per call (more only costs memory)

    @abstractmethod
    def detect(self, frames: Sequence[np.ndarray], previous: Detection = None) -> list[Detection]:
        """`frames` are consecutive frames of one clip; `previous`, the last face found before them, is a hint
        the detector may search around first. Nothing is kept between calls."""


StateT = TypeVar("StateT")


class FaceTracker(ABC, Generic[StateT]):
    """A detector that follows one face through a clip, its per-clip state held by the caller."""

    name: str
    batch_size: int

    @abstractmethod
    def new_state(self, point: Optional[Point] = None, consecutive: bool = True) -> StateT:
        """A clip's state before its first frame: `point` picks the face to follow (None: the most prominent);
        `consecutive=False` says the frames will be samples far apart (a scan), where no motion can be
        followed from one to the next and each starts from the last face found."""

    @abstractmethod
    def track(self, frames: Sequence[np.ndarray], state: StateT) -> list[Detection]:
        """One detection per consecutive BGR frame of the clip whose `state` this is (updated)."""

    @abstractmethod
    def faces(self, frame: np.ndarray) -> list[ScoredBox]:
        """Every face on a BGR frame, in the boxes `track` gives: what a point can pick."""


AnyDetector = FaceDetector | FaceTracker


class ClipDetection:
    """One clip's detections, batch by batch, with either kind of detector.

    A tracker gets its per-clip state; a stateless detector gets the last face found so
    far as its hint. `consecutive=False`: the frames are samples far apart (a scan of the
    clip), which a tracker's state is told.
    """

    def __init__(self, detector: AnyDetector, point: Optional[Point] = None, consecutive: bool = True) -> None:
        if point is not None and not isinstance(detector, FaceTracker):
            raise LipSyncError(f"The {detector.name} detector cannot follow a chosen face; use --detector "
                               "blazeface with --face_point, or -1 -1 for the most prominent face.")
        self.detector = detector
        self.previous: Detection = None  # the last face found so far
        self._state = detector.new_state(point, consecutive) if isinstance(detector, FaceTracker) else None

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        detector = self.detector
        if isinstance(detector, FaceTracker):
            found = detector.track(frames, self._state)
        else:
            found = detector.detect(frames, self.previous)
        self.previous = next((d for d in reversed(found) if d is not None), self.previous)
        return found


POINT_MARGIN = 0.25  # a point this far outside a face box (in face sizes) still picks it


def choose_face(faces: Sequence[ScoredBox], point: Optional[Point]) -> Optional[int]:
    """The index of the face to follow: the most prominent (area x score), or the one at `point`.

    A point picks the face whose box it lies in, or failing that the nearest box within
    POINT_MARGIN of its size; None when no face is there (or there are no faces).
    Shared by the tracker and the preview, so the preview marks the face a job follows.
    """
    if not faces:
        return None
    if point is None:
        return max(range(len(faces)), key=lambda i: faces[i].box.area * faces[i].score)
    px, py = point

    def distance(box: Box) -> float:
        return float(np.hypot(max(box.x1 - px, 0, px - box.x2), max(box.y1 - py, 0, py - box.y2)))

    boxes = [f.box for f in faces]
    near = [i for i, b in enumerate(boxes) if distance(b) <= POINT_MARGIN * max(b.width, b.height)]
    if not near:
        return None
    return min(near, key=lambda i: (distance(boxes[i]), np.hypot(boxes[i].centre[0] - px, boxes[i].centre[1] - py)))


def point_on_no_face(point: Point) -> LipSyncError:
    return LipSyncError(f"The face point {point[0]} {point[1]} is on no face found in the first frame; click on "
                        "the face to sync in the preview (or give --face_point on it), or use -1 -1 for the most "
                        "prominent face.")
