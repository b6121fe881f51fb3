"""Any audio (or video) file -> 16 kHz mono float32 -> mel spectrogram -> one window per frame.

The constants are those Wav2Lip was trained with (its `hparams.py`); the model only
understands mel spectrograms made exactly this way, so none of them is a setting.
"""

from __future__ import annotations

import numpy as np

from ..errors import LipSyncError
from . import ffmpeg, limits
from .probe import probe_media

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


DECODE_CHUNK_BYTES = 1 << 22  # read ffmpeg's samples 4 MiB at a time, downmixing as they come


def load_audio(path: str, max_seconds: float = 0.0) -> np.ndarray:
    """Decode any file ffmpeg reads into 16 kHz mono float32, refusing audio over `max_seconds` early.

    ffmpeg decodes at the file's own rate and delivers exactly the channel count the
    probe read (or one channel, downmixed by ffmpeg, when the layout is unknown), so
    the interleaving is never guessed. The downmix (mean of the channels) and the
    resampling are done here the way `librosa.load(path, sr=16000)` does them, which is
    what the official code calls, so the samples match it. The length limit is checked
    on the header's duration before decoding, and the decode stops just past the limit
    in case the header lies, so a tiny file that unpacks to hours is never held whole.
    """
    info = probe_media(path)
    limits.check_sound(info, max_seconds, path)
    channels = info.audio_channels or 1
    rate = info.audio_rate or SAMPLE_RATE
    cmd = ffmpeg.command("-v", "error", *ffmpeg.input_args(path), "-map", "0:a:0", "-vn", "-ac", str(channels),
                         "-ar", str(rate))
    if max_seconds:
        cmd += ["-t", f"{max_seconds + 1:.3f}"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-"]
    mono = _decode_mono(cmd, channels, path)
    if rate != SAMPLE_RATE:
        mono = resample(mono, rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def shift(wav: np.ndarray, seconds: float) -> np.ndarray:
    """16 kHz samples shifted by `seconds` (whole samples): positive delays them behind silence, negative cuts their
    start. What ffmpeg.shift_filter does to the sound that is muxed, so the model hears what the output carries."""
    samples = round(seconds * SAMPLE_RATE)
    if samples > 0:
        return np.concatenate([np.zeros(samples, wav.dtype), wav])
    return wav[-samples:] if samples < 0 else wav


def resample(mono: np.ndarray, rate: float) -> np.ndarray:
    """librosa.resample(mono, orig_sr=rate, target_sr=16000) (soxr_hq, length fixed to ceil(n * ratio)), calling
    soxr directly: importing librosa's audio module (scipy.signal, numba) costs seconds."""
    import soxr

    n_samples = int(np.ceil(mono.shape[-1] * (float(SAMPLE_RATE) / rate)))
    out = soxr.resample(mono, rate, SAMPLE_RATE, quality="soxr_hq")
    out = out[:n_samples] if len(out) >= n_samples else np.pad(out, (0, n_samples - len(out)))
    return np.asarray(out, dtype=mono.dtype)


def _decode_mono(cmd: list[str], channels: int, path: str) -> np.ndarray:
    """Run the decoder, averaging its interleaved float samples to mono chunk by chunk."""
    frame = 4 * channels
    chunk = DECODE_CHUNK_BYTES - DECODE_CHUNK_BYTES % frame
    parts: list[np.ndarray] = []
    pending = b""
    for data in ffmpeg.stdout_pieces(cmd, chunk, lambda why: LipSyncError(
            f"Could not decode the audio of '{path}' ({why}). Convert it to WAV or MP3 and try again.")):
        data = pending + data
        usable = len(data) - len(data) % frame
        pending = data[usable:]
        samples = np.frombuffer(data[:usable], dtype=np.float32).reshape(-1, channels)
        parts.append(samples.mean(axis=1, dtype=np.float32))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


SILENCE_PEAK = 10 ** (-50 / 20)  # a peak under -50 dBFS: nothing a mouth could follow
MIN_SAMPLES = (MEL_WINDOW - 1) * HOP_LENGTH  # the shortest audio that gives one mel window (0.19 s)


def check_audio(wav: np.ndarray, path: str, max_seconds: float = 0.0, allow_silence: bool = False) -> None:
    """Refuse audio that would give a useless or unbounded job, with the way out in the message."""
    seconds = len(wav) / SAMPLE_RATE
    if len(wav) < MIN_SAMPLES:
        raise LipSyncError(f"The audio '{path}' is too short ({seconds:.2f} s): at least "
                           f"{MIN_SAMPLES / SAMPLE_RATE:.2f} s is needed to move the lips. Use a longer recording.")
    if max_seconds and seconds > max_seconds:
        raise limits.over_length(seconds, max_seconds)
    peak = float(np.abs(wav).max())
    if not allow_silence and peak < SILENCE_PEAK:
        level = f"peak {20 * np.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
        raise LipSyncError(f"The audio '{path}' is silent ({level}), so the mouth would not move. Use a recording "
                           "with speech, or allow silent audio (--allow_silence, or 'Allow silent audio' under "
                           "Advanced in the app) to sync it anyway.")


_MEL_BASIS: np.ndarray | None = None


_SLANEY_SP, _SLANEY_LOG_HZ, _SLANEY_LOGSTEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    """librosa.hz_to_mel (Slaney), for one frequency."""
    if hz >= _SLANEY_LOG_HZ:
        return _SLANEY_LOG_HZ / _SLANEY_SP + np.log(hz / _SLANEY_LOG_HZ) / _SLANEY_LOGSTEP
    return hz / _SLANEY_SP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """librosa.mel_to_hz (Slaney)."""
    min_log_mel = _SLANEY_LOG_HZ / _SLANEY_SP
    freqs = _SLANEY_SP * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mels[log_t] - min_log_mel))
    return freqs


def _mel_basis() -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600) (Slaney scale and norm, float32),
    computed the same way in numpy: importing librosa's filters and spectrum modules costs seconds at start-up."""
    global _MEL_BASIS
    if _MEL_BASIS is None:
        fftfreqs = np.fft.rfftfreq(n=N_FFT, d=1.0 / SAMPLE_RATE)
        mel_f = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
        fdiff = np.diff(mel_f)
        ramps = np.subtract.outer(mel_f, fftfreqs)
        weights = np.zeros((N_MELS, 1 + N_FFT // 2), dtype=np.float32)
        for i in range(N_MELS):
            weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
        weights *= (2.0 / (mel_f[2:N_MELS + 2] - mel_f[:N_MELS]))[:, np.newaxis]
        _MEL_BASIS = weights
    return _MEL_BASIS


def _hann_periodic(n: int) -> np.ndarray:
    """scipy.signal.get_window('hann', n, fftbins=True), as librosa.stft takes it."""
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    w += 0.5 * np.cos(0 * fac)
    w += 0.5 * np.cos(1 * fac)
    return w[:-1]


def stft_magnitude(y: np.ndarray) -> np.ndarray:
    """|librosa.stft(y, n_fft=800, hop_length=200, win_length=800)| (centred, zero-padded, periodic Hann window),
    frame for frame the same numpy FFT; shape (401, 1 + len(y) // 200)."""
    padded = np.pad(np.asarray(y), N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH].T  # (n_fft, frames)
    return np.abs(np.fft.rfft(_hann_periodic(WIN_LENGTH)[:, np.newaxis] * frames, axis=0))


def preemphasis(wav: np.ndarray) -> np.ndarray:
    """y[n] = x[n] - 0.97 x[n-1] in float64: bit for bit what the official scipy.signal.lfilter([1, -0.97], [1], wav)
    gives, without importing scipy.signal (seconds at start-up)."""
    x = np.asarray(wav, dtype=np.float64)
    out = np.empty_like(x)
    out[:1] = x[:1]
    np.subtract(x[1:], PREEMPHASIS * x[:-1], out=out[1:])
    return out


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised log-mel spectrogram, shape (80, frames), values in [-4, 4]."""
    return _normalised_mel(stft_magnitude(preemphasis(wav)))


def warm_up() -> None:
    """Run the mel code once on a little silence (the mel basis is built then; numpy only, no librosa since the
    STFT and the filters are computed here bit for bit as librosa does: its first call took about 3 s of imports)."""
    melspectrogram(np.zeros(SAMPLE_RATE // 4, dtype=np.float32))


def window_start(index: int, fps: float) -> int:
    """First mel frame of video frame `index`'s window (before the end of the audio is reached): the one formula
    for jobs (window_starts) and live streams (lipsync.live.session), so a live frame reads the job's window."""
    return int(index * (MEL_FRAMES_PER_SECOND / fps))


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
    starts = []
    i = 0
    while True:
        start = window_start(i, fps)
        if start + MEL_WINDOW > n_mel_frames:
            starts.append(n_mel_frames - MEL_WINDOW)
            return starts
        starts.append(start)
        i += 1


def mel_windows(mel: np.ndarray, fps: float) -> np.ndarray:
    """All windows as one array, shape (frames, 80, 16), float32."""
    starts = window_starts(mel.shape[1], fps)
    return np.stack([mel[:, s: s + MEL_WINDOW] for s in starts]).astype(np.float32)


LOOKAHEAD_SAMPLES = (MEL_WINDOW - 1) * HOP_LENGTH + N_FFT // 2  # audio past a frame's start its window reads (0.2125 s)


class MelStream:
    """The mel spectrogram of audio that arrives in pieces: each mel frame as soon as all its samples are in.

    Frame k of `melspectrogram` is centred on sample k * 200 and reads the pre-emphasised
    samples k*200-400 .. k*200+400 (zero before the start), and nothing else of the clip is
    involved (no normalisation over the whole clip): so a frame computed here from the
    samples received so far is the offline frame, computed the same way. Only the samples
    still needed by frames to come are kept (at most 800).
    """

    def __init__(self) -> None:
        self._tail = np.zeros(N_FFT // 2, np.float64)  # pre-emphasised samples from frame `frames`'s start
        self._last: float | None = None  # the previous raw sample, for pre-emphasis across pieces
        self.frames = 0  # mel frames produced so far
        self.samples = 0  # samples received so far

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono samples; returns the mel frames they complete, shape (80, k) (k may be 0)."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if len(x):
            emphasised = preemphasis(x)
            if self._last is not None:
                emphasised[0] = x[0] - PREEMPHASIS * self._last
            self._last = float(x[-1])
            self._tail = np.concatenate([self._tail, emphasised])
            self.samples += len(x)
        complete = 0 if len(self._tail) < N_FFT else 1 + (len(self._tail) - N_FFT) // HOP_LENGTH
        if complete == 0:
            return np.zeros((N_MELS, 0))
        frames = np.lib.stride_tricks.sliding_window_view(self._tail, N_FFT)[::HOP_LENGTH][:complete].T
        self._tail = self._tail[complete * HOP_LENGTH:]
        self.frames += complete
        return _normalised_mel(np.abs(np.fft.rfft(_hann_periodic(WIN_LENGTH)[:, np.newaxis] * frames, axis=0)))


def _normalised_mel(spectrum: np.ndarray) -> np.ndarray:
    """Magnitude spectrum (401, frames) -> Wav2Lip's normalised log-mel frames (80, frames) in [-4, 4]."""
    mel = np.dot(_mel_basis(), spectrum)
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    scaled = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)
