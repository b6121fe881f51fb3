"""Face detectors behind one interface, then the official padding and temporal smoothing.

Two detectors:
- 's3fd': S3FD through face-alignment, the detector Wav2Lip was trained with. Its
  weights (90 MB) are downloaded on first use, so it cannot run fully offline.
- 'haar': OpenCV's frontal-face Haar cascade, whose model ships inside the
  opencv-python wheel: it works with no download at all, fast on a CPU, but its boxes
  are not S3FD's (see README, "Face detectors").
'auto' picks S3FD on a GPU when its weights are present or can be fetched, else Haar
(on a CPU S3FD costs seconds per frame: about 290 GMAC for a 720p frame).

A detection is (x1, y1, x2, y2) in frame pixels, or None when a frame has no face.
"""

from __future__ import annotations

import sys
import threading
from typing import Optional, Protocol, Sequence

import cv2
import numpy as np

from .errors import LipSyncError

Detection = Optional[tuple[int, int, int, int]]  # x1, y1, x2, y2
Crop = tuple[int, int, int, int]  # y1, y2, x1, x2: the slice order the official code uses
SMOOTHING_WINDOW = 5  # frames averaged per box, as in the official code
DETECTORS = ("auto", "s3fd", "haar")


class FaceDetector(Protocol):
    name: str
    batch_size: int  # frames it is best given per call (more only costs memory)

    def detect(self, frames: Sequence[np.ndarray], previous: Detection = None) -> list[Detection]:
        """One detection (the most confident face) per BGR frame.

        `frames` are consecutive frames of one clip and `previous` is the last face found
        before them: a detector may search near it first. Detectors keep no state
        between calls, so one instance serves concurrent jobs.
        """


class S3FDDetector:
    """S3FD from face-alignment, fed BGR frames in batches like the official code.

    face-alignment flips the channels it is given before subtracting its means; the
    official vendored copy is given BGR, flips it too, then subtracts. Feeding BGR here
    therefore gives the network exactly the input it gets in the official code.
    """

    name = "s3fd"

    def __init__(self, weights_path: str, device: str, batch_size: int = 16, max_side: int = 0) -> None:
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        self.device = device
        self.batch_size = max(1, batch_size)
        self.max_side = max_side  # 0: full resolution, as the official code detects
        self._net = SFDDetector(device=device, path_to_detector=weights_path)

    def _downscaled(self, frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """Frames shrunk so their longer side is at most max_side (S3FD's cost grows with the pixels)."""
        height, width = frames[0].shape[:2]
        scale = self.max_side / max(height, width) if self.max_side else 1.0
        if scale >= 1.0:
            return list(frames), 1.0
        size = (round(width * scale), round(height * scale))
        return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames], scale

    def detect(self, frames: Sequence[np.ndarray], previous: Detection = None) -> list[Detection]:
        import torch

        frames, scale = self._downscaled(frames)
        results: list[Detection] = []
        start = 0
        while start < len(frames):
            chunk = np.stack(frames[start: start + self.batch_size])
            try:
                tensor = torch.from_numpy(chunk).permute(0, 3, 1, 2)
                found = self._net.detect_from_batch(tensor)
            except RuntimeError as err:  # out of memory: halve the batch, as the original does
                if self.batch_size == 1 or "out of memory" not in str(err).lower():
                    raise LipSyncError("Face detection ran out of memory even one frame at a time. "
                                       "Use the resize option (--resize_factor 2) to lower the resolution.") from None
                self.batch_size //= 2
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                print(f"Face detection out of memory; retrying with batch size {self.batch_size}", file=sys.stderr)
                continue
            for boxes in found:
                if len(boxes) == 0:
                    results.append(None)
                else:
                    x1, y1, x2, y2 = (int(v) for v in np.clip(boxes[0], 0, None)[:4] / scale)
                    results.append((x1, y1, x2, y2))
            start += len(chunk)
        return results


class HaarDetector:
    """OpenCV's Haar cascade on a downscaled, equalised grey frame.

    A Haar box covers brows to mouth, about 10% higher and shorter than S3FD's (which
    reaches the chin); the box is shifted down by CHIN_EXTENSION of its height so the
    padded crop holds the chin, as Wav2Lip's training crops do.

    A full-frame scan keeps the most confident face (the largest one is often a false
    positive: on the benchmark clip it jumped to the helmet in 22 of 217 frames, the most
    confident never). Scanning a whole frame costs more than the generator on a CPU, so
    once a face is found, only the region around it is scanned, at nearby sizes and with
    a looser threshold (false positives have little room there): a quarter of the cost,
    and far fewer lost frames (8 instead of 25 of 250 on the benchmark clip). The last
    face found stays the anchor for FOLLOW_FRAMES frames; then the whole frame is scanned.
    """

    name = "haar"
    batch_size = 4  # it works frame by frame; a small batch keeps few frames waiting
    MAX_SIDE = 480  # px: detection resolution (faces down to ~5% of the width); boxes are mapped back
    CHIN_EXTENSION = 0.10
    SEARCH_MARGIN = 0.5  # the region around the previous face, in face sizes on each side
    SIZE_RANGE = (0.7, 1.45)  # face sizes searched there, relative to the previous one
    NEIGHBOURS = (5, 2)  # detections a face needs: in a full scan, near the previous face
    FOLLOW_FRAMES = 25  # how long the last face found is searched around

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml" if hasattr(cv2, "data") else ""
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise LipSyncError("OpenCV's Haar face model is missing (opencv-python 5 no longer ships it). "
                               "Install the pinned requirements: pip install -r requirements.txt")

    def _scan(self, grey: np.ndarray, neighbours: int, min_side: tuple[int, int], max_side: tuple[int, int] = (0, 0)):
        """The most confident face (x, y, w, h) in `grey`, or None."""
        faces, _, weights = self._cascade.detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=neighbours,
                                                            minSize=min_side, maxSize=max_side,
                                                            outputRejectLevels=True)
        return faces[int(np.argmax(np.ravel(weights)))] if len(faces) else None

    def _scan_near(self, grey: np.ndarray, previous: tuple[int, int, int, int], scale: float):
        """Search the region around the previous face (its raw Haar box, in working pixels)."""
        x1, y1, x2, y2 = (v * scale for v in previous)
        fw, fh = x2 - x1, y2 - y1
        y1 -= fh * self.CHIN_EXTENSION  # undo the shift towards the chin: back to the cascade's own box
        rx1, ry1 = int(max(0, x1 - fw * self.SEARCH_MARGIN)), int(max(0, y1 - fh * self.SEARCH_MARGIN))
        rx2 = int(min(grey.shape[1], x2 + fw * self.SEARCH_MARGIN))
        ry2 = int(min(grey.shape[0], y1 + fh * (1 + self.SEARCH_MARGIN)))
        low, high = self.SIZE_RANGE
        if rx2 - rx1 < fw * low or ry2 - ry1 < fh * low or fw * low < 20:
            return None
        found = self._scan(grey[ry1:ry2, rx1:rx2], self.NEIGHBOURS[1], (int(fw * low), int(fh * low)),
                           (int(fw * high), int(fh * high)))
        return None if found is None else (found[0] + rx1, found[1] + ry1, found[2], found[3])

    def detect_one(self, frame: np.ndarray, previous: Detection = None) -> Detection:
        h, w = frame.shape[:2]
        scale = min(1.0, self.MAX_SIDE / max(h, w))
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        found = self._scan_near(grey, previous, scale) if previous is not None else None
        if found is None:
            min_side = max(20, int(min(grey.shape) * 0.06))
            found = self._scan(grey, self.NEIGHBOURS[0], (min_side, min_side))
        if found is None:
            return None
        x, y, fw, fh = np.asarray(found, dtype=np.float64) / scale
        shift = fh * self.CHIN_EXTENSION
        x1, y1, x2, y2 = x, y + shift, x + fw, y + fh + shift
        return int(max(0, x1)), int(max(0, y1)), int(min(w, x2)), int(min(h, y2))

    def detect(self, frames: Sequence[np.ndarray], previous: Detection = None) -> list[Detection]:
        results: list[Detection] = []
        anchor, age = previous, 0  # the last face found, and how many frames ago
        for frame in frames:
            found = self.detect_one(frame, anchor if age <= self.FOLLOW_FRAMES else None)
            results.append(found)
            anchor, age = (found, 0) if found is not None else (anchor, age + 1)
        return results


def make_detector(name: str, device: str, batch_size: int = 16, allow_download: bool = True,
                  det_max_side: int = 0) -> tuple[FaceDetector, str]:
    """The detector to use and a sentence saying which one and why."""
    from .weights import find_s3fd

    if name not in DETECTORS:
        raise LipSyncError(f"Unknown face detector '{name}'. Choose one of: {', '.join(DETECTORS)}.")
    if name == "haar":
        return HaarDetector(), "haar (OpenCV Haar cascade, chosen with --detector haar)"
    if name == "auto" and device == "cpu":
        return HaarDetector(), ("haar (OpenCV Haar cascade: on a CPU S3FD takes seconds per frame; "
                                "--detector s3fd uses it anyway)")
    weights = find_s3fd(download=allow_download)
    if weights:
        where = f"frames shrunk to {det_max_side} px" if det_max_side else "full-resolution frames"
        return (S3FDDetector(weights, device, batch_size, det_max_side),
                f"s3fd (face-alignment, weights {weights}, on {device}, {where})")
    if name == "s3fd":
        raise LipSyncError("The S3FD face detector's weights (s3fd-619a316812.pth) are not available and could not "
                           "be downloaded. Put the file in weights/, or use --detector haar, which needs no download.")
    return HaarDetector(), "haar (OpenCV Haar cascade: S3FD weights not found and not downloadable)"


def pad_detection(det: tuple[int, int, int, int], pads: Sequence[int], height: int, width: int) -> list[int]:
    """Widen a detection by pads (top, bottom, left, right), clipped to the frame -> [x1, y1, x2, y2]."""
    top, bottom, left, right = pads
    x1, y1, x2, y2 = det
    return [max(0, x1 - left), max(0, y1 - top), min(width, x2 + right), min(height, y2 + bottom)]


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
        self._last_face: tuple[int, tuple[int, int, int, int]] | None = None  # (frame index, raw box)
        self._gap: list[int] = []  # frames without a face since the last face
        self._final: np.ndarray | None = None  # all boxes smoothed, once the stream has ended
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    @property
    def finished(self) -> bool:
        return self._final is not None or self._error is not None

    def _append_face(self, index: int, raw: Sequence[float]) -> None:
        self._rank[index] = len(self._boxes)
        self._boxes.append(pad_detection(tuple(int(v) for v in raw), self.pads, self.height, self.width))

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

    def crop(self, index: int, timeout: float | None = None) -> Crop | None:
        """The crop (y1, y2, x1, x2) of frame `index`, or None without a face; waits until it is settled.

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
    def _usable(box: Sequence[int]) -> Crop | None:
        x1, y1, x2, y2 = box
        return None if x2 - x1 < 2 or y2 - y1 < 2 else (y1, y2, x1, x2)


def crops_from_detections(detections: Sequence[Detection], pads: Sequence[int], height: int, width: int,
                          smooth: bool = True) -> list[Crop | None]:
    """All crops of a finished list of detections (see CropTrack)."""
    track = CropTrack(pads, height, width, smooth)
    track.add(detections)
    track.finish()
    return [track.crop(i) for i in range(len(detections))]
