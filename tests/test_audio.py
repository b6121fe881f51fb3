"""Mel spectrogram and the mapping of mel windows to video frames."""

from __future__ import annotations

import numpy as np
import pytest

import media
from lipsync import audio
from lipsync.errors import LipSyncError
from official_reference import official_chunks, official_mel


def test_window_starts_at_25_fps():
    starts = audio.window_starts(200, 25.0)
    assert starts[:6] == [0, 3, 6, 9, 12, 16]  # int(i * 3.2)
    assert starts[-1] == 200 - 16
    assert all(s + 16 <= 200 for s in starts)


@pytest.mark.parametrize("fps", [25.0, 30.0, 30000 / 1001, 24.0, 60.0])
def test_windows_match_official_chunking(fps):
    mel = np.random.default_rng(0).normal(size=(80, 803))
    ours = audio.mel_windows(mel, fps)
    theirs = official_chunks(mel, fps)
    assert len(ours) == len(theirs)
    assert np.allclose(ours, np.stack(theirs), atol=1e-6)


def test_ntsc_rate_differs_from_rounded_rate():
    """29.97 rounded is not 30000/1001: over a long clip the window starts drift apart."""
    exact = audio.window_starts(80 * 600, 30000 / 1001)
    rounded = audio.window_starts(80 * 600, 29.97)
    assert exact != rounded


def test_mel_matches_official(tmp_path):
    path = media.write_wav(tmp_path / "s.wav", media.speech_samples(1.5, rate=22050), rate=22050, channels=2)
    ours = audio.melspectrogram(audio.load_audio(str(path)))
    theirs = official_mel(str(path))
    assert ours.shape == theirs.shape == (80, int(1.5 * 16000) // 200 + 1)
    assert np.abs(ours - theirs).max() < 1e-3
    assert ours.min() >= -4 and ours.max() <= 4


def test_audio_from_a_video_sound_track(tmp_path):
    wav = media.write_wav(tmp_path / "s.wav", media.speech_samples(1.0))
    clip = media.make_face_video(tmp_path / "with_sound.mp4", seconds=1.0, audio=wav)
    samples = audio.load_audio(str(clip))
    assert abs(len(samples) - 16000) < 1600


def test_too_short_audio():
    with pytest.raises(LipSyncError, match="too short"):
        audio.window_starts(10, 25.0)


def test_video_without_sound_as_audio(face_video):
    with pytest.raises(LipSyncError, match="no sound track"):
        audio.load_audio(str(face_video))
