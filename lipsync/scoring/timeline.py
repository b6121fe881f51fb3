"""The sync timeline: SyncNet's framewise confidence as a strip, one column per output frame, red where the sync
is weak and green where it is strong, so a person sees where to look (beside the face timeline,
lipsync.faces.timeline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..faces.timeline import MAX_WIDTH, columns, strip
from ..results import SCORE_FPS

WEAK = np.array([200, 55, 45], np.float64)  # RGB at confidence 0 or less
MIDDLE = np.array([235, 175, 40], np.float64)  # at STRONG / 2 (3: LatentSync's floor for a usable clip)
STRONG_RGB = np.array([46, 170, 80], np.float64)  # at STRONG or more
UNSCORED = np.array([170, 170, 170], np.float64)  # frames no window reaches
STRONG = 6.0  # confidence drawn fully green (the paper's LSE-C for Wav2Lip on LRS2 is 7.8)
WINDOW_CENTRE = 2  # a window covers 25 fps frames i .. i+4: frame t is best described by the window from t - 2
SYNC_LEGEND = "Sync timeline (SyncNet's confidence: red 0 or less, amber 3, green 6 or more, grey not scored)"


def colour(confidence: np.ndarray) -> np.ndarray:
    """(n,) confidences -> (n, 3) RGB from WEAK through MIDDLE to STRONG_RGB (NaN: UNSCORED)."""
    c = np.asarray(confidence, np.float64)
    share = np.clip(np.nan_to_num(c, nan=0.0) / STRONG, 0.0, 1.0)[:, None]
    low = WEAK + (MIDDLE - WEAK) * np.clip(share * 2, 0, 1)
    high = MIDDLE + (STRONG_RGB - MIDDLE) * np.clip(share * 2 - 1, 0, 1)
    rgb = np.where(share < 0.5, low, high)
    return np.where(np.isnan(c)[:, None], UNSCORED, rgb)


def per_frame(framewise: Sequence[float], frames: int, fps: float) -> np.ndarray:
    """The confidence at each of `frames` output frames of `fps`: the window centred nearest its time (NaN when no
    window was scored)."""
    values = np.asarray(framewise, np.float64)
    if len(values) == 0 or frames <= 0:
        return np.full(max(frames, 0), np.nan)
    times = np.arange(frames) / (fps or SCORE_FPS)
    index = np.clip(np.round(times * SCORE_FPS - WINDOW_CENTRE).astype(int), 0, len(values) - 1)
    return values[index]


def sync_timeline(framewise: Sequence[float], frames: int, fps: float, height: int = 24,
                  max_width: int = MAX_WIDTH) -> np.ndarray:
    """An RGB uint8 image (height x width x 3): one column per output frame (up to `max_width`, then each column
    the mean confidence of its frames), coloured by confidence. Widened to at least 200 px, like the face
    timeline, so a short clip's strip stays visible."""
    values = per_frame(framewise, frames, fps)
    if values.size == 0:
        return np.full((height, 1, 3), UNSCORED, np.uint8)
    return strip(colour(columns(values, max_width, _mean)), height)


def _mean(values: np.ndarray) -> float:
    scored = values[~np.isnan(values)]
    return float(scored.mean()) if scored.size else float("nan")
