"""MFCCs as python_speech_features.mfcc(signal, 16000) computes them with its defaults, in numpy alone.

SyncNet's audio tower was trained on these features, so every default is a fact to keep
(read from python_speech_features 0.6, base.py and sigproc.py):
- pre-emphasis 0.97 on the raw samples (int16 values, not scaled to [-1, 1]), the first sample kept;
- frames of 400 samples (25 ms) every 160 (10 ms), as many as start before the end plus
  one (1 + ceil((n - 400) / 160), one for n <= 400), the last padded with zeros;
- no analysis window (a rectangular one: the default winfunc is ones);
- power spectrum |rfft(frame, 512)|^2 / 512; its sum per frame is the frame energy;
- 26 triangular mel filters from 0 Hz to 8 kHz, mel = 2595 log10(1 + hz / 700), band
  edges at FFT bins floor(513 * hz / 16000);
- zeros replaced by float64's epsilon before each log; a type-II orthonormal DCT of the
  log filter energies, the first 13 kept (scipy's dct(norm='ortho'), restated as a matrix:
  the lean install has no scipy);
- a sine lifter of 22, then the first coefficient replaced by the log frame energy.
The frames are processed a block at a time, so memory does not grow with the audio's length
beyond the (13, T) result itself.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16_000  # Hz
FRAME = 400  # samples per analysis frame (winlen 0.025 s)
STEP = 160  # samples between frames (winstep 0.01 s): 100 MFCC frames per second
NFFT = 512
FILTERS = 26
CEPSTRA = 13
LIFTER = 22
PREEMPHASIS = 0.97
BLOCK_FRAMES = 1024  # frames computed at once (a few MB of float64 framing and spectra)


def frame_count(samples: int) -> int:
    """How many MFCC frames `samples` samples give (python_speech_features' framesig)."""
    if samples <= FRAME:
        return 1
    return 1 + -(-(samples - FRAME) // STEP)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (mel / 2595.0) - 1)


@functools.lru_cache(maxsize=1)
def filterbank() -> np.ndarray:
    """(26, 257): the triangular mel filters over the FFT bins, rising then falling between band edges."""
    mels = np.linspace(_hz_to_mel(0), _hz_to_mel(SAMPLE_RATE / 2), FILTERS + 2)
    edges = np.floor((NFFT + 1) * _mel_to_hz(mels) / SAMPLE_RATE)
    bank = np.zeros((FILTERS, NFFT // 2 + 1))
    for j in range(FILTERS):
        low, centre, high = edges[j], edges[j + 1], edges[j + 2]
        for i in range(int(low), int(centre)):
            bank[j, i] = (i - low) / (centre - low)
        for i in range(int(centre), int(high)):
            bank[j, i] = (high - i) / (high - centre)
    return bank


@functools.lru_cache(maxsize=1)
def dct_matrix() -> np.ndarray:
    """(13, 26): the first 13 rows of the orthonormal DCT-II, so that `x @ dct_matrix().T` is scipy's
    dct(x, type=2, norm='ortho')[:, :13]."""
    n = np.arange(FILTERS)
    k = np.arange(CEPSTRA)[:, None]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * FILTERS))
    scale = np.full((CEPSTRA, 1), np.sqrt(2.0 / FILTERS))
    scale[0] = np.sqrt(1.0 / FILTERS)
    return basis * scale


def _lifter() -> np.ndarray:
    return 1 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(CEPSTRA) / LIFTER)


def mfcc(samples: np.ndarray) -> np.ndarray:
    """(T, 13) float64 MFCCs of 16 kHz mono samples (int16 values, as SyncNet's evaluation reads them)."""
    signal = np.asarray(samples, dtype=np.float64).ravel()
    total = frame_count(len(signal))
    emphasised = np.empty(max(len(signal), 1))
    emphasised[:len(signal)] = signal
    if len(signal) > 1:
        emphasised[1:] = signal[1:] - PREEMPHASIS * signal[:-1]
    out = np.empty((total, CEPSTRA))
    eps = np.finfo(float).eps
    bank, dct, lift = filterbank(), dct_matrix(), _lifter()
    for start in range(0, total, BLOCK_FRAMES):
        stop = min(total, start + BLOCK_FRAMES)
        lo, hi = start * STEP, (stop - 1) * STEP + FRAME
        chunk = np.zeros(hi - lo)
        have = emphasised[lo:min(hi, len(signal))]
        chunk[:len(have)] = have
        frames = np.lib.stride_tricks.sliding_window_view(chunk, FRAME)[::STEP]
        power = 1.0 / NFFT * np.square(np.absolute(np.fft.rfft(frames, NFFT)))
        energy = np.sum(power, 1)
        energy = np.where(energy == 0, eps, energy)
        feat = np.dot(power, bank.T)
        feat = np.where(feat == 0, eps, feat)
        cepstra = np.log(feat) @ dct.T * lift
        cepstra[:, 0] = np.log(energy)
        out[start:stop] = cepstra
    return out
