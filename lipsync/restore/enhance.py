"""Enhancing the mouth: a face restorer (GFPGAN v1.4) over the synced face, let in through the mouth mask only.

Wav2Lip paints a 96x96 face; blown up to the face box it is softer than the frame around
it. Per frame with a synced face:
1. five landmarks (eye centres, nose tip, mouth corners) of the original frame's face
   (lipsync.restore.landmarks), smoothed over time so the alignment does not shimmer;
2. the similarity transform (least squares: rotation, scale, shift) that maps them onto
   the FFHQ template GFPGAN was trained on, as facexlib's FaceRestoreHelper aligns faces
   for GFPGANer; the frame, with its synced mouth already pasted and colour-matched, is
   warped to the 512x512 aligned crop;
3. the restorer (lipsync.restore.backends), batched;
4. the restored face is warped back to frame coordinates and blended in through
   lipsync.blend.paste's mouth mask times the strength (and the pause cross-fade's weight): from
   the mask's first row down, and only where the mask is not 0. Above it (eyes, brows,
   forehead) the frame stays as the blend left it, bit for bit.
A frame whose landmarks fail (face too small, turned away, not found) keeps the
unrestored mouth and is counted; nothing aborts the job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from ..blend.paste import mouth_mask
from ..geometry import Box
from ..runtime.timings import StageTimes
from .landmarks import Landmarker, Smoother

SIDE = 512  # the restorer's aligned crop
# facexlib's standard five landmarks of an FFHQ face at 512x512 (eyes, nose tip, mouth corners; image left first)
FFHQ_TEMPLATE = np.float32([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                            [201.26117, 371.41043], [313.08905, 371.15118]])
BORDER_GREY = (135, 133, 132)  # what facexlib fills outside the frame with (BGR)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift; no reflection) that best maps `src` points onto `dst`,
    in the least-squares sense (Umeyama 1991, what skimage's SimilarityTransform estimates).

    facexlib asks cv2.estimateAffinePartial2D with LMEDS, which refines its fit by least
    squares over the points it keeps: the same transform when all five agree (a test checks
    it), but a point it drops in one frame and keeps in the next makes the crop jump; least
    squares keeps all five, so the crop moves smoothly with the landmarks.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sv) @ d) / a.var(axis=0).sum())
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - matrix[:, :2] @ mu_s
    return matrix


def aligned_crop(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The 512x512 aligned face (BGR uint8), as facexlib warps it (bilinear, grey outside the frame)."""
    return cv2.warpAffine(frame, matrix, (SIDE, SIDE), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_GREY)


def network_input(crops: np.ndarray) -> np.ndarray:
    """(B, 512, 512, 3) BGR uint8 -> (B, 3, 512, 512) RGB float32 in [-1, 1], as GFPGANer prepares a face."""
    x = crops[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray(x / np.float32(127.5) - np.float32(1.0))


def network_output(out: np.ndarray) -> np.ndarray:
    """(B, 3, 512, 512) RGB -> (B, 512, 512, 3) BGR float32 in [0, 255], clipped to [-1, 1] first as GFPGANer does
    (not rounded: it is blended next)."""
    rgb = (np.clip(out, -1.0, 1.0) + 1.0) * np.float32(127.5)
    return np.ascontiguousarray(rgb[:, ::-1].transpose(0, 2, 3, 1))


def put_back(frame: np.ndarray, restored: np.ndarray, matrix: np.ndarray, crop: Box, share: float) -> None:
    """Blend the restored 512x512 face back into `frame` (in place) through the crop's mouth mask x `share`.

    Only rows from the mask's first non-zero row down, inside the frame, are read or written,
    and a pixel whose mask is 0 keeps its exact value.
    """
    mask, first = mouth_mask(crop.height, crop.width)
    height, width = frame.shape[:2]
    y1, y2 = max(first, -crop.y1), min(crop.height, height - crop.y1)
    x1, x2 = max(0, -crop.x1), min(crop.width, width - crop.x1)
    if y1 >= y2 or x1 >= x2 or share <= 0:
        return
    top, left = crop.y1 + y1, crop.x1 + x1
    inverse = cv2.invertAffineTransform(matrix)
    inverse[:, 2] -= (left, top)  # straight into the region's own coordinates
    # the restored face and a channel of ones, warped together: the ones say how much of a pixel came from the crop
    face = np.concatenate([restored, np.ones((SIDE, SIDE, 1), np.float32)], axis=2)
    warped = cv2.warpAffine(face, inverse, (x2 - x1, y2 - y1), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = mask[y1:y2, x1:x2] * np.float32(share) * warped[..., 3:]
    target = (slice(top, crop.y1 + y2), slice(left, crop.x1 + x2))
    region = frame[target].astype(np.float32)
    frame[target] = np.clip(region + alpha * (warped[..., :3] - region) + 0.5, 0, 255).astype(np.uint8)


@dataclass
class EnhanceCounts:
    """What the stage did in one job: faces restored, and faces kept unrestored by why."""

    restored: int = 0
    kept: dict[str, int] = field(default_factory=dict)  # 'small', 'turned', 'no face' -> frames

    @property
    def kept_total(self) -> int:
        return sum(self.kept.values())


class MouthEnhancer:
    """The stage for one job: `landmarks` on the original frames (the model thread, in output order), then
    `apply` on the same frames once the synced mouth is pasted."""

    def __init__(self, restorer: Any, strength: float, fps: float, timings: StageTimes,
                 landmarker: Landmarker | None = None) -> None:
        self.restorer, self.strength, self.timings = restorer, float(strength), timings
        self.landmarker = landmarker or Landmarker()
        self.smoother = Smoother(fps)
        self.counts = EnhanceCounts()

    @property
    def label(self) -> str:
        return self.restorer.label

    def landmarks(self, items: Sequence[tuple[int, np.ndarray, Box]]) -> list[Optional[np.ndarray]]:
        """Smoothed five landmarks for each (output index, original frame, crop), in output order; None where the
        face is too small, turned or not found (counted)."""
        found = []
        with self.timings.stage("enhance"):
            for index, frame, crop in items:
                five, why = self.landmarker(frame, crop)
                if five is None:
                    self.counts.kept[why] = self.counts.kept.get(why, 0) + 1
                found.append(self.smoother(index, five))
        return found

    def apply(self, items: Sequence[tuple[np.ndarray, Box, float, Optional[np.ndarray]]]) -> None:
        """Restore and blend in each (frame after the paste, crop, pause weight, landmarks) with landmarks."""
        todo = [(frame, crop, weight, similarity(five, FFHQ_TEMPLATE)) for frame, crop, weight, five in items
                if five is not None and weight > 0]
        if not todo:
            return
        with self.timings.stage("enhance"):
            crops = np.stack([aligned_crop(frame, matrix) for frame, _, _, matrix in todo])
            restored = network_output(self.restorer(network_input(crops)))
            for (frame, crop, weight, matrix), face in zip(todo, restored):
                put_back(frame, face, matrix, crop, self.strength * weight)
            self.counts.restored += len(todo)
