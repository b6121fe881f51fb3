"""BlazeFace (lipsync.faces.blazeface, lipsync.faces.blazeface_decoding) against the mediapipe package it replaces,
and its tracker (lipsync.faces.blazeface_tracker) on hard clips made from the astronaut photo; on the calibration clip
(when it is beside the
checkout) its boxes against mediapipe's, the tracker's against those a job got with mediapipe, and the final ones
against the official (S3FD) ones."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import media
import numpy as np
import pytest

from lipsync.errors import LipSyncError
from lipsync.geometry import Box

pytest.importorskip("openvino", reason="BlazeFace runs on OpenVINO, which is not installed")
from lipsync.faces.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace, tile_grid
from lipsync.faces.blazeface_tracker import BlazeFaceTracker
from lipsync.faces.detection import ClipDetection

pytestmark = pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")  # protobuf, inside mediapipe
CALIBRATION = Path(__file__).resolve().parents[3] / "shared" / "calibration"
NO_CALIBRATION = "../shared/calibration (the talking-head clip, beside the checkout) is not here"
ASTRO_FACE = (168, 68, 282, 205)  # the astronaut's face in the 512x512 photo, brows to chin (x1, y1, x2, y2)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceTracker:
    return BlazeFaceTracker()


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
    clip, found = ClipDetection(detector, point), []
    for start in range(0, len(frames), batch):
        found += clip(frames[start:start + batch])
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


@pytest.mark.slow  # 16 frames of two people, three times over
def test_clips_sharing_one_detector_do_not_mix(detector):
    """Two clips interleaved batch by batch on the shared detector get what each gets alone."""
    frames, faces = _two_people(16)
    point = tuple(int(v) for v in faces[0][1].centre)
    alone = [_run(detector, frames), _run(detector, frames, point=point)]
    states = [detector.new_state(), detector.new_state(point)]
    mixed = [[], []]
    for start in range(0, 16, 4):
        for k in (0, 1):
            mixed[k] += detector.track(frames[start:start + 4], states[k])
    assert mixed == alone


def test_point_outside_the_first_frame_is_refused(tmp_path):
    from lipsync.faces.crops import FaceDetection
    from lipsync.media.probe import probe_media
    from lipsync.media.source import FaceSource
    from lipsync.options import Options
    from lipsync.runtime.timings import StageTimes

    path = media.make_face_video(tmp_path / "face.mp4", seconds=0.2)
    options = Options(face_point=(400, 10))
    source = FaceSource(probe_media(str(path)), options)
    with pytest.raises(LipSyncError, match="outside the 320x240 first frame"):
        FaceDetection(source, 5, options, BlazeFaceTracker(), StageTimes())


def test_face_point_flags_and_flat_values():
    from lipsync.cli.flags import split_args
    from lipsync.cli.sync import build_parser
    from lipsync.options import Options

    args = build_parser().parse_args(["--face", "f.mp4", "--audio", "a.wav", "--face_point", "12", "34"])
    assert split_args(args)[1].face_point == (12, 34)
    assert Options.from_flat({"face_point_x": 5.0, "face_point_y": 6.0}).point == (5, 6)
    assert Options().point is None
    with pytest.raises(LipSyncError, match="only partly given"):
        Options(face_point=(5, -1))


def test_auto_falls_back_to_haar_without_openvino(monkeypatch):
    import sys

    from lipsync.faces.detectors import make_detector

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    choice = make_detector("auto", "cpu", allow_download=False)
    assert choice.name == "haar" and "OpenVINO is not installed" in choice.reason
    with pytest.raises(LipSyncError, match="needs OpenVINO") as raised:
        make_detector("blazeface", "cpu", allow_download=False)
    assert "pip install openvino" in str(raised.value)


def test_blazeface_needs_no_mediapipe():
    import ast

    for module in ("blazeface", "blazeface_decoding", "blazeface_tracker", "detection", "detectors"):
        tree = ast.parse((Path(__file__).resolve().parents[2] / "lipsync" / "faces" / f"{module}.py").read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(name.split(".")[0] == "mediapipe" for name in names), module


def test_preview_marks_the_picked_face(tmp_path):
    from lipsync.faces.preview import draw_boxes, make_preview
    from lipsync.options import Options

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
    from lipsync.faces.timeline import face_timeline

    strip = face_timeline([True] * 10 + [False] * 10, height=8)
    assert strip.shape[0] == 8 and strip.shape[2] == 3 and strip.dtype == np.uint8
    left, right = strip[0, 0].astype(int), strip[0, -1].astype(int)
    assert left[1] > left[0] + 50 and abs(int(right[0]) - int(right[1])) < 5  # green, then grey
    assert face_timeline([True] * 5000).shape[1] == 800  # long clips share columns


@pytest.mark.slow  # the whole calibration clip
def test_final_boxes_match_the_official_ones_on_the_calibration_clip(detector, calibration_frames):
    from lipsync.faces.crops import crops_from_detections

    frames = calibration_frames
    official = [Box.from_tblr(*row) for row in
                json.loads((CALIBRATION / "talking_head_official_boxes.json").read_text())["default_pads"]]
    height, width = frames[0].shape[:2]
    crops = crops_from_detections(_run(detector, frames), (0, 10, 0, 0), height, width)[:len(official)]
    iou = np.mean([0.0 if c is None else c.iou(o) for c, o in zip(crops, official)])
    bottom = np.mean([c.y2 - o.y2 for c, o in zip(crops, official) if c is not None])
    assert iou >= 0.9 and abs(bottom) <= 4, (iou, bottom)


# ---- the same boxes as the mediapipe package -------------------------------------------------------------------

@pytest.fixture(scope="module")
def mediapipe_graphs():
    """MediaPipe's own legacy face_detection graphs (short range, full range): the reference."""
    mp = pytest.importorskip("mediapipe", reason="mediapipe, the reference BlazeFace is compared with, is not "
                                                 "installed (pip install mediapipe==0.10.14)")
    graphs = {SHORT_RANGE: mp.solutions.face_detection.FaceDetection(model_selection=0),
              FULL_RANGE: mp.solutions.face_detection.FaceDetection(model_selection=1)}
    yield graphs
    for graph in graphs.values():
        graph.close()


def _mediapipe_faces(graphs, image: np.ndarray, model) -> list[tuple[np.ndarray, float]]:
    height, width = image.shape[:2]
    result = graphs[model].process(np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    found = []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        found.append((np.array([b.xmin * width, b.ymin * height, (b.xmin + b.width) * width,
                                (b.ymin + b.height) * height]), float(d.score[0])))
    return found


def _assert_as_mediapipe(graphs, runner: BlazeFace, images) -> int:
    """Both models on every image give mediapipe's faces: the same number, boxes within 0.01 px, scores within
    1e-5. Returns how many faces were compared."""
    compared = 0
    for k, image in enumerate(images):
        for model in (SHORT_RANGE, FULL_RANGE):
            ours, theirs = runner.detect(image, model), _mediapipe_faces(graphs, image, model)
            assert len(ours) == len(theirs), (k, model.file, [f.score for f in ours], [s for _, s in theirs])
            for face, (box, score) in zip(ours, theirs):
                assert np.abs(np.array(face.box) - box).max() <= 0.01 and abs(face.score - score) <= 1e-5, \
                    (k, model.file, face, box, score)
                compared += 1
    return compared


@pytest.fixture(scope="module")
def runner(detector) -> BlazeFace:
    return detector.model


@pytest.fixture(scope="module")
def calibration_frames() -> list[np.ndarray]:
    if not (CALIBRATION / "talking_head.mp4").exists():
        pytest.skip(NO_CALIBRATION)
    return media.read_all_frames(CALIBRATION / "talking_head.mp4")


@pytest.mark.slow  # the whole calibration clip
def test_boxes_and_scores_are_mediapipes_on_the_calibration_clip(mediapipe_graphs, runner, calibration_frames):
    """Every third frame whole, a tracking-sized window on it and a wide strip of it (the letterbox both ways)."""
    images = [image for frame in calibration_frames[::3]
              for image in (frame, frame[100:500, 150:450], frame[300:640, :])]
    assert _assert_as_mediapipe(mediapipe_graphs, runner, images) >= len(images)  # a face on nearly all of them


def test_boxes_and_scores_are_mediapipes_on_synthetic_frames(mediapipe_graphs, runner):
    """The astronaut photo, turned; a small face in 720p, whole and in every tile searched; a face in 4K."""
    photo = media.astronaut_bgr()
    turned = cv2.warpAffine(photo, cv2.getRotationMatrix2D((256, 256), 25, 1.0), (512, 512))
    (small,), _ = _clip(1, (1280, 720), [lambda i: _shift_scale(300, 400, 0.42)])
    tiles = [small[t.box.y1:t.box.y2, t.box.x1:t.box.x2] for t in tile_grid(720, 1280)]
    (big,), _ = _clip(1, (3840, 2160), [lambda i: _shift_scale(2000, 900, 1.2)])
    images = [photo, turned, photo[40:260, 120:330], small, *tiles, big, big[700:1400, 1900:2600]]
    assert _assert_as_mediapipe(mediapipe_graphs, runner, images) >= 8


# ---- the tracker's boxes: those a job got with mediapipe ----------------------------------------------------------

@pytest.mark.slow  # the whole calibration clip
def test_tracker_boxes_are_those_a_job_got_with_mediapipe(detector, calibration_frames):
    """tests/data/calibration_blazeface_boxes.json: the mapped boxes of the mediapipe-based tracker (main at
    2f68381). OpenVINO's float rounding differs a little between CPUs, so one pixel is allowed where a value
    sits on an integer boundary."""
    recorded_file = Path(__file__).parents[1] / "data" / "calibration_blazeface_boxes.json"
    recorded = json.loads(recorded_file.read_text())["boxes"]
    found = _run(detector, calibration_frames)
    assert len(found) == len(recorded) and all(b is not None for b in found)
    assert max(np.abs(np.array(b) - np.array(r)).max() for b, r in zip(found, recorded)) <= 1
    assert sum(list(b) == r for b, r in zip(found, recorded)) >= 0.98 * len(recorded)


# ---- bounded cost per frame -------------------------------------------------------------------------------------

class _Runs:
    """Counts a tracker's model calls, and where each looked (corner and size, in the pixels it searched)."""

    def __init__(self, monkeypatch, tracker: BlazeFaceTracker) -> None:
        self.calls, self.looked, detect = 0, set(), tracker.model.detect

        def counted(image, model, x0=0, y0=0):
            self.calls += 1
            self.looked.add((x0, y0, image.shape[1], image.shape[0]))
            return detect(image, model, x0, y0)

        monkeypatch.setattr(tracker.model, "detect", counted)

    def during(self, fn) -> int:
        before = self.calls
        fn()
        return self.calls - before


def test_the_tiles_of_a_720p_frame_coarse_first():
    tiles = tile_grid(720, 1280)
    assert len(tiles) == 119 and [t.level for t in tiles] == sorted(t.level for t in tiles)
    assert {t.box.width for t in tiles if t.box.x2 < 1280} == {360, 180}


@pytest.mark.slow  # 4K frames
def test_a_4k_frame_without_a_face_costs_no_more_than_720p_then_a_budget(monkeypatch):
    """A 4K clip with no face: its first frame is searched on a 720p copy (the whole frame and 119 tiles, where
    the 4K frame itself would take 540); each later frame runs at most TILE_BUDGET tiles, going on where the
    last one stopped, so a few frames cover every tile."""
    tracker = BlazeFaceTracker()
    runs = _Runs(monkeypatch, tracker)
    frame = np.random.default_rng(1).integers(100, 140, (2160, 3840, 3), dtype=np.uint8)
    clip = ClipDetection(tracker)
    assert runs.during(lambda: clip([frame])) == 1 + 119
    runs.looked.clear()
    per_frame = [runs.during(lambda: clip([frame])) for _ in range(-(-119 // tracker.TILE_BUDGET))]
    assert per_frame == [1 + tracker.TILE_BUDGET] * len(per_frame)
    tiles = {(t.box.x1, t.box.y1, t.box.width, t.box.height) for t in tile_grid(720, 1280)}
    assert tiles <= runs.looked  # every tile of the 720p copy, in 8 frames


@pytest.mark.slow  # 4K frames
def test_a_45_px_face_in_a_4k_frame_is_found_and_followed(detector):
    """45 px in a 720p-equivalent frame is 135 px in 4K (the photo's face is 114 px wide)."""
    frames, faces = _clip(4, (3840, 2160), [lambda i: _shift_scale(2200 + 20 * i, 1200, 135 / 114)])
    found = _run(detector, frames)
    assert all(_on(b, f[0]) for b, f in zip(found, faces))


def test_a_lost_face_is_looked_for_near_where_it_was_within_the_budget(monkeypatch):
    tracker = BlazeFaceTracker()
    frames, faces = _clip(3, (1280, 720), [lambda i: _shift_scale(700, 300, 0.8)])
    empty = np.full((720, 1280, 3), 120, np.uint8)  # nothing for the flow to follow either: lost at once
    clip = ClipDetection(tracker)
    assert all(_on(b, f[0]) for b, f in zip(clip(frames), faces))
    runs = _Runs(monkeypatch, tracker)
    lost = [runs.during(lambda: clip([empty])) for _ in range(4)]
    assert max(lost) <= 2 + 1 + tracker.TILE_BUDGET  # the window (two models), the whole frame, the budget
    assert _on(clip(frames[:1])[0], faces[0][0])  # back where it was: taken again
