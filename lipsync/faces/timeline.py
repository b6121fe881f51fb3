"""The face timeline: a strip with one column per frame, green where a face was found and synced, grey where
the frame passed through unchanged. Shows at a glance where (and whether) a clip lost its face."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

SYNCED = np.array([46, 170, 80], np.float64)  # RGB
PASSED = np.array([170, 170, 170], np.float64)  # RGB
MAX_WIDTH = 800  # px: longer clips share columns (a column's colour is the mix of its frames)
MIN_WIDTH = 200  # px: a short clip's strip (a 25-frame photo job) widened to stay visible


def face_timeline(face_frames: Sequence[bool], height: int = 24, max_width: int = MAX_WIDTH) -> np.ndarray:
    """An RGB uint8 image (height x width x 3) of `face_frames` (per frame: was a face synced).

    One column per frame up to `max_width` frames; beyond that each column covers several
    frames and is coloured by the share of them that had a face. Short clips are
    widened to at least 200 px so the strip stays visible.
    """
    faced = np.asarray(face_frames, np.float64).ravel()
    if faced.size == 0:
        return np.full((height, 1, 3), PASSED, np.uint8)
    share = columns(faced, max_width, np.mean)[:, None]
    return strip(share * SYNCED + (1 - share) * PASSED, height)


def columns(values: np.ndarray, max_width: int, reduce: Callable[[np.ndarray], float]) -> np.ndarray:
    """Per-frame `values` (at least one) in at most `max_width` columns, each column's frames reduced to one
    value (every column covers at least one frame). Shared with the sync timeline (lipsync.scoring.timeline)."""
    width = min(max_width, values.size)
    edges = np.linspace(0, values.size, width + 1)
    return np.array([reduce(values[int(a):max(int(a) + 1, int(b))]) for a, b in zip(edges[:-1], edges[1:])])


def strip(colours: np.ndarray, height: int) -> np.ndarray:
    """(width, 3) RGB colours, one per column, as an RGB uint8 strip `height` px tall, each column widened so the
    strip is at least MIN_WIDTH px."""
    row = np.repeat(colours, max(1, -(-MIN_WIDTH // len(colours))), axis=0)
    return np.repeat(row[None].round().astype(np.uint8), height, axis=0)
