"""SyncNetInstance.evaluate's windows, fed to a network batch by batch in bounded memory.

The official evaluation (joonson/syncnet_python) stacks every frame of a clip as float64
and every MFCC frame, then cuts:
- lip window i: the 224x224 BGR frames i .. i+4 (0..255 floats), as (3, 5, 224, 224);
- audio window i: MFCC frames 4i .. 4i+19 (13 x 20; 100 MFCC frames per second against 25
  video frames per second, so both windows span 0.2 s from the same instant);
- for i from 0 to min(frames, samples // 640) - 6: the audio and the frame count trimmed to
  the shorter (640 samples is one frame at 16 kHz and 25 fps), less five frames.
Here the frames come from an iterator and are dropped once no later window needs them;
each batch of windows goes through the network and only its embeddings reach the offset
search (lipsync.scoring.distances), which keeps no more than it needs either.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from ..errors import LipSyncError
from ..results import SCORE_FPS
from .distances import Offsets, OffsetSearch, summarise
from .layout import LIP_FRAMES, LIP_SIZE, MFCC_STEPS
from .mfcc import SAMPLE_RATE, mfcc

SAMPLES_PER_FRAME = SAMPLE_RATE // SCORE_FPS  # 640: 16 kHz / 25 fps
MFCC_PER_FRAME = 4  # 100 MFCC frames per second / 25 video frames per second
SPARE_FRAMES = 1  # the official window count is one less than the frames allow (lastframe = min_length - 5)
MIN_FRAMES = LIP_FRAMES + SPARE_FRAMES  # the shortest clip that gives one window: 6 frames (0.24 s)

Progress = Callable[[str, int, int], None]  # (stage, done, total), as the sync pipeline reports


class Embedder(Protocol):
    """A SyncNet on some backend: both embeddings of a batch of windows (lipsync.scoring.backends)."""

    batch_size: int
    label: str

    def __call__(self, lips: np.ndarray, mfcc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """lips (B, 3, 5, 224, 224) float32 BGR 0..255, mfcc (B, 1, 13, 20) float32 -> two (B, 1024) arrays."""


def window_count(frames: int, samples: int) -> int:
    """Windows the official evaluation scores for `frames` video frames (25 fps) and `samples` samples (16 kHz)."""
    return max(0, min(frames, samples // SAMPLES_PER_FRAME) - LIP_FRAMES)


def lip_batch(frames: np.ndarray) -> np.ndarray:
    """(n + 4, 224, 224, 3) uint8 consecutive frames -> the n windows (n, 3, 5, 224, 224) float32."""
    windows = np.lib.stride_tricks.sliding_window_view(frames, LIP_FRAMES, axis=0)  # (n, 224, 224, 3, 5)
    return np.ascontiguousarray(windows.transpose(0, 3, 4, 1, 2), dtype=np.float32)


def audio_batch(cepstra: np.ndarray, start: int, count: int) -> np.ndarray:
    """(13, T) MFCCs -> the audio windows start .. start+count-1 as (count, 1, 13, 20) float32."""
    return np.stack([cepstra[None, :, MFCC_PER_FRAME * i:MFCC_PER_FRAME * i + MFCC_STEPS]
                     for i in range(start, start + count)]).astype(np.float32)


def evaluate(crops: Iterable[np.ndarray], pcm: np.ndarray, network: Embedder, vshift: int = 15,
             progress: Progress | None = None, expected_frames: int = 0) -> tuple[Offsets, int]:
    """The official scores of 224x224 BGR crops at 25 fps against 16 kHz int16 samples; returns them and the
    number of windows scored. Reads no more crops than the audio can use."""
    progress = progress or (lambda stage, done, total: None)
    samples = len(pcm)
    audio_frames = samples // SAMPLES_PER_FRAME
    if audio_frames < MIN_FRAMES:
        raise LipSyncError(f"The sound is too short to score ({samples / SAMPLE_RATE:.2f} s): SyncNet needs at least "
                           f"{MIN_FRAMES * SAMPLES_PER_FRAME / SAMPLE_RATE:.2f} s.")
    cepstra = mfcc(pcm).T.astype(np.float32)  # (13, T): the official casts to float32 before the network
    total = window_count(expected_frames or audio_frames, samples)
    search = OffsetSearch(vshift)
    held: deque[np.ndarray] = deque()  # frames from window `done` on
    done = seen = 0
    batch = max(1, network.batch_size)

    def run(count: int) -> None:
        nonlocal done
        frames = np.stack([held[k] for k in range(count + LIP_FRAMES - 1)])
        lips, audio = network(lip_batch(frames), audio_batch(cepstra, done, count))
        search.add(lips, audio)
        for _ in range(count):
            held.popleft()
        done += count
        progress("Scoring lip sync", done, max(total, done))

    for crop in crops:
        if crop.shape != (LIP_SIZE, LIP_SIZE, 3) or crop.dtype != np.uint8:
            raise ValueError(f"crops must be {LIP_SIZE}x{LIP_SIZE} BGR uint8, not {crop.shape} {crop.dtype}")
        held.append(crop)
        seen += 1
        # window i counts once frame i + 5 exists (and the audio reaches as far)
        if seen - MIN_FRAMES + 1 - done >= batch:
            run(batch)
        if seen >= audio_frames:
            break
    ready = window_count(seen, samples) - done
    if ready > 0:
        run(ready)
    if done == 0:
        raise LipSyncError(f"The video is too short to score ({seen} frames at 25 fps): SyncNet needs at least "
                           f"{MIN_FRAMES} (0.24 s).")
    return summarise(search.finish(), vshift), done
