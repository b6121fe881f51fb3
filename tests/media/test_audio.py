"""Mel spectrogram and the mapping of mel windows to video frames."""

from __future__ import annotations

import media
import numpy as np
import pytest
from official_reference import official_chunks, official_mel

from lipsync.errors import LipSyncError
from lipsync.media import audio


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


def test_mel_of_audio_in_pieces_is_the_offline_mel():
    """Live audio arrives in pieces of any size: each mel frame made from them is the offline one (up to the
    summation order of the BLAS product, 1e-15), and the model's float32 windows are identical."""
    from lipsync.media.audio import MEL_WINDOW, MelStream, mel_windows, melspectrogram, window_starts

    rng = np.random.default_rng(3)
    wav = (np.sin(np.arange(48000) * 0.05) * 0.3 + rng.standard_normal(48000) * 0.05).astype(np.float32)
    offline = melspectrogram(wav)
    for sizes in ([1, 7, 199, 200, 201, 640], [16000], [3]):
        stream, parts, i = MelStream(), [], 0
        while i < len(wav):
            n = sizes[len(parts) % len(sizes)]
            parts.append(stream.push(wav[i: i + n]))
            i += n
        pieces = np.concatenate(parts, axis=1)
        # every frame whose samples are all in: all but the last two, which the offline STFT pads with zeros
        assert pieces.shape[1] == len(wav) // 200 - 1 == offline.shape[1] - 2
        np.testing.assert_allclose(pieces, offline[:, : pieces.shape[1]], rtol=0, atol=1e-12)
        n = len(window_starts(pieces.shape[1], 25)) - 1  # windows that lie wholly inside
        assert np.array_equal(mel_windows(pieces, 25)[:n], mel_windows(offline, 25)[:n])
        assert pieces.shape[0] == 80 and MEL_WINDOW == 16


def test_a_piece_shorter_than_a_hop_gives_no_frame_yet():
    from lipsync.media.audio import MelStream

    stream = MelStream()
    assert stream.push(np.zeros(399, np.float32)).shape == (80, 0)  # frame 0 needs samples up to 400
    assert stream.push(np.zeros(1, np.float32)).shape == (80, 1)
