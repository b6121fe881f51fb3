"""The live API: audio chunks in, frames out with their own audio; idle in silence; bounded; limited; one at a time."""

from __future__ import annotations

import itertools

import cv2
import media
import numpy as np
import pytest
from networks import shade_by_window

from lipsync import LipSyncError, Options
from lipsync.generator import ModelRunner
from lipsync.live.avatar import Avatar
from lipsync.live.session import LOOKAHEAD_SECONDS, LiveSession, LiveSync, choose_rate
from lipsync.media.audio import SAMPLE_RATE

OPTIONS = Options(detector="haar", blend="box", live_fps=25)


@pytest.fixture(scope="module")
def avatar(engine, face_photo) -> Avatar:
    return engine.prepare_avatar(str(face_photo), OPTIONS)


@pytest.fixture(scope="module")
def runner():
    return shade_by_window


@pytest.fixture(scope="module")
def speech_wav() -> np.ndarray:
    return media.speech_samples(1.2)


def pieces(samples: np.ndarray, sizes) -> list[np.ndarray]:
    out, i = [], 0
    for n in itertools.cycle(sizes):
        if i >= len(samples):
            return out
        out.append(samples[i: i + n])
        i += n


def run_sync(sync: LiveSync, chunks) -> list:
    frames = []
    for chunk in chunks:
        sync.push(chunk)
        frames += sync.take()
    return frames


def test_chunks_in_frames_out_each_with_its_own_audio(avatar, runner, speech_wav):
    sync = LiveSync(avatar, runner, fps=25, blend="box")
    frames = run_sync(sync, pieces(speech_wav, [320, 50, 1000, 7]))
    # frame i needs the audio up to i/25 + 0.2125 s: of 1.2 s, frames 0..24
    assert [f.index for f in frames] == list(range(25))
    assert [f.time for f in frames] == [i / 25 for i in range(25)]
    # audio and video leave together: each frame carries exactly its 40 ms of the input, in order
    assert all(len(f.audio) == 640 for f in frames)
    assert np.array_equal(np.concatenate([f.audio for f in frames]), speech_wav[: 25 * 640])
    assert frames[0].image.shape == avatar.frames[0].shape and frames[-1].speaking


def test_the_chunking_does_not_change_a_frame(avatar, runner, speech_wav):
    one = run_sync(LiveSync(avatar, runner, fps=25, blend="box"), [speech_wav])
    many = run_sync(LiveSync(avatar, runner, fps=25, blend="box"), pieces(speech_wav, [160, 999, 33]))
    assert len(one) == len(many) and all(np.array_equal(a.image, b.image) for a, b in zip(one, many))


def test_a_speaking_live_frame_is_the_frame_a_job_makes(engine, avatar, face_photo, tmp_path, captured):
    """Same window, same crop, same model: once the mouth has faded in, live frame i is the job's frame i."""
    wav = media.speech_samples(1.2)
    speech = media.write_wav(tmp_path / "s.wav", wav)
    engine.sync(str(face_photo), str(speech), str(tmp_path / "job.mp4"), OPTIONS)
    frames = run_sync(LiveSync(avatar, ModelRunner(engine.network, "cpu"), fps=25, blend="box"), [wav])
    full = [f for f in frames if f.weight == 1.0]
    assert len(full) >= 15
    diff = max(int(np.abs(f.image.astype(int) - captured[f.index].astype(int)).max()) for f in full)
    assert diff <= 1, diff  # the same network on batches of 4 instead of 8: at most one level of rounding


def test_silence_and_microphone_hiss_leave_the_avatar_idle_without_running_the_model(avatar, runner):
    calls = []

    def counting(crops, mels):
        calls.append(len(crops))
        return runner(crops, mels)

    sync = LiveSync(avatar, counting, fps=25, blend="box")
    hiss = np.random.default_rng(0).normal(0, 10 ** (-62 / 20), SAMPLE_RATE).astype(np.float32)  # -62 dBFS
    frames = run_sync(sync, pieces(np.concatenate([np.zeros(SAMPLE_RATE, np.float32), hiss]), [640]))
    assert len(frames) == 45 and calls == []
    assert all(f.weight == 0 and np.array_equal(f.image, avatar.frames[0]) for f in frames)


def test_speech_after_silence_fades_the_mouth_in_before_it_is_heard(avatar, runner):
    wav = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), media.speech_samples(0.8)])
    onset = np.argmax(np.abs(wav) > 10 ** (-45 / 20)) / SAMPLE_RATE  # the first sound over the idle threshold
    frames = run_sync(LiveSync(avatar, runner, fps=25, blend="box"), [wav])
    weights = [f.weight for f in frames]
    first = weights.index(next(w for w in weights if w > 0))
    assert weights[first: first + 4] == [0.25, 0.5, 0.75, 1.0]
    assert onset - LOOKAHEAD_SECONDS - 0.08 <= first / 25 and (first + 3) / 25 <= onset  # full before it is heard


def test_audio_nobody_takes_frames_for_is_dropped_not_hoarded(avatar, runner):
    sync = LiveSync(avatar, runner, fps=25, blend="box", max_backlog=1.0)
    for chunk in pieces(media.speech_samples(10.0), [1600]):
        sync.push(chunk)
        assert sync.samples - sync.span(sync.next_frame)[0] <= (LOOKAHEAD_SECONDS + 1.0) * SAMPLE_RATE
        assert sync.held_samples <= (LOOKAHEAD_SECONDS + 1.0) * SAMPLE_RATE + 1600
    frames = sync.take()
    assert sync.dropped_frames > 150 and 20 <= len(frames) <= 26  # about the last second's frames
    assert frames[0].index == sync.dropped_frames


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_silent_or_gone_microphone_gives_idle_frames_on_time_never_an_error(avatar, runner):
    session = LiveSession(LiveSync(avatar, runner, fps=25, blend="box"), clock=FakeClock(0.02))
    frames = list(itertools.islice(session.frames(), 12))
    assert [f.index for f in frames] == list(range(12))
    assert all(not f.speaking and not f.audio.any() and len(f.audio) == 640 for f in frames)
    session.push(media.speech_samples(1.0))  # the microphone comes back
    assert any(f.speaking for f in itertools.islice(session.frames(), 30))


def test_a_consumer_that_stopped_reading_gets_the_present_not_a_backlog(avatar, runner):
    clock = FakeClock(0.0)
    session = LiveSession(LiveSync(avatar, runner, fps=25, blend="box"), clock=clock)
    session.push(media.speech_samples(1.0))
    clock.now = 10.0  # ten seconds without reading, while the audio kept coming
    session.push(media.speech_samples(9.0))
    frame = next(session.frames())
    # no older than the clock, less the look-ahead, the grace for late audio (0.1 s) and the lag allowed (0.5 s)
    assert frame.time >= 10.0 - LOOKAHEAD_SECONDS - 0.6 - 0.04 and session.sync.dropped_frames == frame.index


def test_a_session_ends_at_its_time_limit_and_says_so(avatar, runner):
    released = []
    session = LiveSession(LiveSync(avatar, runner, fps=25), time_limit=3.0, release=lambda: released.append(1),
                          clock=FakeClock(1.0))
    assert len(list(session.frames())) < 10  # ends by itself
    with pytest.raises(LipSyncError, match="time limit of 3 s"):
        session.push(np.zeros(640, np.float32))
    session.close()
    assert session.closed


def test_one_live_session_per_engine_and_closing_frees_it(engine, avatar):
    first = engine.live(avatar, OPTIONS)
    with pytest.raises(LipSyncError, match="already running"):
        engine.live(avatar, OPTIONS)
    first.close()
    first.close()  # twice is harmless
    with engine.live(avatar, OPTIONS) as second:
        second.push(np.zeros(16000, np.float32))
        assert len(second.take()) == 20 and second.fps == 25
    with engine.live(avatar, OPTIONS):  # the `with` freed it
        pass


def test_an_avatar_without_a_face_is_refused_before_any_session(engine, avatar, tmp_path):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 180, np.uint8))
    with pytest.raises(LipSyncError, match="No face was found in the video or photo"):
        engine.live(str(blank), OPTIONS)
    engine.live(avatar, OPTIONS).close()  # the refusal kept no slot


def test_any_rate_and_layout_of_audio_is_taken(avatar, runner):
    session = LiveSession(LiveSync(avatar, runner, fps=25, blend="box"))
    stereo48k = np.repeat((media.speech_samples(1.0, rate=48000) * 32767).astype(np.int16)[:, None], 2, axis=1)
    for chunk in pieces(stereo48k, [4800]):
        session.push(chunk, sample_rate=48000)
    assert abs(session.sync.samples - SAMPLE_RATE) < 400  # the resampler holds back a few samples
    assert 19 <= len(session.take()) <= 20


def test_a_clip_avatar_loops_back_and_forth_without_a_jump(avatar):
    clip = Avatar(frames=tuple(avatar.frames[0] for _ in range(4)), boxes=(None,) * 4,
                  faces=np.zeros((4, 96, 96, 3), np.uint8), fps=25, source="", detector="")
    assert [clip.index_at(i / 25) for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


def test_the_frame_rate_is_lowered_where_the_generator_cannot_hold_it():
    assert choose_rate(100) == 25 and choose_rate(35) == 20 and choose_rate(24) == 12.5 and choose_rate(5) == 10
    assert choose_rate(5, requested=25) == 25


def test_a_host_slower_than_the_frame_rate_sends_late_frames_idle_and_keeps_the_sound(avatar, runner):
    clock = FakeClock(0.0)

    def slow(crops, mels):  # every model call takes a whole second of the session's clock
        clock.now += 1.0
        return runner(crops, mels)

    speech = media.speech_samples(1.2)
    session = LiveSession(LiveSync(avatar, slow, fps=25, blend="box", max_batch=2), clock=clock)
    session.push(speech)
    frames = list(itertools.islice(session.frames(max_lag=100.0), 25))
    assert [f.index for f in frames] == list(range(25))  # none dropped: the sound goes on, whole
    assert np.array_equal(np.concatenate([f.audio for f in frames]), speech[: 25 * 640])
    idle = [f for f in frames if not f.speaking]
    assert session.sync.late_frames >= 10 and len(idle) >= session.sync.late_frames and len(idle) < 25
    assert all(np.array_equal(f.image, avatar.frames[0]) for f in idle)


def test_a_frame_and_its_sound_cross_the_wire_in_one_message(avatar, runner, speech_wav):
    from lipsync.live.messages import FRAME, TEXT, live_frame_message, live_hello, read_live_frame, read_live_messages

    frame = run_sync(LiveSync(avatar, runner, fps=25, blend="box"), [speech_wav])[-1]
    session = LiveSession(LiveSync(avatar, runner, fps=25))
    stream = live_hello(session, "k") + live_frame_message(frame)
    (kind0, hello), (kind1, body) = read_live_messages(stream)
    assert kind0 == TEXT and b'"key": "k"' in hello and b'"fps": 25' in hello and kind1 == FRAME
    index, weight, image, audio = read_live_frame(body)
    assert index == frame.index and weight == frame.weight and image.shape == frame.image.shape
    assert np.abs(image.astype(int) - frame.image).mean() < 3  # JPEG
    assert np.abs(audio - frame.audio).max() < 1e-4  # 16-bit


@pytest.mark.parametrize("rate", [0, 1, 7999, 192001, 16000.5, float("nan"), "fast", None])
def test_a_push_at_a_rate_no_microphone_has_is_one_sentence_before_any_work(avatar, runner, rate):
    """A client declares the rate: 8000 samples said to be at 1 Hz would be resampled to 128 million."""
    session = LiveSession(LiveSync(avatar, runner, fps=25))
    with pytest.raises(LipSyncError, match="samples per second from 8000 to 192000"):
        session.push(np.zeros(8000, np.float32), sample_rate=rate)
    assert session.sync.samples == 0 and not session.closed  # nothing taken, the session goes on
    session.push(np.zeros(8000, np.int16), sample_rate=8000)  # a second at 8 kHz (the resampler keeps a few)
    assert session.sync.samples > 14000


def test_a_push_longer_than_the_backlog_or_of_odd_layout_is_refused(avatar, runner):
    session = LiveSession(LiveSync(avatar, runner, fps=25))
    with pytest.raises(LipSyncError, match="at most 30 s"):
        session.push(np.zeros(31 * 8000, np.float32), sample_rate=8000)
    with pytest.raises(LipSyncError, match="1 to 8 channels"):
        session.push(np.zeros((100, 9), np.float32))
    with pytest.raises(LipSyncError, match="1 to 8 channels"):
        session.push(np.zeros((10, 10, 2), np.float32))
    with pytest.raises(LipSyncError, match="1 to 8 channels"):
        session.push(np.array(["a", "b"]))
    session.push(np.zeros((1600, 2), np.int16), sample_rate=16000)  # stereo is fine


def _wav_bytes(rate: int, samples: np.ndarray, channels: int = 1, declared_frames: int | None = None) -> bytes:
    import struct

    data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    size = len(data) if declared_frames is None else declared_frames * 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    riff = struct.pack("<I", min(36 + size, 2**32 - 1))
    return b"RIFF" + riff + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data


def test_a_microphone_piece_is_read_within_bounds_whatever_its_header_says(tmp_path):
    """The compatible mode's pieces (WAV files Gradio received): the issue's 16 KB piece declaring 1 Hz, a header
    declaring 4 GB of samples, a big file and a file that is not WAV are each one sentence; a real piece reads."""
    import tracemalloc

    from lipsync.live.messages import read_microphone_piece

    one_hz = tmp_path / "one_hz.wav"
    one_hz.write_bytes(_wav_bytes(1, np.zeros(8000, np.float32)))
    tracemalloc.start()
    with pytest.raises(LipSyncError, match="1 samples per second"):
        read_microphone_piece(str(one_hz))
    assert tracemalloc.get_traced_memory()[1] < 1 << 20  # refused before any work: under a MiB at the peak
    tracemalloc.stop()
    liar = tmp_path / "liar.wav"
    liar.write_bytes(_wav_bytes(48000, media.speech_samples(0.25, rate=48000), declared_frames=2**31 - 100))
    samples, rate = read_microphone_piece(str(liar))  # what is there is read, not what is declared
    assert rate == 48000 and samples.shape == (12000, 1)
    big = tmp_path / "big.wav"
    big.write_bytes(_wav_bytes(48000, np.zeros(48000 * 11, np.float32)))
    with pytest.raises(LipSyncError, match="more than the 1,048,576 a live session takes"):
        read_microphone_piece(str(big))
    webm = tmp_path / "piece.webm"
    webm.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(100))
    with pytest.raises(LipSyncError, match="must be a WAV file"):
        read_microphone_piece(str(webm))
    stereo = tmp_path / "stereo.wav"
    media.write_wav(stereo, media.speech_samples(0.25, rate=44100), rate=44100, channels=2)
    samples, rate = read_microphone_piece(str(stereo))
    assert rate == 44100 and samples.shape == (11025, 2) and samples.dtype == np.int16


def test_a_streamed_microphone_piece_with_its_first_pieces_header_is_read_whole(tmp_path):
    """Gradio's page sends every piece with the header of the first (its declared length is that piece's)."""
    from lipsync.live.messages import read_microphone_piece

    first = _wav_bytes(48000, media.speech_samples(0.25, rate=48000))
    later = first[:44] + (media.speech_samples(0.5, rate=48000, seed=1) * 32767).astype("<i2").tobytes()
    piece = tmp_path / "later.wav"
    piece.write_bytes(later)
    samples, rate = read_microphone_piece(str(piece))
    assert rate == 48000 and samples.shape == (24000, 1)


def test_a_session_traces_where_each_frames_time_goes(avatar, runner):
    """The latency budget's server half: each frame's sample span, its look-ahead's end, and when it was planned and
    rendered; audio arrivals mapped back to the client's own sample numbers around silence put in for late audio."""
    from lipsync.live.trace import LiveTrace

    trace = LiveTrace()
    trace.pushed(1000)
    trace.pushed(1500, filled=500)  # 500 samples of silence stood in for late audio
    trace.pushed(2500)
    assert trace.source(999) == (trace.pushes[0][0], 999)
    assert trace.source(1200) is None  # silence: no client sample behind it
    assert trace.source(2000) == (trace.pushes[2][0], 1500)  # the client's sample 1500
    assert trace.source(2500) is None  # not there yet
    session = LiveSession(LiveSync(avatar, runner, fps=25), clock=FakeClock(0.01))
    session.push(media.speech_samples(1.0))
    made = list(itertools.islice(session.frames(), 10))
    traced = [session.trace.frames[f.index] for f in made]
    assert all(t.planned and t.rendered >= t.planned for t in traced)
    # each frame waited for 0.2 s of audio past its own start (its mel window's end), within a hop
    assert all(3200 <= t.needed_sample - t.first_sample < 3400 for t in traced)
