"""BlazeFace with its tracker (lipsync.blazeface) on hard clips made from the astronaut photo, and its boxes
against the official (S3FD) ones on the calibration clip when that is beside the checkout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import media
from lipsync.errors import LipSyncError
from lipsync.geometry import Box

pytest.importorskip("mediapipe")
from lipsync.blazeface import BlazeFaceDetector  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")  # protobuf, inside mediapipe
CALIBRATION = Path(__file__).resolve().parents[2] / "shared" / "calibration"
ASTRO_FACE = (168, 68, 282, 205)  # the astronaut's face in the 512x512 photo, brows to chin (x1, y1, x2, y2)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


def _background(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    noise = cv2.resize(rng.integers(40, 200, (height // 16, width // 16, 3), dtype=np.uint8), (width, height))
    return cv2.GaussianBlur(noise, (0, 0), 4)


def _placed(canvas: np.ndarray, photo: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`photo` warped by a 2x3 matrix onto `canvas`."""
    height, width = canvas.shape[:2]
    warped = cv2.warpAffine(photo, matrix, (width, height))
    mask = cv2.warpAffine(np.full(photo.shape[:2], 255, np.uint8), matrix, (width, height)) > 0
    out = canvas.copy()
    out[mask] = warped[mask]
    return out


def _face_through(matrix: np.ndarray) -> Box:
    x1, y1, x2, y2 = ASTRO_FACE
    corners = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]], np.float64) @ matrix.T
    return Box.of((*corners.min(0), *corners.max(0)))


def _shift_scale(tx: float, ty: float, s: float) -> np.ndarray:
    return np.array([[s, 0, tx], [0, s, ty]], np.float64)


def _clip(n: int, size: tuple[int, int], matrices) -> tuple[list[np.ndarray], list[list[Box]]]:
    """Frames with one astronaut per matrix (per frame), and each one's face box per frame."""
    photo, bg = media.astronaut_bgr(), _background(*size)
    frames, faces = [], []
    for i in range(n):
        frame, boxes = bg, []
        for make in matrices:
            frame = _placed(frame, photo, make(i))
            boxes.append(_face_through(make(i)))
        frames.append(frame)
        faces.append(boxes)
    return frames, faces


def _on(box: Box | None, face: Box) -> bool:
    return box is not None and face.contains(*box.centre)


def _run(detector, frames, point=None, batch=8):
    """Detections batch by batch through one per-clip state, as the face track feeds them."""
    state, found = detector.new_state(point), []
    for start in range(0, len(frames), batch):
        found += detector.detect(frames[start:start + batch], state=state)
    return found


def test_rotated_face_is_found_in_every_frame(detector):
    n = 24
    frames, faces = _clip(n, (640, 480), [lambda i: cv2.getRotationMatrix2D((225, 136), 20 * np.sin(2 * np.pi * i / n),
                                                                           1.0) + [[0, 0, 60], [0, 0, 40]]])
    found = _run(detector, frames)
    assert all(_on(b, f[0]) for b, f in zip(found, faces))


def test_covered_mouth_keeps_the_face(detector):
    frames, faces = _clip(20, (640, 480), [lambda i: _shift_scale(60 + 4 * i, 30, 1.0)])
    for frame, (face,) in zip(frames, faces):  # a dark 'phone' and a skin-coloured 'hand' over the mouth
        cv2.rectangle(frame, (face.x1 + 15, face.y1 + 85), (face.x2 - 25, face.y2 + 10), (30, 30, 35), -1)
        cv2.ellipse(frame, (face.x2 - 20, face.y2 - 10), (30, 22), 20, 0, 360, (120, 150, 200), -1)
    found = _run(detector, frames)
    assert all(_on(b, f[0]) for b, f in zip(found, faces))


def test_small_face_in_a_large_frame(detector):
    # the photo at 0.42: a face ~48 px wide in a 1280x720 frame, drifting
    frames, faces = _clip(12, (1280, 720), [lambda i: _shift_scale(300 + 25 * i, 400, 0.42)])
    found = _run(detector, frames)
    assert all(_on(b, f[0]) for b, f in zip(found, faces))
    assert all(30 <= b.width <= 80 for b in found)


def _two_people(n: int = 30):
    """A larger astronaut on the left and a smaller one moving towards it from the right."""
    return _clip(n, (1280, 720), [lambda i: _shift_scale(40 + 60 * np.sin(i / 10), 60, 1.3),
                                  lambda i: _shift_scale(800 - 250 * np.sin(np.pi * i / 30), 160, 0.8)])


def test_two_faces_default_keeps_the_most_prominent_and_never_switches(detector):
    frames, faces = _two_people()
    assert len(detector.faces(frames[0])) == 2
    found = _run(detector, frames)
    assert all(_on(b, f[0]) for b, f in zip(found, faces))


def test_a_point_picks_the_other_face_and_a_point_on_no_face_is_refused(detector):
    frames, faces = _two_people()
    other = faces[0][1]
    found = _run(detector, frames, point=tuple(int(v) for v in other.centre))
    assert all(_on(b, f[1]) for b, f in zip(found, faces))
    with pytest.raises(LipSyncError, match="is on no face") as raised:
        _run(detector, frames[:2], point=(640, 700))
    assert str(raised.value).count(". ") == 0  # one sentence


def test_clips_sharing_one_detector_do_not_mix(detector):
    """Two clips interleaved batch by batch on the shared detector get what each gets alone."""
    frames, faces = _two_people(16)
    point = tuple(int(v) for v in faces[0][1].centre)
    alone = [_run(detector, frames), _run(detector, frames, point=point)]
    states = [detector.new_state(), detector.new_state(point)]
    mixed = [[], []]
    for start in range(0, 16, 4):
        for k in (0, 1):
            mixed[k] += detector.detect(frames[start:start + 4], state=states[k])
    assert mixed == alone


def test_point_outside_the_first_frame_is_refused(tmp_path):
    from lipsync.options import Options
    from lipsync.probe import probe_media
    from lipsync.source import FaceSource
    from lipsync.timings import StageTimes
    from lipsync.track import FaceDetection

    path = media.make_face_video(tmp_path / "face.mp4", seconds=0.2)
    options = Options(face_point=(400, 10))
    source = FaceSource(probe_media(str(path)), options)
    with pytest.raises(LipSyncError, match="outside the 320x240 first frame"):
        FaceDetection(source, 5, options, BlazeFaceDetector(), StageTimes())


def test_face_point_flags_and_flat_values():
    from lipsync.__main__ import build_parser, split_args
    from lipsync.options import Options

    args = build_parser().parse_args(["--face", "f.mp4", "--audio", "a.wav", "--face_point", "12", "34"])
    assert split_args(args)[1].face_point == (12, 34)
    assert Options.from_flat({"face_point_x": 5.0, "face_point_y": 6.0}).point == (5, 6)
    assert Options().point is None
    with pytest.raises(LipSyncError, match="only partly given"):
        Options(face_point=(5, -1))


def test_auto_falls_back_to_haar_without_mediapipe(monkeypatch):
    import sys

    from lipsync.faces import make_detector

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe now raises ImportError
    choice = make_detector("auto", "cpu", allow_download=False)
    assert choice.name == "haar" and "mediapipe is not installed" in choice.reason
    with pytest.raises(LipSyncError, match="needs mediapipe"):
        make_detector("blazeface", "cpu", allow_download=False)


def test_preview_marks_the_picked_face(tmp_path):
    from lipsync.options import Options
    from lipsync.preview import draw_boxes, make_preview

    frames, faces = _two_people(2)
    path = media.write_video(tmp_path / "two.mp4", frames, 25, (1280, 720))
    preview = make_preview(str(path), Options(detector="blazeface"))
    assert len(preview.faces) == 2 and preview.can_pick and _on(preview.detection, faces[0][0])
    other = tuple(int(v) for v in faces[0][1].centre)
    assert _on(preview.picked(other), faces[0][1]) and preview.picked((640, 700)) is None
    assert preview.to_frame(*(v * preview.scale for v in other)) == pytest.approx(other, abs=2)
    image = draw_boxes(preview, Options(detector="blazeface", face_point=other))
    assert image.shape == (*preview.image.shape[:2], 3)


def test_timeline_shows_where_faces_were_synced():
    from lipsync.timeline import face_timeline

    strip = face_timeline([True] * 10 + [False] * 10, height=8)
    assert strip.shape[0] == 8 and strip.shape[2] == 3 and strip.dtype == np.uint8
    left, right = strip[0, 0].astype(int), strip[0, -1].astype(int)
    assert left[1] > left[0] + 50 and abs(int(right[0]) - int(right[1])) < 5  # green, then grey
    assert face_timeline([True] * 5000).shape[1] == 800  # long clips share columns


@pytest.mark.skipif(not (CALIBRATION / "talking_head.mp4").exists(), reason="../shared/calibration is not here")
def test_final_boxes_match_the_official_ones_on_the_calibration_clip(detector):
    from lipsync.track import crops_from_detections

    frames = media.read_all_frames(CALIBRATION / "talking_head.mp4")
    official = [Box.from_tblr(*row) for row in
                json.loads((CALIBRATION / "talking_head_official_boxes.json").read_text())["default_pads"]]
    height, width = frames[0].shape[:2]
    crops = crops_from_detections(_run(detector, frames), (0, 10, 0, 0), height, width)[:len(official)]
    iou = np.mean([0.0 if c is None else c.iou(o) for c, o in zip(crops, official)])
    bottom = np.mean([c.y2 - o.y2 for c, o in zip(crops, official) if c is not None])
    assert iou >= 0.9 and abs(bottom) <= 4, (iou, bottom)
