"""Pauses in the speech -> one blend weight per output frame, so a silent face keeps its own mouth.

Wav2Lip moves the mouth of output frame i from the audio of its mel window, the 0.2 s
from frame i's time on (16 mel frames from int(i * 80 / fps), lipsync.media.audio). A frame is
*quiet* when that whole window is quiet: every 12.5 ms hop of it (the mel hop, RMS over
25 ms) is under `SILENCE_DB` below the clip's loudest hop, or under `FLOOR_DBFS` outright.
A run of at least `MIN_PAUSE` seconds of quiet frames is a pause: there the frame keeps its
own mouth (weight 0), with `FADE_FRAMES` frames of cross-fade inside the pause at each end
that meets speech, so every frame whose window holds any speech keeps the full generated
mouth (weight 1) and the sync runs up to the first and last syllable. Quiet runs shorter
than that (the gaps between words) stay synced, so the mouth does not flap shut mid-phrase.

Why these numbers: speech's own quiet parts (the tails of fricatives, breathy onsets) lie
within about 30-35 dB of its vowels, while a pause in an ordinary recording (room tone, a
microphone's hiss) lies 45-60 dB below them; -40 dB sits between the two. Against a noisy
recording whose floor is within 40 dB of the speech, nothing is found quiet and the job is
synced throughout, as without this option. 0.3 s is longer than the gaps between words
and syllables (mostly under 0.25 s) and about the shortest pause one sees as the speaker
stopping. Three frames (0.12 s at 25 fps) are about the time a mouth takes to close.
"""

from __future__ import annotations

import numpy as np

from ..media.audio import HOP_LENGTH, MEL_WINDOW, window_starts

SILENCE_DB = -40.0  # a hop this far (dB) under the clip's loudest hop is quiet
FLOOR_DBFS = -60.0  # ... and so is any hop under this absolute level (whatever the loudest)
MIN_PAUSE = 0.3  # seconds of quiet frames that make a pause
FADE_FRAMES = 3  # frames of cross-fade inside a pause, at each end that meets speech
RMS_WINDOW = 2 * HOP_LENGTH  # samples (25 ms) over which each hop's loudness is measured


def hop_levels(wav: np.ndarray) -> np.ndarray:
    """RMS level (dBFS) of each mel hop: hop k covers samples [k*200 - 200, k*200 + 200), centred like the
    STFT's frames, so it lines up with mel frame k."""
    n_hops = len(wav) // HOP_LENGTH + 1
    padded = np.pad(wav.astype(np.float64), (RMS_WINDOW // 2, RMS_WINDOW))
    power = np.concatenate([[0.0], np.cumsum(padded * padded)])
    starts = np.arange(n_hops) * HOP_LENGTH
    mean_power = (power[starts + RMS_WINDOW] - power[starts]) / RMS_WINDOW
    return 10 * np.log10(np.maximum(mean_power, 1e-20))


def quiet_hops(wav: np.ndarray) -> np.ndarray:
    """Per mel hop: True where it is quiet (see the module docstring)."""
    levels = hop_levels(wav)
    if len(levels) == 0:
        return np.zeros(0, bool)
    return (levels < levels.max() + SILENCE_DB) | (levels < FLOOR_DBFS)


def frame_weights(wav: np.ndarray, fps: float, n_frames: int | None = None) -> np.ndarray:
    """One weight in [0, 1] per output frame (float32): 1 syncs the mouth, 0 keeps the frame's own.

    `wav` is the 16 kHz mono audio the mel windows were made from; the frames are those of
    `lipsync.media.audio.window_starts` (pass `n_frames`, the number of windows, to check they agree).
    """
    quiet = quiet_hops(wav)
    n_mel = len(wav) // HOP_LENGTH + 1  # what librosa's centred STFT gives
    starts = np.asarray(window_starts(n_mel, fps))
    if n_frames is not None:
        assert len(starts) == n_frames, (len(starts), n_frames)
    # a frame is quiet when all 16 hops of its window are: count the loud hops with a running sum
    loud = np.concatenate([[0], np.cumsum(~quiet[:n_mel])])
    quiet_frames = (loud[starts + MEL_WINDOW] - loud[starts]) == 0
    return pause_weights(quiet_frames, fps)


def pause_weights(quiet_frames: np.ndarray, fps: float) -> np.ndarray:
    """Weights from per-frame quietness: 0 inside runs of at least MIN_PAUSE s, cross-faded at the ends
    that meet speech, 1 elsewhere."""
    n = len(quiet_frames)
    weights = np.ones(n, np.float32)
    min_run = max(1, int(np.ceil(MIN_PAUSE * fps - 1e-9)))
    i = 0
    while i < n:
        if not quiet_frames[i]:
            i += 1
            continue
        j = i
        while j < n and quiet_frames[j]:
            j += 1
        if j - i >= min_run:  # frames i..j-1 are a pause
            for k in range(i, j):
                # distance to the speech on each side; the clip's start and end are not speech
                d = min(k - i + 1 if i > 0 else np.inf, j - k if j < n else np.inf)
                weights[k] = 0.0 if d > FADE_FRAMES else 1.0 - d / (FADE_FRAMES + 1)
        i = j
    return weights


LIVE_FLOOR_DBFS = -45.0  # live: a microphone's own noise (often -60 to -50 dBFS) never moves the mouth


class LivePauses:
    """The same idea for a live stream, decided as the audio arrives: a blend weight per frame, in order.

    A frame is voiced when some 25 ms of its mel window (0.2 s ahead of it) is within
    `SILENCE_DB` of the loudest 25 ms heard so far and above `LIVE_FLOOR_DBFS`. The mouth
    fades in over `FADE_FRAMES` from the first voiced window (the speech itself is still
    up to 0.2 s ahead then, so the fade is over when it is heard), stays through gaps
    shorter than `MIN_PAUSE`, then fades out; silence from the start is idle (weight 0).
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.peak_db = -np.inf
        self.quiet_frames = np.inf  # consecutive quiet frames so far: a session starts idle
        self.weight = 0.0

    def next_weight(self, window: np.ndarray) -> float:
        """The weight of the next frame, from the 16 kHz samples its mel window reads."""
        level = self._loudest(window)
        self.peak_db = max(self.peak_db, level)
        voiced = level >= max(LIVE_FLOOR_DBFS, self.peak_db + SILENCE_DB)
        self.quiet_frames = 0 if voiced else self.quiet_frames + 1
        target = 1.0 if self.quiet_frames < MIN_PAUSE * self.fps else 0.0
        step = 1.0 / (FADE_FRAMES + 1)
        self.weight = min(target, self.weight + step) if target > self.weight else max(target, self.weight - step)
        return self.weight

    @staticmethod
    def _loudest(window: np.ndarray) -> float:
        """The loudest 25 ms (RMS, dBFS) of `window`."""
        n = len(window) // RMS_WINDOW * RMS_WINDOW
        if n == 0:
            return -np.inf
        blocks = np.asarray(window[:n], np.float64).reshape(-1, RMS_WINDOW)
        power = float((blocks * blocks).mean(axis=1).max())
        return 10 * np.log10(max(power, 1e-20))
