"""Pasting the generated 96x96 face back into the frame.

'box' is the official paste: the generated face, resized to the crop, replaces the
crop's pixels outright (a visible seam where skin tones differ). 'feather' blends the
same pixels through a mask that fades out over the crop's outer margin, so the centre
of the crop is exactly the 'box' result and its border melts into the original.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

BLEND_MODES = ("box", "feather")
FEATHER_MARGIN = 0.12  # fraction of the crop's size over which the mask fades out


def paste_box(frame: np.ndarray, face: np.ndarray, crop: tuple[int, int, int, int]) -> None:
    """Resize the generated face to the crop (cv2 default, bilinear) and overwrite it, in place."""
    y1, y2, x1, x2 = crop
    frame[y1:y2, x1:x2] = cv2.resize(face, (x2 - x1, y2 - y1))


@lru_cache(maxsize=64)
def feather_mask(height: int, width: int) -> np.ndarray:
    """A (h, w, 1) float32 mask: 1 inside, easing to 0 at the crop's edges (smoothstep ramps)."""
    def ramp(n: int) -> np.ndarray:
        margin = max(1.0, n * FEATHER_MARGIN)
        pos = np.arange(n, dtype=np.float32) + 0.5
        t = np.clip(np.minimum(pos, n - pos) / margin, 0.0, 1.0)
        return t * t * (3 - 2 * t)

    return (ramp(height)[:, None] * ramp(width)[None, :])[..., None]


def paste_feather(frame: np.ndarray, face: np.ndarray, crop: tuple[int, int, int, int]) -> None:
    y1, y2, x1, x2 = crop
    resized = cv2.resize(face, (x2 - x1, y2 - y1)).astype(np.float32)
    alpha = feather_mask(y2 - y1, x2 - x1)
    region = frame[y1:y2, x1:x2].astype(np.float32)
    frame[y1:y2, x1:x2] = np.clip(region + alpha * (resized - region) + 0.5, 0, 255).astype(np.uint8)


def paste(mode: str, frame: np.ndarray, face: np.ndarray, crop: tuple[int, int, int, int]) -> None:
    (paste_box if mode == "box" else paste_feather)(frame, face, crop)
