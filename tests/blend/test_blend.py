"""Pasting the generated face: 'box' as the original, 'feather' soft at the edges only."""

from __future__ import annotations

import cv2
import media
import numpy as np
import pytest

from lipsync import Options
from lipsync.blend import pauses
from lipsync.blend.paste import alpha_map, mouth_mask, paste, paste_box, paste_feather, paste_mouth, seam_ratio
from lipsync.geometry import Box
from lipsync.media import video
from lipsync.media.probe import probe_media


def _frame_and_face():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)


def test_box_paste_is_a_resized_overwrite():
    frame, face = _frame_and_face()
    original = frame.copy()
    paste_box(frame, face, Box.from_tblr(10, 90, 20, 120))
    assert np.array_equal(frame[10:90, 20:120], cv2.resize(face, (100, 80)))
    outside = np.ones(frame.shape[:2], bool)
    outside[10:90, 20:120] = False
    assert np.array_equal(frame[outside], original[outside])


def test_feather_keeps_the_centre_and_fades_the_edges():
    frame, face = _frame_and_face()
    boxed, feathered = frame.copy(), frame.copy()
    paste_box(boxed, face, Box.from_tblr(10, 90, 20, 120))
    paste_feather(feathered, face, Box.from_tblr(10, 90, 20, 120))
    centre = (slice(30, 70), slice(40, 100))
    assert np.abs(boxed[centre].astype(int) - feathered[centre].astype(int)).max() <= 1
    edge_diff = np.abs(feathered[10, 20:120].astype(int) - frame[10, 20:120].astype(int))
    assert edge_diff.max() <= 2  # the outermost row is (almost) the original


# --- 'mouth': the lower face only, colour-matched; pauses keep the frame's own mouth -------------------------



def _astronaut_scene():
    """A real face (the astronaut, 256x256) and its box, and a 'generated' face: the box resized to 96x96
    (as blurred as the model's output) with its skin tone shifted, as the generator's often is."""
    frame = cv2.resize(media.astronaut_bgr(), (256, 256))
    crop = Box(78, 20, 150, 118)  # brows to chin
    face = cv2.resize(frame[crop.slices()], (96, 96)).astype(np.int16)
    face = np.clip(face + np.array([-18, 6, 28]), 0, 255).astype(np.uint8)  # warmer and brighter
    return frame, face, crop


def test_mouth_leaves_everything_outside_its_mask_bit_for_bit():
    frame, face = _frame_and_face()
    original = frame.copy()
    crop = Box.from_tblr(10, 90, 20, 120)
    paste_mouth(frame, face, crop)
    untouched = alpha_map("mouth", crop, *frame.shape[:2]) == 0
    assert np.array_equal(frame[untouched], original[untouched])
    assert np.array_equal(frame[:50], original[:50])  # the box's upper half (rows 10..49) and above: all kept
    assert not np.array_equal(frame[60:90], original[60:90])  # the mouth did change
    mask, first = mouth_mask(80, 100)
    assert first >= 40 and not mask[:first].any() and mask[-1].max() == 0 and mask[:, 0].max() == 0
    assert mouth_mask(80, 100)[0] is mask  # cached by size: the same box size gets the same mask


def test_mouth_adds_no_seam_where_box_does():
    frame, face, crop = _astronaut_scene()
    ratios = {}
    for mode in ("box", "feather", "mouth"):
        out = frame.copy()
        paste(mode, out, face, crop)
        ratios[mode] = seam_ratio(out, frame, alpha_map(mode, crop, *frame.shape[:2]))
    assert ratios["mouth"] <= 1.0, ratios  # no larger than the frame's own gradient there
    assert ratios["box"] > 1.1, ratios  # the measure does see the box's seam
    raw = frame.copy()
    paste_mouth(raw, face, crop, colour=False)
    assert seam_ratio(raw, frame, alpha_map("mouth", crop, *frame.shape[:2])) > ratios["mouth"]  # colour helps


def test_colour_match_brings_the_generated_skin_to_the_frame():
    frame, face, crop = _astronaut_scene()
    matched, raw = frame.copy(), frame.copy()
    paste_mouth(matched, face, crop)
    paste_mouth(raw, face, crop, colour=False)
    inside = alpha_map("mouth", crop, *frame.shape[:2]) > 0.5
    error = {name: np.abs(img[inside].astype(int) - frame[inside].astype(int)).mean(axis=0)
             for name, img in (("matched", matched), ("raw", raw))}
    assert error["matched"].max() < 0.5 * error["raw"].max(), error


# (crop, whether any pixel may change): boxes partly outside the frame still paste their visible lower half;
# boxes wholly outside, empty, or too small for the mask's feathered inside (a few px) leave the frame as it was.
EDGE_CASES = [(Box(-30, -20, 60, 70), True), (Box(0, 0, 160, 120), True), (Box(100, 40, 160, 120), True),
              (Box(250, 200, 330, 300), False), (Box(10, 10, 14, 13), False), (Box(50, 50, 51, 51), False),
              (Box(5, 5, 7, 90), False), (Box(-200, -200, -100, -100), False), (Box(20, 20, 20, 40), False)]


@pytest.mark.parametrize("crop, changes", EDGE_CASES)
def test_mouth_at_the_frame_edge_and_tiny_faces(crop, changes):
    frame = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    face = np.full((96, 96, 3), 7, np.uint8)
    original = frame.copy()
    for weight in (1.0, 0.5):
        paste("mouth", frame, face, crop, weight)
    changed = np.argwhere((frame != original).any(axis=2))
    assert bool(len(changed)) == changes
    if changes:  # only pixels of the box's lower half, inside the frame, ever change
        inside = crop.clipped(120, 160)
        assert changed[:, 0].min() >= inside.y1 and changed[:, 0].max() < inside.y2
        assert changed[:, 1].min() >= inside.x1 and changed[:, 1].max() < inside.x2
        assert changed[:, 0].min() >= crop.y1 + crop.height // 2


@pytest.mark.parametrize("mode", ["box", "feather", "mouth"])
def test_paste_weight_scales_the_paste(mode):
    frame, face = _frame_and_face()
    crop = Box.from_tblr(10, 90, 20, 120)
    full, half, none = frame.copy(), frame.copy(), frame.copy()
    paste(mode, full, face, crop, 1.0)
    paste(mode, half, face, crop, 0.5)
    paste(mode, none, face, crop, 0.0)
    assert np.array_equal(none, frame)
    expected = (frame.astype(float) + full.astype(float)) / 2
    assert np.abs(half - expected).max() <= 1.0


def test_pause_weights_fade_inside_the_pause_only():
    fps = 25
    quiet = np.array([1] * 10 + [0] * 20 + [1] * 12 + [0] * 5 + [1] * 4 + [0] * 10 + [1] * 15, bool)
    w = pauses.pause_weights(quiet, fps)
    assert (w[~quiet] == 1).all()  # every frame with speech in its window keeps the full mouth
    assert (w[:7] == 0).all() and w[7] == 0.25 and w[9] == 0.75  # the clip's start: no fade-in needed
    assert (w[33:39] == 0).all() and list(w[30:33]) == [0.75, 0.5, 0.25]
    assert (w[47:51] == 1).all()  # 4 quiet frames (0.16 s): a gap between words, still synced
    assert (w[-12:] == 0).all()  # the end


def test_pauses_found_in_speech_with_silences():
    rate = 16000
    wav = np.concatenate([np.zeros(rate // 2, np.float32), media.speech_samples(1.0, seed=1),
                          np.zeros(rate, np.float32), media.speech_samples(1.0, seed=2)])
    # room tone: -70 dBFS, 50 dB under the loudest speech
    wav += np.random.default_rng(0).normal(0, 3e-4, len(wav)).astype(np.float32)
    w = pauses.frame_weights(wav, 25)
    t = np.array([int(i * 80 / 25) / 80 for i in range(len(w))])
    speech = ((t + 0.2125 > 0.5) & (t - 0.0125 < 1.5)) | (t + 0.2125 > 2.5)
    assert (w[speech] == 1).all()
    assert (w[(t > 1.62) & (t < 2.18)] == 0).all() and (w[t < 0.2] == 0).all()


def test_frames_in_a_pause_are_the_input_frames(engine, tmp_path, captured, blend="mouth"):
    """0.5 s of speech, then 1 s of silence: the random model paints nonsense, but not in the pause."""
    from lipsync.media.audio import load_audio

    face = media.make_face_video(tmp_path / "face.mp4", seconds=1.6, fps=25)
    samples = np.concatenate([media.speech_samples(0.5, seed=3), np.zeros(16000, np.float32)])
    audio = media.write_wav(tmp_path / "a.wav", samples)
    options = Options(box=(40, 200, 90, 230), blend=blend, keep_silent_mouth=True, wav2lip_batch_size=8)
    result = engine.sync(str(face), str(audio), str(tmp_path / "out.mp4"), options)
    weights = pauses.frame_weights(load_audio(str(audio)), 25, result.frames)
    inputs = list(video.read_frames(probe_media(str(face))))
    assert len(captured) == result.frames == len(weights)
    assert result.frames_kept_in_pauses == int((weights == 0).sum()) >= 15
    assert "kept still in pauses" in result.summary()
    for i, (out, weight) in enumerate(zip(captured, weights)):
        if weight == 0:
            assert np.array_equal(out, inputs[i]), i
        elif weight == 1:
            assert not np.array_equal(out, inputs[i]), i
