"""Face detectors behind one interface, then the official padding and temporal smoothing.

Two detectors:
- 's3fd': S3FD through face-alignment, the detector Wav2Lip was trained with. Its
  weights (90 MB) are downloaded on first use, so it cannot run fully offline.
- 'haar': OpenCV's frontal-face Haar cascade, whose model ships inside the
  opencv-python wheel: it works with no download at all, fast on a CPU, but its boxes
  are not S3FD's (see README, "Face detectors").
'auto' picks S3FD when its weights are present or can be fetched, else Haar.

A detection is (x1, y1, x2, y2) in frame pixels, or None when a frame has no face.
"""

from __future__ import annotations

import sys
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

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        """One detection (the most confident face) per BGR frame."""


class S3FDDetector:
    """S3FD from face-alignment, fed BGR frames in batches like the official code.

    face-alignment flips the channels it is given before subtracting its means; the
    official vendored copy is given BGR, flips it too, then subtracts. Feeding BGR here
    therefore gives the network exactly the input it gets in the official code.
    """

    name = "s3fd"

    def __init__(self, weights_path: str, device: str, batch_size: int = 16) -> None:
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        self.device = device
        self.batch_size = max(1, batch_size)
        self._net = SFDDetector(device=device, path_to_detector=weights_path)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        import torch

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
                    x1, y1, x2, y2 = (int(v) for v in np.clip(boxes[0], 0, None)[:4])
                    results.append((x1, y1, x2, y2))
            start += len(chunk)
        return results


class HaarDetector:
    """OpenCV's Haar cascade, on a downscaled grey frame; the largest face wins.

    A Haar box covers brows to mouth, about 10% higher and shorter than S3FD's
    (which reaches the chin); the box is shifted down by CHIN_EXTENSION of its height so
    the padded crop holds the chin, as Wav2Lip's training crops do.
    """

    name = "haar"
    MAX_SIDE = 480  # px: detection resolution (faces down to ~5% of the width); boxes are mapped back
    CHIN_EXTENSION = 0.10

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml" if hasattr(cv2, "data") else ""
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise LipSyncError("OpenCV's Haar face model is missing (opencv-python 5 no longer ships it). "
                               "Install the pinned requirements: pip install -r requirements.txt")

    def detect_one(self, frame: np.ndarray) -> Detection:
        h, w = frame.shape[:2]
        scale = min(1.0, self.MAX_SIDE / max(h, w))
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        min_side = max(20, int(min(grey.shape) * 0.06))
        faces = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        if len(faces) == 0:
            return None
        x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3]) / scale
        shift = fh * self.CHIN_EXTENSION
        x1, y1, x2, y2 = x, y + shift, x + fw, y + fh + shift
        return int(max(0, x1)), int(max(0, y1)), int(min(w, x2)), int(min(h, y2))

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detection]:
        return [self.detect_one(f) for f in frames]


def make_detector(name: str, device: str, batch_size: int = 16, allow_download: bool = True) -> tuple[FaceDetector, str]:
    """The detector to use and a sentence saying which one and why."""
    from .weights import find_s3fd

    if name not in DETECTORS:
        raise LipSyncError(f"Unknown face detector '{name}'. Choose one of: {', '.join(DETECTORS)}.")
    if name == "haar":
        return HaarDetector(), "haar (OpenCV Haar cascade, chosen with --detector haar)"
    weights = find_s3fd(download=allow_download)
    if weights:
        return S3FDDetector(weights, device, batch_size), f"s3fd (face-alignment, weights {weights}, on {device})"
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


def crops_from_detections(detections: Sequence[Detection], pads: Sequence[int], height: int, width: int,
                          smooth: bool = True) -> list[Crop | None]:
    """Padded, smoothed crop boxes (y1, y2, x1, x2) per frame; None where no face was found.

    Smoothing runs over the frames that have a face, in order, so a frame without a
    face neither stops the job nor drags its neighbours' boxes.
    """
    found = [i for i, d in enumerate(detections) if d is not None]
    if not found:
        raise LipSyncError("No face was found in the video or photo. Use a clip where one face is clearly visible "
                           "and frontal, or give the face position with --box TOP BOTTOM LEFT RIGHT.")
    boxes = np.array([pad_detection(detections[i], pads, height, width) for i in found])
    if smooth:
        boxes = smooth_boxes(boxes)
    crops: list[Crop | None] = [None] * len(detections)
    for i, (x1, y1, x2, y2) in zip(found, boxes.tolist()):
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        crops[i] = (y1, y2, x1, x2)
    return crops
