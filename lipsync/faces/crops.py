"""The face track: detections in, padded and smoothed crops out, frame by frame, as early as possible.

Detection runs on a thread of its own (`FaceDetection`), decoding the clip and feeding
each frame's detection to a `CropTrack`; the synthesis loop reads each frame's crop
from the track as soon as the official 5-frame smoothing has settled it. The raw
detections are cached by the face file's content (lipsync.faces.cache), so a second run on
the same clip skips detection.
"""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from ..errors import LipSyncError
from ..geometry import Box
from ..media.source import FaceSource
from ..options import Options
from ..runtime.concurrency import QUEUE_FRAMES, prefetch
from ..runtime.devices import frames_in_budget
from ..runtime.timings import StageTimes
from . import cache
from .detection import AnyDetector, ClipDetection, Detection

SMOOTHING_WINDOW = 5  # frames averaged per box, as in the official code


def smooth_boxes(boxes: np.ndarray, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Each box becomes the mean of itself and the next window-1 boxes, as the official code does.

    Kept to the letter: the array is updated in place, so the last windows average
    boxes already smoothed, and the integer array truncates each mean.
    """
    boxes = boxes.copy()
    for i in range(len(boxes)):
        chunk = boxes[len(boxes) - window:] if i + window > len(boxes) else boxes[i: i + window]
        boxes[i] = np.mean(chunk, axis=0)
    return boxes


NO_FACE_MESSAGE = ("No face was found in the video or photo. Use a clip where one face is clearly visible and "
                   "frontal, or give the face position as a fixed box (--box TOP BOTTOM LEFT RIGHT, or 'Fixed face "
                   "box' under Advanced in the app).")


PENDING = -1  # a frame in an open gap between faces: its crop depends on whether a face comes back soon


class CropTrack:
    """Padded, smoothed crops for frames whose detections arrive in order, each known as early as possible.

    The official smoothing makes a face's box the mean of its padded box and the next
    four faces' (truncated to integers), and over the last five faces it averages
    boxes already smoothed, in place. So a crop is settled once four more faces have
    been seen, or when the stream ends. Where every frame has a face (the only case the
    official code survives), the crops are the official ones.

    Frames without a face: a gap of up to MAX_GAP frames between two faces (a detector
    that blinked) gets boxes interpolated between its neighbours; a longer gap, or
    frames before the first face or after the last, pass through unchanged and do not
    drag their neighbours' boxes. A detection thread calls `add`/`finish`; the synthesis
    loop calls `crop`, which waits until that frame's crop is settled.
    """

    MAX_GAP = 3  # frames (0.12 s at 25 fps)

    def __init__(self, pads: Sequence[int], height: int, width: int, smooth: bool = True) -> None:
        for pad, side, limit in zip(pads, ("top", "bottom", "left", "right"), (height, height, width, width)):
            if abs(pad) >= limit:
                raise LipSyncError(
                    f"The {side} padding ({pad} px) is larger than the {width}x{height} frame. Give pads of a few "
                    "to a few dozen pixels (--pads TOP BOTTOM LEFT RIGHT, or the padding sliders).")
        self.pads, self.height, self.width, self.smooth = tuple(pads), height, width, smooth
        self.detections: list[Detection] = []
        self._boxes: list[list[int]] = []  # padded boxes of the frames that have a face, in order
        self._rank: list[int | None] = []  # per frame: its index in _boxes, None without a face, or PENDING
        self._last_face: tuple[int, Box] | None = None  # (frame index, raw box)
        self._gap: list[int] = []  # frames without a face since the last face
        self._final: np.ndarray | None = None  # all boxes smoothed, once the stream has ended
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    @property
    def finished(self) -> bool:
        return self._final is not None or self._error is not None

    def _append_face(self, index: int, raw: Sequence[float]) -> None:
        self._rank[index] = len(self._boxes)
        self._boxes.append(list(Box.of(raw).padded(self.pads, self.height, self.width)))

    def _add_one(self, det: Detection) -> None:
        index = len(self.detections)
        self.detections.append(det)
        self._rank.append(None)
        if det is None:
            if self._last_face is not None:
                self._gap.append(index)
                self._rank[index] = PENDING
                if len(self._gap) > self.MAX_GAP:  # the face is gone, not missed: these frames pass through
                    for k in self._gap:
                        self._rank[k] = None
                    self._gap, self._last_face = [], None
            return
        if self._gap:  # a short gap closes: boxes on the line between its two faces
            last_index, last_box = self._last_face
            for k in self._gap:
                t = (k - last_index) / (index - last_index)
                self._append_face(k, [a + t * (b - a) for a, b in zip(last_box, det)])
            self._gap = []
        self._append_face(index, det)
        self._last_face = (index, det)

    def add(self, detections: Sequence[Detection]) -> None:
        with self._changed:
            for det in detections:
                self._add_one(det)
            self._changed.notify_all()

    def finish(self) -> None:
        """The stream has ended: settle the last crops (or fail when no frame had a usable face)."""
        with self._changed:
            for k in self._gap:  # frames after the last face pass through
                self._rank[k] = None
            self._gap = []
            if not self._boxes:
                self._error = LipSyncError(NO_FACE_MESSAGE)
            else:
                boxes = np.array(self._boxes)
                self._final = smooth_boxes(boxes) if self.smooth else boxes
                if all(self._usable(box) is None for box in self._final.tolist()):
                    self._error = LipSyncError(
                        f"The padding {self.pads} leaves no face region to work on. Use smaller or positive pads.")
            self._changed.notify_all()

    def fail(self, error: BaseException) -> None:
        """Detection broke: every waiting and later `crop` call raises `error`."""
        with self._changed:
            self._error = error
            self._changed.notify_all()

    def _settled(self, index: int) -> bool:
        if self._error is not None or self._final is not None:
            return True
        if index >= len(self._rank):
            return False
        rank = self._rank[index]
        if rank is None:  # passed through unchanged, once it is clear the clip has a face at all
            return bool(self._boxes)
        if rank == PENDING:
            return False
        return not self.smooth or rank + SMOOTHING_WINDOW <= len(self._boxes)

    def crop(self, index: int, timeout: float | None = None) -> Box | None:
        """The crop of frame `index`, or None without a face; waits until it is settled.

        Raises TimeoutError when `timeout` seconds pass first (the caller can report progress and wait again).
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._settled(index), timeout):
                raise TimeoutError
            if self._error is not None:
                raise self._error
            if index >= len(self._rank):
                raise IndexError(f"frame {index} is past the {len(self._rank)} detected frames")
            rank = self._rank[index]
            if rank is None:
                return None
            if self._final is not None:
                box = self._final[rank].tolist()
            elif self.smooth:  # the first branch of the official loop: the raw window, not yet smoothed
                box = np.mean(np.array(self._boxes[rank: rank + SMOOTHING_WINDOW]), axis=0).astype(int).tolist()
            else:
                box = self._boxes[rank]
            return self._usable(box)

    @staticmethod
    def _usable(box: Sequence[int]) -> Box | None:
        box = Box.of(box)
        return None if box.width < 2 or box.height < 2 else box


def crops_from_detections(detections: Sequence[Detection], pads: Sequence[int], height: int, width: int,
                          smooth: bool = True) -> list[Box | None]:
    """All crops of a finished list of detections (see CropTrack)."""
    track = CropTrack(pads, height, width, smooth)
    track.add(detections)
    track.finish()
    return [track.crop(i) for i in range(len(detections))]


class FaceDetection:
    """Runs face detection on a thread of its own, feeding a CropTrack the synthesis loop reads."""

    def __init__(self, source: FaceSource, n_frames: int, options: Options, detector: AnyDetector,
                 timings: StageTimes) -> None:
        height, width = source.height, source.width
        self.source, self.options, self.detector, self.timings = source, options, detector, timings
        self.limit = 1 if source.static else n_frames  # the distinct frames the output uses
        self.track = CropTrack(options.pads, height, width, smooth=not options.nosmooth)
        self.batch = frames_in_budget(detector.batch_size, height, width)
        self.clip = self._clip_detection(options.point, height, width)  # this clip's own (detectors are shared)
        point = "" if options.point is None else "@{},{}".format(*options.point)  # another face, other boxes
        self.key = cache.cache_key(source.info.path, detector.name + point, options.resize_factor, options.rotate,
                                   options.crop, source.static, options.det_max_side)
        self.cached = cache.load(self.key, self.limit)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _clip_detection(self, point: tuple[int, int] | None, height: int, width: int) -> ClipDetection:
        """The clip's detection state, after checking the face point against the frame."""
        if point is not None and not (0 <= point[0] < width and 0 <= point[1] < height):
            raise LipSyncError(f"The face point {point[0]} {point[1]} is outside the {width}x{height} first "
                               "frame; give x from 0 to the width and y from 0 to the height, in pixels after "
                               "resize, rotate and crop.")
        return ClipDetection(self.detector, point)

    def start(self) -> "FaceDetection":
        if self.cached is not None:
            self.track.add(self.cached)
            self.track.finish()
        else:
            self._thread = threading.Thread(target=self._work, name="lipsync-detect", daemon=True)
            self._thread.start()
        return self

    @property
    def expected(self) -> int:
        """How many frames detection will cover (an estimate until it ends)."""
        if self.track.finished:
            return len(self.track.detections)
        return min(self.limit, self.source.frame_estimate)

    def crop(self, index: int, progress) -> Box | None:
        """Frame `index`'s crop, reporting detection progress while it is not settled yet."""
        while True:
            try:
                return self.track.crop(index, timeout=0.5)
            except TimeoutError:
                done = len(self.track.detections)
                progress("Detecting faces", done, max(done, self.expected))

    def _work(self) -> None:
        try:
            batch: list[np.ndarray] = []
            frames = prefetch(self.source.head(self.limit), QUEUE_FRAMES)
            try:
                for frame in frames:
                    batch.append(frame)
                    if len(batch) == self.batch:
                        self._detect(batch)
                        batch = []
                    if self._stop.is_set():
                        return
            finally:
                frames.close()
            if batch:
                self._detect(batch)
            self.track.finish()
            cache.store(self.key, self.track.detections, complete=len(self.track.detections) < self.limit)
        except BaseException as err:  # handed to the synthesis loop, raised there
            self.track.fail(err)

    def _detect(self, frames: list[np.ndarray]) -> None:
        with self.timings.stage("detect"):
            found = self.clip(frames)
        self.track.add(found)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def output_boxes(detection: FaceDetection | None, frames: int) -> list[tuple[int, int, int, int] | None]:
    """Per output frame, the face the job found there (before pads and smoothing) or None. Output frame i shows
    source frame i mod n (the clip loops; a photo's n is 1), so it has that frame's detection. The sync score crops
    these instead of detecting again (lipsync.scoring.job)."""
    found = detection.track.detections if detection is not None else []
    if not found:
        return [None] * frames
    return [None if found[i % len(found)] is None else tuple(found[i % len(found)]) for i in range(frames)]
