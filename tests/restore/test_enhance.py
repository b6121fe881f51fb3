"""Enhancing the mouth (--enhance): alignment, the way back through the mouth mask, the job, the weights."""

from __future__ import annotations

from pathlib import Path

import cv2
import media
import numpy as np
import pytest
from cli_runner import run_lipsync

from lipsync import LipSync, LipSyncError, Options
from lipsync.blend.paste import alpha_map, mouth_mask
from lipsync.geometry import Box
from lipsync.restore.enhance import (
    FFHQ_TEMPLATE,
    network_input,
    network_output,
    put_back,
    similarity,
)
from lipsync.weights import locate as weights

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT_BOX = Box(170, 60, 290, 215)  # her face, brows to chin (Box: x1, y1, x2, y2)


class InvertingRestorer:
    """A stand-in for GFPGAN that is cheap and impossible to miss: the aligned face in negative."""

    label = "stand-in"

    def __init__(self) -> None:
        self.faces = 0

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        assert faces.shape[1:] == (3, 512, 512) and faces.dtype == np.float32 and faces.min() >= -1
        self.faces += len(faces)
        return -faces


def test_similarity_recovers_a_known_transform_and_matches_facexlibs_opencv_call():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -40.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = (FFHQ_TEMPLATE - shift) @ np.linalg.inv(rotation).T  # points that the transform maps onto the template
    matrix = similarity(src, FFHQ_TEMPLATE)
    assert np.allclose(matrix[:, :2], rotation, atol=1e-9) and np.allclose(matrix[:, 2], shift, atol=1e-6)
    noisy = src + np.random.default_rng(0).normal(0, 0.5, src.shape)
    opencv = cv2.estimateAffinePartial2D(noisy.astype(np.float32), FFHQ_TEMPLATE, method=cv2.LMEDS)[0]
    assert np.abs(similarity(noisy, FFHQ_TEMPLATE) - opencv).max() < 1e-3  # five points agreeing: the same fit


def test_network_sees_rgb_in_minus_one_to_one_and_gives_bgr_back():
    crops = np.zeros((1, 512, 512, 3), np.uint8)
    crops[..., 0] = 255  # blue in BGR
    x = network_input(crops)
    assert x.shape == (1, 3, 512, 512) and x.dtype == np.float32
    assert x[0, 2].min() == 1.0 and x[0, :2].max() == -1.0  # RGB: blue is the last channel, at +1
    back = network_output(np.concatenate([x * 3, x], axis=0))  # out of range first: clipped to [-1, 1]
    assert back.shape == (2, 512, 512, 3) and np.array_equal(back[0], back[1]) and back[0, ..., 0].min() == 255


def test_put_back_writes_only_under_the_mouth_mask():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    crop = Box(200, 100, 320, 260)
    five = np.float32([[235, 160], [285, 160], [260, 190], [240, 220], [280, 220]])
    matrix = similarity(five, FFHQ_TEMPLATE)
    restored = np.full((512, 512, 3), 255.0, np.float32)
    out = frame.copy()
    put_back(out, restored, matrix, crop, 0.7)
    alpha = alpha_map("mouth", crop, *frame.shape[:2])
    changed = np.any(out != frame, axis=2)
    assert changed.any() and not changed[alpha == 0].any()  # nothing outside the mask, bit for bit
    assert not changed[: crop.y1 + mouth_mask(crop.height, crop.width)[1]].any()  # nor above its first row
    full = alpha == alpha.max()
    expected = frame[full].astype(np.float32) + 0.7 * (255 - frame[full].astype(np.float32))
    assert np.abs(out[full].astype(np.float32) - expected).max() <= 1.0  # the strength is the share
    same = frame.copy()
    put_back(same, restored, matrix, crop, 0.0)
    assert np.array_equal(same, frame)
    edge = frame.copy()
    put_back(edge, restored, matrix, Box(400, 250, 560, 420), 1.0)  # a box past the frame's corner: no error
    assert np.array_equal(edge[:250], frame[:250])


def _sync(engine, face, audio, out: Path, **settings):
    return engine.sync(str(face), str(audio), str(out), Options(**settings))


@pytest.fixture
def stand_in(monkeypatch):
    restorer = InvertingRestorer()
    monkeypatch.setattr(LipSync, "restorer", lambda self, options: (restorer, "") if options.enhance != "none"
                        else (None, ""))
    return restorer


@pytest.fixture(scope="module")
def clip_speech(data_dir):
    """0.6 s of speech (15 frames): enough frames for what these tests check, a quarter of a 2 s job's time."""
    return media.make_speech(data_dir / "speech_0.6s.wav", seconds=0.6)


@pytest.mark.parametrize("blend", ["mouth", pytest.param("box", marks=pytest.mark.slow)])
def test_the_upper_face_is_the_unenhanced_result_bit_for_bit(engine, face_photo, clip_speech, tmp_path, captured,
                                                            stand_in, blend):
    box = dict(box=ASTRONAUT_BOX.tblr, blend=blend)
    plain = _sync(engine, face_photo, clip_speech, tmp_path / "plain.mp4", **box)
    before = [f.copy() for f in captured]
    captured.clear()
    result = _sync(engine, face_photo, clip_speech, tmp_path / "enhanced.mp4", enhance="gfpgan", enhance_strength=0.8,
                   **box)
    assert result.frames == plain.frames == len(captured) == len(before) and stand_in.faces == result.frames
    alpha = alpha_map("mouth", ASTRONAUT_BOX, 512, 512)
    top = ASTRONAUT_BOX.y1 + mouth_mask(ASTRONAUT_BOX.height, ASTRONAUT_BOX.width)[1]
    for old, new in zip(before, captured):
        changed = np.any(old != new, axis=2)
        assert np.array_equal(old[:top], new[:top]) and not changed[alpha == 0].any()
        assert changed.sum() > 1000  # the mouth did change
    assert result.frames_enhanced == result.frames and result.frames_not_enhanced == {}
    assert result.seconds["enhance"] > 0 and "enhance" in result.stats_markdown()
    assert f"Mouth enhanced in {result.frames} frames" in result.stats_markdown()
    assert "strength 0.8" in result.summary()


@pytest.mark.slow  # a whole job with the restorer; the fast lane has one in test_the_upper_face...[mouth]
def test_a_face_too_small_for_landmarks_keeps_its_mouth_and_is_counted(engine, clip_speech, tmp_path, captured,
                                                                       stand_in):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(media.astronaut_bgr(), (64, 64), interpolation=cv2.INTER_AREA))
    box = dict(box=(8, 28, 21, 37), blend="mouth")  # top bottom left right: a 16x20 px face
    plain = _sync(engine, small, clip_speech, tmp_path / "plain.mp4", **box)
    before = [f.copy() for f in captured]
    captured.clear()
    result = _sync(engine, small, clip_speech, tmp_path / "enhanced.mp4", enhance="gfpgan", **box)
    assert result.frames == plain.frames and result.frames_enhanced == 0 and stand_in.faces == 0
    assert sum(result.frames_not_enhanced.values()) == result.frames
    assert set(result.frames_not_enhanced) <= {"small", "no face"}
    assert all(np.array_equal(a, b) for a, b in zip(before, captured))
    assert "kept unenhanced" in result.summary()


def test_without_weights_offline_the_job_runs_unenhanced_with_one_sentence(engine, face_photo, clip_speech, tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.delenv("LIPSYNC_GFPGAN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _sync(engine, face_photo, clip_speech, tmp_path / "out.mp4", enhance="gfpgan")
    assert Path(result.outfile).is_file() and result.frames_enhanced == 0
    problem = result.enhance_problem
    assert "GFPGANv1.4.pth" in problem and str(tmp_path / "weights") in problem and "--enhance none" in problem
    assert problem.count(". ") <= 1 and "Traceback" not in problem
    assert "not enhanced" in result.summary() and "not enhanced" in result.stats_markdown()


def test_a_damaged_weights_file_is_refused_by_its_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.delenv("LIPSYNC_GFPGAN", raising=False)
    (tmp_path / "GFPGANv1.4.pth").write_bytes(b"\0" * 4096)
    with pytest.raises(LipSyncError, match="does not match its SHA256.*--enhance none"):
        weights.resolve_restorer(download=False)
    own = tmp_path / "mine.pth"
    own.write_bytes(b"anything")
    monkeypatch.setenv("LIPSYNC_GFPGAN", str(own))
    assert weights.resolve_restorer(download=False) == str(own)  # a file of your own is used as it is


def test_enhance_settings_are_checked_and_on_the_command_line():
    with pytest.raises(LipSyncError, match="between 0 and 1"):
        Options(enhance="gfpgan", enhance_strength=1.5)
    with pytest.raises(LipSyncError, match="Unknown enhance 'codeformer'"):
        Options(enhance="codeformer")
    assert Options().enhance == "none"  # the CLI's default: the official output
    from lipsync.cli.sync import build_parser

    args = build_parser().parse_args(["--face", "f", "--audio", "a", "--enhance", "gfpgan", "--enhance_strength",
                                      "0.5"])
    assert (args.enhance, args.enhance_strength) == ("gfpgan", 0.5)


@pytest.fixture(scope="module")
def short_speech(data_dir):
    return media.make_speech(data_dir / "speech_0.3s.wav", seconds=0.3)


@pytest.mark.slow
def test_cli_with_random_gfpgan_keeps_the_upper_face_of_the_plain_result(checkpoint, gfpgan_weights, face_photo,
                                                                        short_speech, tmp_path):
    """`python -m lipsync --enhance gfpgan` with GFPGAN v1.4's layout (random weights; OpenVINO on this CPU, converted
    once): the same video as `--enhance none` above the mouth (up to the encoder's noise), another mouth."""
    from media import read_all_frames

    outputs = {}
    for enhance in ("none", "gfpgan"):
        outputs[enhance] = tmp_path / f"{enhance}.mp4"
        proc = run_lipsync("--face", face_photo, "--audio", short_speech, "--outfile", outputs[enhance],
                           "--checkpoint_path", checkpoint, "--detector", "blazeface", "--blend", "mouth",
                           "--enhance", enhance, env={"LIPSYNC_GFPGAN": str(gfpgan_weights)}, timeout=900)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    plain, enhanced = read_all_frames(outputs["none"]), read_all_frames(outputs["gfpgan"])
    assert len(plain) == len(enhanced) == 5  # 0.3 s: mel windows at 0, 3.2, 6.4 and 9.6 frames, then the last
    assert "mouth enhanced in 5 frames" in proc.stderr and "enhance " in proc.stderr, proc.stderr
    from lipsync.faces.crops import crops_from_detections
    from lipsync.faces.detection import ClipDetection
    from lipsync.faces.detectors import get_detector

    photo = cv2.imread(str(face_photo))
    found = ClipDetection(get_detector("blazeface", "cpu").detector)([photo])
    crop = crops_from_detections(found, (0, 10, 0, 0), 512, 512)[0]  # the job's face box
    top = crop.y1 + mouth_mask(crop.height, crop.width)[1]
    mouth = alpha_map("mouth", crop, 512, 512) > 0.9
    for a, b in zip(plain, enhanced):
        diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2)
        # above the mask: the plain result, up to the encoder's noise (bit for bit before encoding: tested above),
        # a little more in the 16-pixel macroblock row the mask's top crosses
        assert diff[:top - 16].max() <= 3 and diff[:top].max() <= 8 and diff[:top].mean() < 0.05, \
            (diff[:top - 16].max(), diff[:top].max(), diff[:top].mean())
        assert diff[mouth].mean() > 2  # the mouth: restored


def test_zerogpu_request_and_cpu_estimate_count_the_restorer(face_photo, speech):
    from lipsync import enhance_seconds, gpu_seconds
    from lipsync.restore.backends import GPU_SECONDS_PER_FACE

    plain, enhanced = (gpu_seconds(str(face_photo), str(speech), Options(enhance=e)) for e in ("none", "gfpgan"))
    frames = 1.0 * 25  # one second of speech (the speech fixture) at the photo's 25 fps
    assert enhanced - plain == pytest.approx(1.5 * frames * GPU_SECONDS_PER_FACE, rel=0.05)  # with the 1.5 margin
    on_cpu = enhance_seconds(str(face_photo), str(speech), Options(), "cpu")
    assert on_cpu > frames * 0.5  # seconds per face on a CPU
