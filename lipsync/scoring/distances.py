"""The offset search of SyncNet's evaluation, streamed: distances per frame and shift, then LSE-D, LSE-C, offset.

As the official `calc_pdist` and `evaluate` compute them (joonson/syncnet_python):
- the distance of lip window i to audio window i + s, for every shift s in -vshift..vshift,
  is torch's pairwise_distance: the Euclidean norm of (lip - audio + 1e-6); an audio window
  before the first or after the last counts as a zero vector (the official pads with zeros);
- the distances averaged over the frames give one curve over the shifts; its minimum is
  LSE-D, its median minus that minimum LSE-C, and `vshift - argmin` the AV offset in frames;
- each frame's confidence is the curve's median minus its own distance at the best shift,
  median-filtered over 9 frames with zeros beyond the ends (scipy.signal.medfilt).
The official keeps every embedding and builds the whole distance list at the end; here a
lip embedding is compared as soon as the audio embeddings `vshift` ahead of it exist, and
an audio embedding is dropped once no waiting lip can reach it: memory holds 2 x vshift +
one batch of embeddings, plus one row of 2 x vshift + 1 distances per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's eps, added to the difference
FRAMEWISE_KERNEL = 9  # frames of the median filter over the framewise confidence


def medfilt(values: np.ndarray, kernel: int) -> np.ndarray:
    """scipy.signal.medfilt(values, kernel) for 1-D data: the median of each odd-sized window, zeros past the ends."""
    if kernel % 2 != 1:
        raise ValueError("the kernel size must be odd")
    values = np.asarray(values, dtype=np.float64)
    half = kernel // 2
    padded = np.concatenate([np.zeros(half), values, np.zeros(half)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel), axis=1)


class OffsetSearch:
    """calc_pdist over a stream: `add` lip and audio embeddings of consecutive windows, then `finish`."""

    def __init__(self, vshift: int) -> None:
        if vshift < 0:
            raise ValueError("vshift must be >= 0")
        self.vshift = vshift
        self._lips: list[np.ndarray] = []  # lip embeddings still waiting for the audio vshift ahead
        self._lip_first = 0  # window index of _lips[0]
        self._audio: list[np.ndarray] = []  # audio embeddings some waiting lip can still reach
        self._audio_first = 0  # window index of _audio[0]
        self._audio_seen = 0  # audio windows added so far
        self._rows: list[np.ndarray] = []  # (lips, 2 vshift + 1) blocks of distances, in window order

    def add(self, lips: np.ndarray, audio: np.ndarray) -> None:
        """Embeddings (B, D) of the next B windows, lip and audio alike."""
        if len(lips) != len(audio):
            raise ValueError("lip and audio embeddings come in pairs, one of each per window")
        self._lips.extend(np.asarray(lips, dtype=np.float64))
        self._audio.extend(np.asarray(audio, dtype=np.float64))
        self._audio_seen += len(audio)
        self._compare(ready=max(0, self._audio_seen - self.vshift - self._lip_first), total=None)

    def finish(self) -> np.ndarray:
        """(windows, 2 vshift + 1) distances: row i, column j is lip window i against audio window i - vshift + j."""
        self._compare(ready=len(self._lips), total=self._audio_seen)
        width = 2 * self.vshift + 1
        return np.concatenate(self._rows) if self._rows else np.zeros((0, width))

    def _compare(self, ready: int, total: int | None) -> None:
        """Distances of the first `ready` waiting lips; audio at or past `total` (when known) is zeros."""
        if ready <= 0:
            return
        v = self.vshift
        first = self._lip_first
        lips = np.stack(self._lips[:ready])
        dim = lips.shape[1]
        lo, hi = first - v, first + ready - 1 + v  # audio windows these lips reach, inclusive
        reach = np.zeros((hi - lo + 1, dim))
        for index in range(max(lo, self._audio_first), min(hi + 1, self._audio_first + len(self._audio))):
            if total is None or index < total:
                reach[index - lo] = self._audio[index - self._audio_first]
        windows = np.lib.stride_tricks.sliding_window_view(reach, 2 * v + 1, axis=0)  # (ready, dim, 2v + 1)
        diff = lips[:, :, None] - windows + PAIRWISE_EPS
        self._rows.append(np.sqrt(np.einsum("idj,idj->ij", diff, diff)))
        del self._lips[:ready]
        self._lip_first += ready
        drop = max(0, min(len(self._audio), self._lip_first - v - self._audio_first))
        del self._audio[:drop]
        self._audio_first += drop


@dataclass(frozen=True, eq=False)
class Offsets:
    """What evaluate() prints, from the distances: offset (frames), LSE-D, LSE-C, and the per-frame confidence."""

    offset: int
    lse_d: float
    lse_c: float
    framewise: np.ndarray  # (windows,) confidence per window, median-filtered
    curve: np.ndarray  # (2 vshift + 1,) mean distance per shift, from -vshift (audio earlier) to +vshift


def summarise(dists: np.ndarray, vshift: int) -> Offsets:
    """The official evaluate()'s arithmetic on the (windows, 2 vshift + 1) distances."""
    if len(dists) == 0:
        raise ValueError("no window to score")
    curve = dists.mean(axis=0)
    best = int(np.argmin(curve))  # the first of equal minima
    median = float(np.median(curve))  # 2 vshift + 1 values: the middle one, as torch.median gives
    framewise = medfilt(median - dists[:, best], FRAMEWISE_KERNEL)
    return Offsets(vshift - best, float(curve[best]), median - float(curve[best]), framewise, curve)
