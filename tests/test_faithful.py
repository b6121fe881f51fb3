"""With --blend box, our frames (before encoding) equal the official inference.py's data path."""

from __future__ import annotations

import media
import numpy as np
import pytest
from official_reference import official_frames

from lipsync import Options
from lipsync.faces.detectors import HaarDetector


def _compare(ours: list[np.ndarray], reference: list[np.ndarray]) -> None:
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        diff = np.abs(a.astype(int) - b.astype(int))
        # identical model output and paste; only the decoders (ffmpeg CLI vs OpenCV's ffmpeg) may differ by a level
        assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


@pytest.mark.parametrize("fps", ["25", pytest.param("30", marks=pytest.mark.slow),
                                 pytest.param("30000/1001", marks=pytest.mark.slow)])
def test_fixed_box_matches_official(engine, data_dir, tmp_path, captured, fps):
    face = media.make_face_video(tmp_path / "face.mp4", seconds=1.0, fps=fps)
    audio = media.write_wav(tmp_path / "a.wav", media.speech_samples(1.37, seed=3))
    box = (40, 200, 90, 230)
    result = engine.sync(str(face), str(audio), str(tmp_path / "out.mp4"), Options(box=box, wav2lip_batch_size=16))
    reference = official_frames(str(face), str(audio), engine.model, box=box)
    _compare(captured, reference)
    assert result.frames == len(reference)


@pytest.mark.slow
def test_detected_boxes_loop_when_audio_is_longer(engine, face_video, tmp_path, captured):
    """Audio (2.6 s) longer than the video (1.2 s): frames loop, boxes are padded and smoothed as the original."""
    haar = HaarDetector()
    audio = media.write_wav(tmp_path / "a.wav", media.speech_samples(2.6, rate=44100, seed=1), rate=44100, channels=2)
    options = Options(detector="haar", pads=(5, 15, 3, 7), wav2lip_batch_size=32)
    result = engine.sync(str(face_video), str(audio), str(tmp_path / "out.mp4"), options)
    reference = official_frames(str(face_video), str(audio), engine.model, detect=haar.detect,
                                pads=(5, 15, 3, 7))
    _compare(captured, reference)
    assert result.frames == len(reference) > 30  # more output frames than the clip has


def test_photo_matches_official(engine, face_photo, tmp_path, captured):
    speech = media.make_speech(tmp_path / "speech.wav", seconds=1.0)  # 25 frames: several smoothing windows
    haar = HaarDetector()
    engine.sync(str(face_photo), str(speech), str(tmp_path / "out.mp4"), Options(detector="haar"))
    reference = official_frames(str(face_photo), str(speech), engine.model, detect=haar.detect)
    _compare(captured, reference)


@pytest.mark.slow
def test_resize_crop_rotate_match_official(engine, speech, tmp_path, captured):
    """A sideways clip turned upright by --rotate, halved by --resize_factor and cropped by --crop."""
    import cv2

    sideways = (cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE) for f in media.pan_zoom_frames(30, (480, 360)))
    face = media.write_video(tmp_path / "sideways.mp4", sideways, 25, (360, 480))
    haar = HaarDetector()
    settings = dict(resize_factor=2, rotate=True, crop=(10, -1, 0, 200), nosmooth=True)
    engine.sync(str(face), str(speech), str(tmp_path / "out.mp4"), Options(detector="haar", **settings))
    reference = official_frames(str(face), str(speech), engine.model, detect=haar.detect, **settings)
    _compare(captured, reference)
    assert captured[0].shape == (170, 200, 3)
