"""Live lip-sync: audio chunks in, synced frames out, each frame with the audio that plays with it.

Wav2Lip draws frame i from the mel window of the audio from frame i's time to 0.2 s after
it, so a frame can be made only once that much audio has arrived (`audio.LOOKAHEAD_SAMPLES`,
0.2125 s with the STFT's half window): no live Wav2Lip can answer sooner. Everything
after it is counted and kept small here: frames are made as soon as their window is in
(a few at a time, so the model's batch adds little wait), and a frame leaves together
with its own slice of the input audio, so the picture and the sound a client plays
are aligned by construction, however late both are.

`LiveSync` is the core, with no thread and no clock: push audio, take the frames it
completes. `LiveSession` (what `LipSync.live` returns) adds what a service needs:
any sample rate in, a wall clock that makes idle frames when the microphone is silent,
stalls or is gone (never an error), a bound on buffered audio (a client that stops
reading makes the session skip ahead, never grow), a time limit, and the engine's live
slot (one session per worker by default), freed on `close`.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from ..blend.paste import paste
from ..blend.pauses import LivePauses
from ..errors import LipSyncError
from ..generator import LazyModel, ModelRunner
from ..media.audio import HOP_LENGTH, LOOKAHEAD_SAMPLES, MEL_WINDOW, N_FFT, SAMPLE_RATE, MelStream, window_start
from ..options import Options
from .avatar import Avatar
from .trace import LiveTrace

if TYPE_CHECKING:
    from ..generator.network import Wav2Lip

LOOKAHEAD_SECONDS = LOOKAHEAD_SAMPLES / SAMPLE_RATE
LIVE_RATES = (25.0, 20.0, 12.5, 10.0)  # frame rates a session may choose, fastest first
# The generator, one face at a time, may take this share of a frame's time: in speech every frame needs it, and
# pasting, JPEG, the transport and (on the same machine) the browser need the rest. At 0.7 a 2-core host chose 25
# fps and fell behind in speech (the model waited 0.2 s a frame); at 0.6 it chose 12.5 fps and kept up (#31).
HEADROOM = 0.6
MAX_BACKLOG_SECONDS = 30.0  # audio held beyond the look-ahead (a speech synthesiser may push whole sentences)
STARVED_GRACE_SECONDS = 0.1  # how long past its time a frame waits for late audio before it goes out idle
LATE_SECONDS = 0.15  # a frame whose audio came in this long ago but the model has not started goes out idle
MAX_LAG_SECONDS = 0.5  # on the wall clock, frames this late are skipped with their audio: the session stays live
# What one push may hold, checked before any work (resampling and the mel are linear in it): rates a microphone,
# a browser or a sound file has, at most 8 channels, and no more than the backlog a session keeps anyway.
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 8
MAX_PUSH_SECONDS = MAX_BACKLOG_SECONDS


@dataclass(frozen=True)
class LiveFrame:
    """One output frame and the audio that plays with it."""

    index: int  # frames since the session started
    time: float  # seconds into the session where this frame and its audio begin
    image: np.ndarray  # BGR uint8, the avatar's frame with the mouth drawn (or its own mouth when idle)
    audio: np.ndarray  # float32 mono 16 kHz: this frame's span of the input (1/fps seconds)
    weight: float  # the generated mouth's share: 0 idle, 1 speaking, between them fading

    @property
    def speaking(self) -> bool:
        return self.weight > 0


@dataclass(frozen=True)
class _Planned:
    """What rendering a frame needs, taken from the stream's state (so rendering can run outside a lock)."""

    index: int
    avatar_index: int
    mel: np.ndarray  # (80, 16)
    audio: np.ndarray
    weight: float


class LiveSync:
    """Frames from audio as it arrives, without a thread or a clock (see the module docstring)."""

    def __init__(self, avatar: Avatar, runner: ModelRunner, fps: float, blend: str = "mouth", max_batch: int = 4,
                 max_backlog: float = MAX_BACKLOG_SECONDS) -> None:
        self.avatar, self.runner, self.fps, self.blend = avatar, runner, fps, blend
        self.max_batch, self.max_backlog = max_batch, max_backlog
        self._stream = MelStream()
        self._mel = np.zeros((80, 0))  # mel frames from index _mel_first on
        self._mel_first = 0
        self._audio = np.zeros(0, np.float32)  # input samples from index _audio_first on
        self._audio_first = 0
        self._pauses = LivePauses(fps)
        self.next_frame = 0  # the next frame to make
        self.dropped_frames = 0  # skipped with their audio: nobody read them in time, or too much audio waited
        self.late_frames = 0  # sent idle because the model could not start them in time
        self.faces_per_second = 0.0  # the generator's speed when the session started (0: not timed)

    @property
    def samples(self) -> int:
        """Input samples received so far (silence filled in included)."""
        return self._stream.samples

    @property
    def held_samples(self) -> int:
        """Input samples kept for frames still to come (bounded by the look-ahead and `max_backlog`)."""
        return len(self._audio)

    def span(self, index: int) -> tuple[int, int]:
        """The input samples that play with frame `index`."""
        return round(index * SAMPLE_RATE / self.fps), round((index + 1) * SAMPLE_RATE / self.fps)

    def window_start(self, index: int) -> int:
        """Frame `index`'s first mel frame, as the official code places it."""
        return window_start(index, self.fps)

    def needed_samples(self, index: int) -> int:
        """Input samples that must be in before frame `index` can be made (its window's last STFT frame)."""
        return max(self.span(index)[1], (self.window_start(index) + MEL_WINDOW - 1) * HOP_LENGTH + N_FFT // 2)

    def push(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono float samples; drops the oldest frames' audio past `max_backlog`."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, samples])
        mel = self._stream.push(samples)
        if mel.shape[1]:
            self._mel = np.concatenate([self._mel, mel], axis=1)
        limit = LOOKAHEAD_SAMPLES + self.max_backlog * SAMPLE_RATE
        while self.samples - self.span(self.next_frame)[0] > limit:
            self.next_frame += 1
            self.dropped_frames += 1
        self._trim()

    def skip_to(self, index: int) -> None:
        """Drop the frames before `index` with their audio (a consumer that fell behind catches up)."""
        if index > self.next_frame:
            self.dropped_frames += index - self.next_frame
            self.next_frame = index
            self._trim()

    def fill_silence(self, index: int) -> None:
        """Push zeros until frame `index` can be made: a stalled or silent input makes idle frames."""
        missing = self.needed_samples(index) - self.samples
        if missing > 0:
            self.push(np.zeros(missing, np.float32))

    def ready(self) -> int:
        """How many frames can be made now."""
        count, index = 0, self.next_frame
        while self.needed_samples(index) <= self.samples:
            count, index = count + 1, index + 1
        return count

    def take(self, limit: int | None = None) -> list[LiveFrame]:
        """Make the frames the audio so far allows (at most `limit`), in order."""
        return self.render(self.plan(limit))

    def plan(self, limit: int | None = None) -> list[_Planned]:
        """Take the next frames' inputs from the stream (the part that changes its state; quick)."""
        count = self.ready() if limit is None else min(limit, self.ready())
        planned = []
        for index in range(self.next_frame, self.next_frame + count):
            start = self.window_start(index)
            mel = self._mel[:, start - self._mel_first: start - self._mel_first + MEL_WINDOW].astype(np.float32)
            read_from = max(0, start * HOP_LENGTH - N_FFT // 2) - self._audio_first
            window = self._audio[read_from: (start + MEL_WINDOW - 1) * HOP_LENGTH + N_FFT // 2 - self._audio_first]
            a, b = self.span(index)
            planned.append(_Planned(index, self.avatar.index_at(index / self.fps), mel,
                                    self._audio[a - self._audio_first: b - self._audio_first].copy(),
                                    self._pauses.next_weight(window)))
        self.next_frame += count
        self._trim()
        return planned

    def idle_if_late(self, planned: list[_Planned], started_by: float) -> list[_Planned]:
        """`planned` with the speaking frames whose time is before `started_by` (seconds into the session) made
        idle, counted as late: the model cannot start them in time, so they go out with the avatar's own mouth."""
        late = {p.index for p in planned if p.weight > 0 and p.index / self.fps < started_by}
        self.late_frames += len(late)
        return [replace(p, weight=0.0) if p.index in late else p for p in planned]

    def render(self, planned: list[_Planned]) -> list[LiveFrame]:
        """Run the model on the frames that speak and paste their mouths (no stream state is touched)."""
        avatar = self.avatar
        talking = [p for p in planned if p.weight > 0 and avatar.boxes[p.avatar_index] is not None]
        faces: dict[int, np.ndarray] = {}
        for first in range(0, len(talking), self.max_batch):
            batch = talking[first: first + self.max_batch]
            out = self.runner(avatar.faces[[p.avatar_index for p in batch]], np.stack([p.mel for p in batch]))
            faces.update({p.index: face for p, face in zip(batch, out)})
        frames = []
        for p in planned:
            image = avatar.frames[p.avatar_index].copy()
            if p.index in faces:
                paste(self.blend, image, faces[p.index], avatar.boxes[p.avatar_index], p.weight)
            frames.append(LiveFrame(p.index, p.index / self.fps, image, p.audio, p.weight if p.index in faces else 0.0))
        return frames

    def _trim(self) -> None:
        """Forget audio and mel frames no frame to come will read."""
        start = self.window_start(self.next_frame)
        keep_audio = min(self.span(self.next_frame)[0], max(0, start * HOP_LENGTH - N_FFT // 2))
        if keep_audio > self._audio_first:
            self._audio = self._audio[keep_audio - self._audio_first:]
            self._audio_first = keep_audio
        if start > self._mel_first:
            self._mel = self._mel[:, start - self._mel_first:]
            self._mel_first = start


def choose_rate(faces_per_second: float, requested: float = 0.0) -> float:
    """The session's frame rate: the one asked for, or the fastest the generator holds with headroom, from its
    speed one face at a time (what a frame of speech waits for)."""
    if requested:
        return requested
    return next((rate for rate in LIVE_RATES if rate <= HEADROOM * faces_per_second), LIVE_RATES[-1])


def measure_speed(runner: ModelRunner, avatar: Avatar, batch: int, repeats: int = 2) -> float:
    """Faces per second of the generator on this avatar in batches of `batch` (the first call, a warm-up, is
    not counted)."""
    faces = avatar.faces[np.arange(batch) % len(avatar.faces)]
    mels = np.zeros((batch, 80, MEL_WINDOW), np.float32)
    runner(faces, mels)
    start = time.perf_counter()
    for _ in range(repeats):
        runner(faces, mels)
    return batch * repeats / max(time.perf_counter() - start, 1e-6)


def check_push(samples: np.ndarray, sample_rate: object) -> int:
    """The sample rate of a push as an int, or a LipSyncError saying what is wrong with the push (its rate, its
    layout or its length): a client declares the rate, and resampling a second of "1 Hz" audio to 16 kHz would
    take 16000 times the memory it sent."""
    try:
        rate = int(sample_rate)  # type: ignore[call-overload]
        whole = float(sample_rate) == rate  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        rate, whole = 0, False
    if not whole or not MIN_RATE <= rate <= MAX_RATE:
        raise LipSyncError(f"Live audio at {sample_rate!r} samples per second cannot be used: send a whole number "
                           f"of samples per second from {MIN_RATE} to {MAX_RATE} (16000 needs no resampling).")
    if samples.dtype.kind not in "iuf" or samples.ndim not in (1, 2) or \
            (samples.ndim == 2 and not 1 <= samples.shape[1] <= MAX_CHANNELS):
        raise LipSyncError(f"Live audio must be numbers shaped (samples,) or (samples, channels) with 1 to "
                           f"{MAX_CHANNELS} channels, not {samples.dtype} shaped {samples.shape}.")
    if len(samples) > MAX_PUSH_SECONDS * rate:
        raise LipSyncError(f"One push of live audio may hold at most {MAX_PUSH_SECONDS:g} s ({len(samples) / rate:.0f} "
                           "s were sent): push it in smaller pieces as it plays.")
    return rate


def _resampler(rate: int) -> Callable[[np.ndarray], np.ndarray]:
    """A streaming resampler to 16 kHz (continuous across chunks), or the identity at 16 kHz."""
    if rate == SAMPLE_RATE:
        return lambda x: x
    import soxr

    stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
    return lambda x: stream.resample_chunk(x)


class Ended(enum.Enum):
    """How a live session ended."""

    CLOSED = "closed"  # by its owner: the page stopped, the tab closed, `close()`
    TIME_LIMIT = "time limit"  # it ran for `time_limit` seconds
    READER_STOPPED = "reader stopped"  # its frames were not taken for a while (a transport's decision)


class LiveSession:
    """A running live session (see the module docstring). Use as a context manager, or call `close`."""

    def __init__(self, sync: LiveSync, time_limit: float = 0.0, release: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sync = sync
        self.time_limit = time_limit
        self._release = release
        self._clock = clock
        self._changed = threading.Condition()
        self._resamplers: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
        self.started = clock()
        self.ended: Ended | None = None  # how the session ended, once it has (`reason` says it in words)
        self.trace = LiveTrace()  # where each frame's time went (bounded; the latency budget reads it)

    @property
    def fps(self) -> float:
        return self.sync.fps

    @property
    def avatar(self) -> Avatar:
        return self.sync.avatar

    def elapsed(self) -> float:
        return self._clock() - self.started

    def push(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Add audio: float in [-1, 1] or integers, mono or (samples, channels) (averaged), at a rate from 8 to
        192 kHz, at most MAX_PUSH_SECONDS at once. Anything else is refused with a sentence before any work."""
        samples = np.asarray(samples)
        rate = check_push(samples, sample_rate)
        if samples.dtype.kind in "iu":
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
        samples = samples.astype(np.float32)
        if samples.ndim == 2:
            samples = samples.mean(axis=1, dtype=np.float32)
        with self._changed:
            self._check_open()
            if rate not in self._resamplers:  # made once per rate: it carries its state across chunks
                self._resamplers[rate] = _resampler(rate)
            resample = self._resamplers[rate]
            self.sync.push(resample(samples))
            self.trace.pushed(self.sync.samples)
            self._changed.notify_all()

    def take(self) -> list[LiveFrame]:
        """The frames the audio pushed so far completes (none is made from silence: see `frames`)."""
        with self._changed:
            self._check_open()
            planned = self.sync.plan()
        return self.sync.render(planned)

    def frames(self, grace: float = STARVED_GRACE_SECONDS, max_lag: float = MAX_LAG_SECONDS,
               late: float = LATE_SECONDS) -> Iterator[LiveFrame]:
        """Frames as they are made, on the wall clock. When audio is late by more than `grace` after a frame's
        window, silence stands in (the avatar idles) and the frame goes out. When the model falls behind (a
        slower host than the frame rate was chosen for), a frame whose audio has waited more than `late` goes
        out with the avatar's own mouth: the sound and the frame rate hold, only that mouth is missed. Frames
        more than `max_lag` behind the clock (a consumer that stopped reading for a while) are skipped with
        their audio. Ends when the session closes."""
        while True:
            with self._changed:
                behind = self._clock() - self.started - LOOKAHEAD_SECONDS - grace - max_lag
                self.sync.skip_to(int(behind * self.fps))
                index = self.sync.next_frame
                due = self.started + index / self.fps + LOOKAHEAD_SECONDS + grace
                while not self.closed and self.sync.ready() == 0 and self._clock() < due and not self.expired():
                    self._changed.wait(timeout=max(0.0, due - self._clock()))
                if self.end_if_expired():  # the condition's lock is re-entrant: close() takes it again
                    return
                if self.sync.ready() == 0:
                    before = self.sync.samples
                    self.sync.fill_silence(self.sync.next_frame)
                    self.trace.pushed(self.sync.samples, filled=self.sync.samples - before)
                planned = self.sync.plan(self.sync.max_batch)
                for p in planned:
                    self.trace.planned(p.index, self.sync.span(p.index)[0], self.sync.needed_samples(p.index) - 1,
                                       p.weight > 0)
            started_by = self._clock() - self.started - LOOKAHEAD_SECONDS - grace - late
            rendered = self.sync.render(self.sync.idle_if_late(planned, started_by))
            for frame in rendered:
                self.trace.mark(frame.index, "rendered")
            yield from rendered

    def close(self, why: Ended = None) -> None:  # type: ignore[assignment]
        """End the session and free its slot (idempotent; the first ending is the one kept)."""
        with self._changed:
            if self.ended is not None:
                return
            self.ended = why or Ended.CLOSED
            self._changed.notify_all()
        if self._release is not None:
            self._release()

    @property
    def closed(self) -> bool:
        return self.ended is not None

    @property
    def reason(self) -> str:
        """Why the session ended, as a person reads it ('' while it runs)."""
        if self.ended is Ended.TIME_LIMIT:
            return (f"The live session reached its time limit of {self.time_limit:.0f} s and was ended. Start a new "
                    "one, or raise the limit (--live_seconds, LIPSYNC_LIVE_SECONDS).")
        if self.ended is Ended.READER_STOPPED:
            return ("The live session was ended because its frames were no longer read (the page stopped reading or "
                    "lost its connection). Start a new one.")
        return "This live session has ended. Start a new one." if self.ended else ""

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def expired(self) -> bool:
        """Whether the time limit has passed (the session may not have noticed yet: see `end_if_expired`)."""
        return bool(self.time_limit) and self.elapsed() >= self.time_limit

    def end_if_expired(self) -> bool:
        """End the session if its time limit has passed; whether it has ended, for whatever reason. For a reader
        that cannot call `frames` (its consumer has stopped): the limit holds whoever drives the session."""
        if self.expired():
            self.close(Ended.TIME_LIMIT)
        return self.closed

    def _check_open(self) -> None:
        if self.end_if_expired():
            raise LipSyncError(self.reason)


class LiveSlots:
    """How many live sessions an engine runs at once (one per worker by default): a session holds the model's
    device for as long as it runs, so a second one would make both fall behind."""

    def __init__(self, count: int) -> None:
        self.count = max(1, int(count))
        self._free = threading.Semaphore(self.count)

    def acquire(self, wait: float = 0.0) -> Callable[[], None]:
        """A release function for one slot; waits up to `wait` seconds, then refuses with a sentence."""
        got = self._free.acquire(timeout=wait) if wait > 0 else self._free.acquire(blocking=False)
        if not got:
            raise LipSyncError(f"{'A live session is' if self.count == 1 else f'{self.count} live sessions are'} "
                               "already running here (one at a time, so that it keeps its frame rate). Try again when "
                               "it ends, or run lipsync on your own machine.")
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._free.release()

        return release


LIVE_BATCH = {"cpu": 4, "cuda": 8, "mps": 8}  # faces per model call: a few, so that no frame waits for many
BATCH_SECONDS = 0.15  # ... and no more than the model makes in this time, so a batch adds little wait


def start_session(avatar: Avatar, model: Wav2Lip | LazyModel, device: str, options: Options,
                  release: Callable[[], None]) -> LiveSession:
    """A live session on a prepared avatar: the model made ready and timed (its first call is the slow one),
    the frame rate chosen from that time unless the options fix it. `release` frees the session's slot."""
    runner = ModelRunner(model, device, options.precision, options.backend, latency=True)
    speed = measure_speed(runner, avatar, 1, repeats=4)  # one face at a time: the latency of a frame of speech
    batch = max(1, min(LIVE_BATCH.get(device.split(":")[0], 4), int(speed * BATCH_SECONDS)))  # ~BATCH_SECONDS
    sync = LiveSync(avatar, runner, choose_rate(speed, options.live_fps), options.blend, batch)
    sync.faces_per_second = speed
    return LiveSession(sync, options.live_seconds, release)
