"""Any audio (or video) file -> 16 kHz mono float32 -> mel spectrogram -> one window per frame.

The constants are those Wav2Lip was trained with (its `hparams.py`); the model only
understands mel spectrograms made exactly this way, so none of them is a setting.
"""

from __future__ import annotations

import subprocess

import librosa
import numpy as np
from scipy import signal

from .errors import LipSyncError
from .video import ffmpeg_exe, probe_media

SAMPLE_RATE = 16_000  # Hz
N_FFT = 800  # samples (50 ms)
HOP_LENGTH = 200  # samples (12.5 ms): 80 mel frames per second
WIN_LENGTH = 800  # samples
N_MELS = 80
FMIN = 55  # Hz
FMAX = 7600  # Hz
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100  # dB floor
REF_LEVEL_DB = 20  # dB subtracted after the floor
MAX_ABS_VALUE = 4.0  # mels are normalised to [-4, 4]

MEL_FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 80
MEL_WINDOW = 16  # mel frames the model sees per video frame (0.2 s)


def load_audio(path: str) -> np.ndarray:
    """Decode any file ffmpeg reads into 16 kHz mono float32.

    ffmpeg decodes at the file's own rate and channel count; the downmix (mean of the
    channels) and the resampling are done here the way `librosa.load(path, sr=16000)`
    does them, which is what the official code calls, so the samples match it.
    """
    info = probe_media(path)
    if not info.has_audio:
        raise LipSyncError(
            f"'{path}' has no sound track. Give an audio file (wav, mp3, m4a, ogg, flac, …) "
            "or a video that has sound as the audio input."
        )
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn",
           "-f", "f32le", "-acodec", "pcm_f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise LipSyncError(f"Could not decode the audio of '{path}' ({detail[0]}). "
                           "Convert it to WAV or MP3 and try again.")
    samples = np.frombuffer(proc.stdout, dtype=np.float32)
    channels = max(1, info.audio_channels)
    samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels)
    mono = samples.mean(axis=1, dtype=np.float32)
    if info.audio_rate and info.audio_rate != SAMPLE_RATE:
        mono = librosa.resample(mono, orig_sr=info.audio_rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


SILENCE_PEAK = 10 ** (-50 / 20)  # a peak under -50 dBFS: nothing a mouth could follow
MIN_SAMPLES = (MEL_WINDOW - 1) * HOP_LENGTH  # the shortest audio that gives one mel window (0.19 s)


def check_audio(wav: np.ndarray, path: str, max_seconds: float = 0.0, allow_silence: bool = False) -> None:
    """Refuse audio that would give a useless or unbounded job, with the way out in the message."""
    seconds = len(wav) / SAMPLE_RATE
    if len(wav) < MIN_SAMPLES:
        raise LipSyncError(f"The audio '{path}' is too short ({seconds:.2f} s): at least "
                           f"{MIN_SAMPLES / SAMPLE_RATE:.2f} s is needed to move the lips. Use a longer recording.")
    if max_seconds and seconds > max_seconds:
        raise LipSyncError(f"The audio lasts {seconds:.0f} s, over the limit of {max_seconds:.0f} s. Trim it, "
                           "or raise the limit (--max_seconds or LIPSYNC_MAX_SECONDS).")
    peak = float(np.abs(wav).max())
    if not allow_silence and peak < SILENCE_PEAK:
        level = f"peak {20 * np.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
        raise LipSyncError(f"The audio '{path}' is silent ({level}), so the mouth would not move. Use a recording "
                           "with speech, or allow silent audio (--allow_silence, or 'Allow silent audio' under "
                           "Advanced in the app) to sync it anyway.")


_MEL_BASIS: np.ndarray | None = None


def _mel_basis() -> np.ndarray:
    global _MEL_BASIS
    if _MEL_BASIS is None:
        _MEL_BASIS = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)
    return _MEL_BASIS


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised log-mel spectrogram, shape (80, frames), values in [-4, 4]."""
    emphasised = signal.lfilter([1, -PREEMPHASIS], [1], wav)
    spectrum = np.abs(librosa.stft(y=emphasised, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH))
    mel = np.dot(_mel_basis(), spectrum)
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    scaled = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def warm_up() -> None:
    """Run the mel code once on a little silence: librosa's first call costs about a second of set-up."""
    melspectrogram(np.zeros(SAMPLE_RATE // 4, dtype=np.float32))


def window_starts(n_mel_frames: int, fps: float) -> list[int]:
    """First mel frame of each video frame's window; the list length is the output frame count.

    Frame i starts at int(i * 80 / fps); once a window would run past the end, the last
    window is the final 16 mel frames and the video ends there (as the official code does).
    """
    if n_mel_frames < MEL_WINDOW:
        raise LipSyncError(
            f"The audio is too short: it must last at least {MEL_WINDOW / MEL_FRAMES_PER_SECOND:.2f} s "
            "(one mel window). Use a longer audio file."
        )
    step = MEL_FRAMES_PER_SECOND / fps
    starts = []
    i = 0
    while True:
        start = int(i * step)
        if start + MEL_WINDOW > n_mel_frames:
            starts.append(n_mel_frames - MEL_WINDOW)
            return starts
        starts.append(start)
        i += 1


def mel_windows(mel: np.ndarray, fps: float) -> np.ndarray:
    """All windows as one array, shape (frames, 80, 16), float32."""
    starts = window_starts(mel.shape[1], fps)
    return np.stack([mel[:, s: s + MEL_WINDOW] for s in starts]).astype(np.float32)
