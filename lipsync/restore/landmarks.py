"""Five face landmarks (eye centres, nose tip, mouth corners) per frame, for aligning a face restorer.

Why MediaPipe's face mesh: its model (`face_landmark.tflite`, 1.2 MB, 468 points, Apache-2.0)
is bundled with the package (lipsync/assets), and OpenVINO reads TFLite files directly, so it
runs without mediapipe and without a download. Run as MediaPipe's
`FaceLandmarkCpu` graph runs it (mediapipe/modules/face_landmark/*.pbtxt):
- the region of interest is a square, 1.5 times the face's longer side, turned so the eyes
  are level: from a detection box for a first look, then from the first look's own points
  (`FaceLandmarkLandmarksToRoi`: their bounding box, rotation from point 33 to point 263);
- that square is warped to a 192x192 RGB tensor in [0, 1] (edges replicated);
- output: 468 (x, y, z) in tensor pixels, and a face-presence logit (sigmoid > 0.5: a face).
Here each frame gets both looks (box, then its own points) instead of MediaPipe's
"previous frame's points", so a frame's landmarks never depend on the one before; the
steadiness comes from `Smoother`, applied after.

A face that is not found, too small or turned too far gives None: the caller keeps the
unrestored mouth for that frame.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from ..assets import asset_path
from ..geometry import Box
from ..runtime.concurrency import BuildOnce

MODEL_NAME = "face_landmark.tflite"
INPUT_SIDE = 192  # the mesh model's input, pixels
ROI_SCALE = 1.5  # the square region around the face, times its longer side (MediaPipe's value)
PRESENCE_THRESHOLD = 0.5  # sigmoid of the face flag (face_landmark_cpu.pbtxt)
MIN_EYE_DISTANCE = 12.0  # pixels between the eye centres: below this the face is too small to align
MAX_NOSE_OFFSET = 0.35  # |nose position between the eyes - 0.5| above this: turned too far (about 40 degrees)

# The mesh points that make the five landmarks, in the FFHQ template's order (image left to right):
# the eye on the left of the image (the person's right eye), the other eye, the nose tip, the mouth corners.
EYE_LEFT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)  # eye contour
EYE_RIGHT = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 1, 61, 291
ROTATION_FROM, ROTATION_TO = 33, 263  # outer eye corners: the ROI's rotation (face_landmark_landmarks_to_roi)


@dataclass(frozen=True)
class Roi:
    """A square region of a frame, turned by `angle` (radians, clockwise on screen, as MediaPipe's rects)."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0

    def to_tensor(self) -> np.ndarray:
        """The 2x3 affine map from frame pixels to the model's 192x192 input (cv2's pixel-centre convention)."""
        c, s, half = math.cos(self.angle), math.sin(self.angle), self.side / 2
        ex, ey = np.array([c, s]) * half, np.array([-s, c]) * half
        centre = np.array([self.cx, self.cy])
        # the ROI's corners in continuous frame coordinates (pixel edges), and where they go in the tensor
        src = np.float32([centre - ex - ey, centre + ex - ey, centre - ex + ey]) - 0.5
        dst = np.float32([[0, 0], [INPUT_SIDE, 0], [0, INPUT_SIDE]]) - 0.5
        return cv2.getAffineTransform(src, dst)


def roi_from_box(box: Box) -> Roi:
    """A first look: the detection box's centre, 1.5 times its longer side, level."""
    cx, cy = box.centre
    return Roi(cx, cy, ROI_SCALE * max(box.width, box.height))


def roi_from_mesh(points: np.ndarray) -> Roi:
    """The second look, as MediaPipe tracks a face: the points' bounding box, squared, 1.5 times, turned so the
    outer eye corners are level."""
    low, high = points.min(axis=0), points.max(axis=0)
    dx, dy = points[ROTATION_TO] - points[ROTATION_FROM]
    angle = -math.atan2(-dy, dx)
    return Roi(float(low[0] + high[0]) / 2, float(low[1] + high[1]) / 2, ROI_SCALE * float((high - low).max()), angle)


def five_points(points: np.ndarray) -> np.ndarray:
    """(468, 2) mesh points -> (5, 2) float32: eye centres, nose tip, mouth corners (FFHQ template order)."""
    return np.float32([points[list(EYE_LEFT)].mean(axis=0), points[list(EYE_RIGHT)].mean(axis=0),
                       points[NOSE_TIP], points[MOUTH_LEFT], points[MOUTH_RIGHT]])


def rejection(five: np.ndarray) -> Optional[str]:
    """Why these five points should not be used ('small' or 'turned'), or None."""
    eyes = five[1] - five[0]
    distance = float(np.hypot(*eyes))
    if distance < MIN_EYE_DISTANCE:
        return "small"
    along = float(np.dot(five[2] - five[0], eyes)) / (distance * distance)  # 0.5: nose midway between the eyes
    if abs(along - 0.5) > MAX_NOSE_OFFSET or eyes[0] * (five[3] - five[0])[1] - eyes[1] * (five[3] - five[0])[0] <= 0:
        return "turned"  # the nose beside an eye, or the mouth above the eye line (upside down)
    return None


class FaceMesh:
    """The compiled face mesh model (shared); each user takes its own infer request (`request`)."""

    def __init__(self, path: Path) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1,
                                                          "INFERENCE_NUM_THREADS": 1})
        outputs = {tuple(o.get_partial_shape().to_shape())[-1]: o for o in self.compiled.outputs}
        self.points_output, self.flag_output = outputs[468 * 3], outputs[1]

    def request(self) -> Any:
        return self.compiled.create_infer_request()

    def look(self, request: Any, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """(468, 2) points in frame pixels and the face-presence score, within one region of interest."""
        matrix = roi.to_tensor()
        tensor = cv2.warpAffine(rgb, matrix, (INPUT_SIDE, INPUT_SIDE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        result = request.infer([np.ascontiguousarray(tensor[None], dtype=np.float32) / np.float32(255.0)])
        raw = np.asarray(result[self.points_output]).reshape(468, 3)[:, :2].astype(np.float64)
        score = 1.0 / (1.0 + math.exp(-float(np.asarray(result[self.flag_output]).ravel()[0])))
        back = cv2.invertAffineTransform(matrix)
        # the model's points are in continuous tensor coordinates: to cv2's convention, map back, and back again
        points = (raw - 0.5) @ back[:, :2].T + back[:, 2] + 0.5
        return points, score


_meshes = BuildOnce(lambda path: FaceMesh(Path(path)))


def face_mesh() -> FaceMesh:
    """The shared face mesh model (bundled in lipsync/assets, its SHA256 checked), loaded on first use."""
    return _meshes.get(str(asset_path(MODEL_NAME)))


class Landmarker:
    """Five landmarks per frame for one job (its own infer request: jobs may run at once)."""

    def __init__(self, mesh: FaceMesh | None = None) -> None:
        self.mesh = mesh or face_mesh()
        self.request = self.mesh.request()
        self.lock = threading.Lock()

    def mesh_points(self, frame: np.ndarray, box: Box) -> Optional[np.ndarray]:
        """The 468 mesh points of the face in `box` of a BGR frame (two looks), or None without a face."""
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        with self.lock:
            points, score = self.mesh.look(self.request, rgb, roi_from_box(box))
            if score < PRESENCE_THRESHOLD:
                return None
            points, score = self.mesh.look(self.request, rgb, roi_from_mesh(points))
        return points if score >= PRESENCE_THRESHOLD else None

    def __call__(self, frame: np.ndarray, box: Box) -> tuple[Optional[np.ndarray], str]:
        """(5, 2) landmarks of the face in `box`, or None with why: 'no face', 'small' or 'turned'."""
        if min(box.width, box.height) < MIN_EYE_DISTANCE:
            return None, "small"
        points = self.mesh_points(frame, box)
        if points is None:
            return None, "no face"
        five = five_points(points)
        reason = rejection(five)
        return (None, reason) if reason else (five, "")


class Smoother:
    """A One Euro filter (Casiez et al. 2012; MediaPipe smooths its landmarks with it) over the five points.

    Still faces get a low cut-off (the jitter of single-frame landmarks is removed), moving
    ones a higher one (little lag). Coordinates are taken in eye distances, so the same
    settings suit a 100 px face and a 1000 px one. A gap (a frame without landmarks) or a jump
    of more than half the eye distance in one frame (a cut, a looped clip starting over) starts over.
    """

    JUMP = 0.5  # eye distances a point may move in one frame before it counts as a cut

    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 3.0, d_cutoff: float = 1.0) -> None:
        self.rate, self.min_cutoff, self.beta, self.d_cutoff = fps, min_cutoff, beta, d_cutoff
        self.last: tuple[int, np.ndarray, np.ndarray] | None = None  # frame index, value, derivative

    def _alpha(self, cutoff: float | np.ndarray) -> float | np.ndarray:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * self.rate)

    def __call__(self, index: int, five: np.ndarray | None) -> np.ndarray | None:
        if five is None:
            self.last = None
            return None
        x = five.astype(np.float64)
        if self.last is None or index != self.last[0] + 1:
            self.last = (index, x, np.zeros_like(x))
            return five
        _, previous, derivative = self.last
        unit = max(float(np.hypot(*(previous[1] - previous[0]))), 1.0)  # the eye distance: the face's scale
        if float(np.abs(x - previous).max()) > self.JUMP * unit:
            self.last = (index, x, np.zeros_like(x))
            return five
        a_d = self._alpha(self.d_cutoff)
        derivative = a_d * (x - previous) * self.rate / unit + (1 - a_d) * derivative
        a = self._alpha(self.min_cutoff + self.beta * np.abs(derivative))
        value = a * x + (1 - a) * previous
        self.last = (index, value, derivative)
        return value.astype(np.float32)
