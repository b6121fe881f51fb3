"""The stateless face detectors (S3FD, Haar), and the factory that picks a detector for a job.

Three detectors (the two kinds are in lipsync.faces.detection):
- 's3fd': S3FD (lipsync.faces.s3fd, on PyTorch), the detector Wav2Lip was trained with. Its
  weights (90 MB) are downloaded on first use, so it cannot run fully offline.
- 'blazeface': MediaPipe's BlazeFace (models bundled, run by OpenVINO) with a face
  tracker (lipsync.faces.blazeface_tracker): a few ms per 720p frame on 2 CPU cores, finds turned,
  covered and small faces, and follows one person.
- 'haar': OpenCV's frontal-face Haar cascade (model inside the opencv wheels): no extra
  dependency, but it misses turned, covered and small faces.
'auto' picks S3FD on a GPU when its weights are present or can be fetched; on a CPU
(where S3FD costs seconds per frame: about 290 GMAC for a 720p frame) BlazeFace, or
Haar when OpenVINO is not installed.

The cheap detectors' boxes are not S3FD's: each is mapped to where S3FD puts its box by
a `BoxMap` fitted on the calibration clip (bench/fit_box_map.py), so Wav2Lip gets the
crops it was trained on. Padding, smoothing and gaps are the face track's business
(lipsync.faces.crops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..errors import LipSyncError
from ..geometry import Box
from ..options import DETECTORS
from ..runtime.concurrency import BuildOnce
from ..runtime.devices import map_batches
from .boxmap import BoxMap
from .detection import AnyDetector, Detection, FaceDetector

# Haar's cascade box covers brows to mouth and is wider than S3FD's; fitted by bench/fit_box_map.py --detector haar
# on the calibration clip: final boxes (map, pads 0 10 0 0, smoothing) IoU 0.922 vs the official ones, where the
# former fixed 10% shift towards the chin gave 0.688.
HAAR_MAP = BoxMap(-0.3583, 0.3905, -0.4272, 0.5280)


class S3FDDetector(FaceDetector):
    """S3FD (lipsync.faces.s3fd) fed the BGR frames cv2 gives, in batches, like the official code.

    The official inference hands its vendored S3FD the frames with their channels reversed and subtracts
    (104, 117, 123); lipsync.faces.s3fd.detect_faces does the same to BGR frames, so the network gets exactly the
    input it gets there. The first box of a frame (the most confident after NMS) is its face, as there.
    """

    name = "s3fd"

    def __init__(self, weights_path: str, device: str, batch_size: int = 16, max_side: int = 0) -> None:
        import torch

        from .s3fd import load_net

        self.device = device
        self.batch_size = max(1, batch_size)
        self.max_side = max_side  # 0: full resolution, as the official code detects
        self._net = load_net(weights_path, device)
        if "cuda" in device:  # as the official code does: the frame size stays the same through a clip
            torch.backends.cudnn.benchmark = True

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

        from .s3fd import detect_faces

        frames, scale = self._downscaled(frames)

        def run(start: int, stop: int) -> list[Detection]:
            tensor = torch.from_numpy(np.stack(frames[start:stop])).permute(0, 3, 1, 2)
            return [None if len(boxes) == 0 else Box.of(np.clip(boxes[0], 0, None)[:4] / scale)
                    for boxes in detect_faces(self._net, tensor)]

        chunks, _ = map_batches(run, len(frames), self.batch_size, self.device,
                                "Face detection ran out of memory even one frame at a time. Use the resize option "
                                "(--resize_factor 2) to lower the resolution.")
        return [d for chunk in chunks for d in chunk]


class HaarDetector(FaceDetector):
    """OpenCV's Haar cascade on a downscaled, equalised grey frame.

    A Haar box covers brows to mouth and is wider than S3FD's (which reaches the chin);
    HAAR_MAP moves it to where S3FD puts its box, so the padded crop holds the chin, as
    Wav2Lip's training crops do.

    A full-frame scan keeps the most confident face (the largest one is often a false
    positive: on the benchmark clip it jumped to the helmet in 22 of 217 frames, the most
    confident never). Scanning a whole frame costs more than the generator on a CPU, so
    once a face is found, only the region around it is scanned, at nearby sizes and with
    a looser threshold (false positives have little room there): a quarter of the cost,
    and far fewer lost frames (8 instead of 25 of 250 on the benchmark clip). The last
    face found stays the anchor for FOLLOW_FRAMES frames; then the whole frame is scanned.

    It is still a stateless detector, not a tracker: the anchor lives for one call only,
    starting from the caller's hint (`previous`, the last face found before the batch).
    It cannot follow a chosen face among several, or know a face it lost: that is what
    a `FaceTracker` is for.
    """

    name = "haar"
    batch_size = 4  # it works frame by frame; a small batch keeps few frames waiting
    MAX_SIDE = 480  # px: detection resolution (faces down to ~5% of the width); boxes are mapped back
    BOX_MAP = HAAR_MAP
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

    def _scan_near(self, grey: np.ndarray, previous: Box, scale: float):
        """Search the region around the previous face (its raw Haar box, in working pixels)."""
        x1, y1, x2, y2 = (v * scale for v in self.BOX_MAP.invert(previous))  # back to the cascade's own box
        fw, fh = x2 - x1, y2 - y1
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
        return Box.of(self.BOX_MAP.apply((x, y, x + fw, y + fh))).clipped(h, w)

    def detect(self, frames: Sequence[np.ndarray], previous: Detection = None) -> list[Detection]:
        results: list[Detection] = []
        anchor, age = previous, 0  # the last face found, and how many frames ago
        for frame in frames:
            found = self.detect_one(frame, anchor if age <= self.FOLLOW_FRAMES else None)
            results.append(found)
            anchor, age = (found, 0) if found is not None else (anchor, age + 1)
        return results


@dataclass(frozen=True)
class DetectorChoice:
    """The detector a job uses and why it was chosen (shown in the stats)."""

    detector: AnyDetector
    reason: str

    @property
    def name(self) -> str:
        return self.detector.name


def make_detector(name: str, device: str, batch_size: int = 16, allow_download: bool = True,
                  det_max_side: int = 0) -> DetectorChoice:
    """Build the detector `name` asks for on `device` ('auto' chooses; see the module docstring)."""
    from ..runtime.devices import torch_available, torch_missing
    from ..weights.locate import find_s3fd

    if name not in DETECTORS:
        raise LipSyncError(f"Unknown face detector '{name}'. Choose one of: {', '.join(DETECTORS)}.")
    if name == "haar":
        return DetectorChoice(HaarDetector(), "chosen with --detector haar")
    if name == "blazeface":
        return DetectorChoice(_blazeface(required=True), "chosen with --detector blazeface")
    if name == "auto" and device == "cpu":
        blazeface = _blazeface(required=False)
        if isinstance(blazeface, str):
            return DetectorChoice(HaarDetector(), f"{blazeface}; on a CPU S3FD takes seconds per frame")
        return DetectorChoice(blazeface, "on a CPU S3FD takes seconds per frame; --detector s3fd uses it anyway")
    if name == "s3fd" and not torch_available():
        raise torch_missing("The S3FD face detector", "use --detector blazeface or haar")
    weights = find_s3fd(download=allow_download)  # None without torch
    if weights:
        where = f"frames shrunk to {det_max_side} px" if det_max_side else "full-resolution frames"
        return DetectorChoice(S3FDDetector(weights, device, batch_size, det_max_side),
                              f"weights {weights}, on {device}, {where}")
    if name == "s3fd":
        raise LipSyncError("The S3FD face detector's weights (s3fd-619a316812.pth) are not available and could not "
                           "be downloaded. Put the file in weights/, or use --detector haar, which needs no download.")
    return DetectorChoice(HaarDetector(), "S3FD weights not found and not downloadable")


def _blazeface(required: bool):
    """A BlazeFaceTracker, or (when not `required`) why there is none, as a phrase for the stats."""
    try:
        from .blazeface_tracker import BlazeFaceTracker

        return BlazeFaceTracker()
    except LipSyncError:  # a damaged model file: its own sentence says what to do
        raise
    except Exception as err:  # OpenVINO not installed, or unable to load the model here
        missing = isinstance(err, ImportError)
        if required:
            raise LipSyncError(f"The BlazeFace detector needs OpenVINO, which is "
                               f"{'not installed' if missing else 'broken here'} ({type(err).__name__}: {err}). "
                               "Install it (pip install openvino), or use --detector haar.") from None
        return (f"OpenVINO is {'not installed' if missing else f'unusable ({type(err).__name__})'}, so OpenCV's "
                "Haar cascade is used")


_shared = BuildOnce(make_detector)


def get_detector(name: str, device: str, batch_size: int = 16, allow_download: bool = True,
                 det_max_side: int = 0) -> DetectorChoice:
    """The detector for these settings, built once per process and shared by jobs and the preview.

    Detectors and trackers keep no per-clip state (a tracker's is the caller's), so one instance serves
    concurrent jobs.
    """
    return _shared.get(name, device, batch_size, allow_download, det_max_side)
