"""The face timeline: a strip with one column per frame, green where a face was found and synced, grey where
the frame passed through unchanged. Shows at a glance where (and whether) a clip lost its face."""

from __future__ import annotations

from typing import Sequence

import numpy as np

SYNCED = np.array([46, 170, 80], np.float64)  # RGB
PASSED = np.array([170, 170, 170], np.float64)  # RGB
MAX_WIDTH = 800  # px: longer clips share columns (a column's colour is the mix of its frames)


def face_timeline(face_frames: Sequence[bool], height: int = 24, max_width: int = MAX_WIDTH) -> np.ndarray:
    """An RGB uint8 image (height x width x 3) of `face_frames` (per frame: was a face synced).

    One column per frame up to `max_width` frames; beyond that each column covers several
    frames and is coloured by the share of them that had a face. Short clips are
    widened to at least 200 px so the strip stays visible.
    """
    faced = np.asarray(face_frames, np.float64).ravel()
    if faced.size == 0:
        return np.full((height, 1, 3), PASSED, np.uint8)
    width = min(max_width, faced.size)
    edges = np.linspace(0, faced.size, width + 1)
    share = np.array([faced[int(a):max(int(a) + 1, int(b))].mean() for a, b in zip(edges[:-1], edges[1:])])
    row = share[:, None] * SYNCED + (1 - share[:, None]) * PASSED
    repeat = max(1, -(-200 // width))  # a 25-frame photo job still gets a visible strip
    row = np.repeat(row, repeat, axis=0)
    return np.repeat(row[None].round().astype(np.uint8), height, axis=0)
