"""The sound's offset (--audio_offset): what the model hears (its mel windows) and the sound the output carries are
shifted alike, both ways; 'auto' shifts a finished result's sound by the offset SyncNet measured, in a remux that
copies the picture."""

from __future__ import annotations

from pathlib import Path

import media
import numpy as np
import pytest

from lipsync import pipeline
from lipsync.errors import LipSyncError
from lipsync.media.probe import probe_media
from lipsync.media.video import read_frames
from lipsync.options import Options
from lipsync.results import SyncScore
from lipsync.scoring.inputs import read_pcm16

FAST = dict(box=(50, 200, 60, 200), resize_factor=2)  # a fixed box on the photo: no detection, 256x256 frames
SHIFT_MS = 200  # 3200 samples: 16 mel frames exactly, 5 video frames at 25 fps


def bursts(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise in bursts of random lengths at random times: its cross-correlation with itself has one sharp peak (a
    syllable rhythm would repeat)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    envelope = np.zeros(n, np.float32)
    at = 0
    while at < n:
        length = int(rng.uniform(0.04, 0.25) * 16000)
        envelope[at:at + length] = rng.uniform(0.2, 0.6)
        at += length + int(rng.uniform(0.02, 0.2) * 16000)
    return (rng.normal(0, 1, n).astype(np.float32) * envelope).clip(-1, 1)


def lag(reference: np.ndarray, heard: np.ndarray, reach: int = 8000) -> int:
    """How many samples later `heard` carries `reference` (FFT cross-correlation, within +-`reach`)."""
    a, b = reference.astype(np.float64), heard.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = np.r_[np.arange(0, reach + 1), np.arange(-reach, 0)]
    return int(lags[np.argmax(corr[lags])])


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    return media.write_wav(tmp_path_factory.mktemp("offset") / "bursts.wav", bursts(2.0))


def run_job(engine, face: Path, sound: Path, out: Path, monkeypatch, **changes) -> tuple:
    """The job's result and the mel windows its model was given."""
    seen = {}
    synthesize = pipeline.synthesize

    def spy(source, windows, *args, **kwargs):
        seen["windows"] = windows.copy()
        return synthesize(source, windows, *args, **kwargs)

    monkeypatch.setattr(pipeline, "synthesize", spy)
    result = engine.sync(str(face), str(sound), str(out), Options(**FAST, **changes))
    return result, seen["windows"]


@pytest.fixture(scope="module")
def unshifted(engine, face_photo, sound, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        return run_job(engine, face_photo, sound, tmp_path_factory.mktemp("plain") / "plain.mp4", patch)


@pytest.mark.parametrize("ms", [SHIFT_MS, -SHIFT_MS])
def test_a_fixed_offset_shifts_the_mel_and_the_muxed_sound_alike(engine, face_photo, sound, unshifted, ms, tmp_path,
                                                                 monkeypatch):
    plain, plain_windows = unshifted
    result, windows = run_job(engine, face_photo, sound, tmp_path / "shifted.mp4", monkeypatch, audio_offset=ms)
    frames = ms // 40  # 25 fps
    assert result.frames == plain.frames + frames == len(windows) and result.audio_offset_ms == ms
    # what the model hears: window i + 5 of the delayed sound is window i of the plain one (-5 when advanced);
    # the first two are left out (the STFT pads the start), and the last (the final 16 mel frames)
    later, earlier = (windows, plain_windows) if ms > 0 else (plain_windows, windows)
    np.testing.assert_allclose(later[abs(frames) + 2:len(earlier) + abs(frames) - 1], earlier[2:-1], atol=1e-4)
    # what the output carries: its sound against the plain result's, both decoded as SyncNet reads them
    original = read_pcm16(str(sound))
    moved = lag(original, read_pcm16(result.outfile)) - lag(original, read_pcm16(plain.outfile))
    assert abs(moved - ms * 16) <= 2, moved
    assert f"sound shifted by {ms:+d} ms before syncing" in result.summary()


def test_offsets_are_checked_when_given():
    assert Options(audio_offset="Auto").auto_offset and Options(audio_offset="auto").audio_shift_ms == 0
    assert Options(audio_offset="-40").audio_shift_ms == -40 and Options(audio_offset=12.53).audio_shift_ms == 12.5
    assert Options(audio_offset="auto").scored and not Options().scored and Options(score=True).scored
    with pytest.raises(LipSyncError, match="must be a finite number or 'auto', not 'later'"):
        Options(audio_offset="later")
    with pytest.raises(LipSyncError, match="beyond the limit of ±10000 ms"):
        Options(audio_offset=-60_000)


def stand_in_score(offset: int, confidence: float) -> SyncScore:
    """What SyncNet would say of a result, fixed: the remux is tested, not the network (tests/scoring has that)."""
    return SyncScore(offset=offset, lse_d=6.0, lse_c=confidence, frames=40, framewise=np.full(40, confidence),
                     curve=np.zeros(31), vshift=15, crop="face", backend="stand-in")


@pytest.mark.parametrize("offset, confidence, fixed", [(2, 5.0, 80.0), (-3, 5.0, -120.0), (2, 2.9, 0.0),
                                                       (0, 9.0, 0.0)])
def test_auto_shifts_the_results_sound_by_the_measured_offset(engine, face_photo, sound, unshifted, offset,
                                                              confidence, fixed, tmp_path, monkeypatch):
    """Offset +2 (the sound two frames early) delays the sound by 80 ms; -3 advances it by 120 ms; a confidence
    under 3, or an offset of 0, leaves the result as it was made. The picture is copied, not made again."""
    import lipsync.engine
    import lipsync.scoring.job

    monkeypatch.setattr(lipsync.engine, "shared_syncnet", lambda *args, **kwargs: "a stand-in network")
    monkeypatch.setattr(lipsync.scoring.job, "score_video", lambda *args, **kwargs: stand_in_score(offset, confidence))
    plain, _ = unshifted
    result, _ = run_job(engine, face_photo, sound, tmp_path / "auto.mp4", monkeypatch, audio_offset="auto")
    assert result.offset_fixed_ms == fixed and result.score.offset == offset and result.audio_offset_ms == 0
    original, heard, before = read_pcm16(str(sound)), read_pcm16(result.outfile), read_pcm16(plain.outfile)
    moved = lag(original, heard) - lag(original, before)
    assert abs(moved - fixed * 16) <= 2, moved
    assert abs(len(heard) - len(before) - fixed * 16) <= 64  # the sound whole: longer by a delay, shorter by a cut
    info = probe_media(result.outfile)
    copied, made = list(read_frames(info)), list(read_frames(probe_media(plain.outfile)))
    assert len(copied) == len(made) and all(np.array_equal(a, b) for a, b in zip(copied, made))
    stats = result.stats_markdown()
    if fixed:
        assert f"Measured offset {offset:+d} frames fixed: sound shifted by {fixed:+.0f} ms in a remux" in stats
    elif offset:
        assert "left as it is: its confidence 2.90 is under 3" in stats
    else:
        assert "Measured offset 0: nothing to fix" in stats


def test_an_offset_that_cannot_be_fixed_keeps_its_score_and_says_so(engine, face_photo, sound, tmp_path, monkeypatch):
    """The remux that would fix a confident offset fails (a full disk, say): the video stays as made, its score
    stands, and the offset's clause says why it was not fixed, not that the sync went unscored or was unsure."""
    import lipsync.engine
    import lipsync.scoring.job

    def full_disk(*args, **kwargs):
        raise LipSyncError("No space left on the device.")

    monkeypatch.setattr(lipsync.engine, "shared_syncnet", lambda *args, **kwargs: "a stand-in network")
    monkeypatch.setattr(lipsync.scoring.job, "score_video", lambda *args, **kwargs: stand_in_score(2, 5.0))
    monkeypatch.setattr(lipsync.scoring.job, "remux_shifted_sound", full_disk)
    result, _ = run_job(engine, face_photo, sound, tmp_path / "auto.mp4", monkeypatch, audio_offset="auto")
    assert result.score is not None and not result.score_problem and result.offset_fixed_ms == 0
    assert result.offset_problem == "No space left on the device."
    assert result.offset_clause == "measured offset +2 frames not fixed: No space left on the device."
    assert "not scored" not in result.summary() and "LSE-C **5.00**" in result.stats_markdown()
    assert probe_media(result.outfile).has_audio
