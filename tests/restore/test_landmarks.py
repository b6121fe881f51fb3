"""Five face landmarks from MediaPipe's face mesh model run through OpenVINO (lipsync.restore.landmarks)."""

from __future__ import annotations

import importlib.util

import cv2
import media
import numpy as np
import pytest

from lipsync.geometry import Box
from lipsync.restore.landmarks import Landmarker, Smoother, five_points, rejection, roi_from_mesh

ASTRONAUT_BOX = Box(170, 60, 290, 215)  # her face, brows to chin, in the 512x512 photo


@pytest.fixture(scope="module")
def landmarker():
    return Landmarker()


def test_the_five_points_sit_on_the_astronauts_face(landmarker):
    five, why = landmarker(media.astronaut_bgr(), ASTRONAUT_BOX)
    assert why == "" and five.shape == (5, 2)
    left_eye, right_eye, nose, mouth_left, mouth_right = five
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < nose[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert 35 < np.hypot(*(right_eye - left_eye)) < 60  # her eyes are about 45 px apart
    assert all(ASTRONAUT_BOX.contains(x, y) for x, y in five)
    # the photo moved by (17, -9) px: the points move with it (the same look, not a fixed grid)
    moved = cv2.warpAffine(media.astronaut_bgr(), np.float32([[1, 0, 17], [0, 1, -9]]), (512, 512),
                           borderMode=cv2.BORDER_REFLECT)
    again, _ = landmarker(moved, Box(187, 51, 307, 206))
    assert np.abs(again - five - [17, -9]).max() < 1.5


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe not installed (the reference)")
@pytest.mark.parametrize("size", [None, (640, 360), (400, 512)])
def test_same_points_as_mediapipe_face_mesh_for_the_same_region(landmarker, size):
    """MediaPipe's own graph in video mode takes each frame's region from the previous frame's points; one look of
    ours from that same region must give its points (our crop, tensor and projection are its)."""
    import mediapipe as mp

    rgb = cv2.cvtColor(media.astronaut_bgr(), cv2.COLOR_BGR2RGB)
    rgb = np.ascontiguousarray(cv2.resize(rgb, size) if size and size[1] == 360 else rgb[:, 56:456] if size else rgb)
    height, width = rgb.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as mesh:
        first, second = ([[p.x * width, p.y * height] for p in mesh.process(rgb).multi_face_landmarks[0].landmark]
                         for _ in range(2))
    ours, score = landmarker.mesh.look(landmarker.request, rgb, roi_from_mesh(np.array(first)))
    distance = np.hypot(*(ours - np.array(second)).T)
    assert score > 0.9 and distance.mean() < 0.3 and distance.max() < 0.6, (distance.mean(), distance.max())


def test_no_face_too_small_or_turned_is_none_with_a_reason(landmarker):
    grey = np.full((240, 320, 3), 128, np.uint8)
    assert landmarker(grey, Box(100, 60, 200, 180)) == (None, "no face")
    tiny = cv2.resize(media.astronaut_bgr(), (48, 48), interpolation=cv2.INTER_AREA)
    assert landmarker(tiny, Box(15, 5, 28, 21))[1] in ("small", "no face")
    frontal, _ = landmarker(media.astronaut_bgr(), ASTRONAUT_BOX)
    assert rejection(frontal) is None
    profile = frontal.copy()
    profile[2, 0] = frontal[1, 0] + 3  # the nose out past the far eye: a head turned side-on
    assert rejection(profile) == "turned"
    assert rejection(frontal * 0.2) == "small"  # eyes 9 px apart
    upside_down = frontal.copy()
    upside_down[:, 1] = 2 * frontal[2, 1] - frontal[:, 1]  # mirrored about the nose: mouth above the eyes
    assert rejection(upside_down) == "turned"


def test_five_points_are_the_eye_centres_nose_tip_and_mouth_corners():
    from lipsync.restore.landmarks import EYE_LEFT, EYE_RIGHT

    mesh = np.zeros((468, 2))
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)) * 12,
                     np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False)) * 5], axis=1)
    mesh[list(EYE_LEFT)], mesh[list(EYE_RIGHT)] = ring + (20, 50), ring + (80, 52)  # contours around each eye
    mesh[1], mesh[61], mesh[291] = (50, 80), (35, 110), (65, 110)
    five = five_points(mesh)
    assert five.dtype == np.float32 and five.shape == (5, 2)
    assert np.allclose(five, [(20, 50), (80, 52), (50, 80), (35, 110), (65, 110)], atol=1e-4)


def test_smoother_calms_jitter_follows_motion_and_restarts_after_a_gap():
    rng = np.random.default_rng(0)
    base = np.float32([[100, 100], [160, 100], [130, 135], [108, 165], [152, 165]])
    noisy = [base + rng.normal(0, 1.5, base.shape).astype(np.float32) for _ in range(50)]
    smoother = Smoother(25)
    smooth = [smoother(i, p) for i, p in enumerate(noisy)]
    assert np.std([s - base for s in smooth[10:]]) < 0.6 * np.std([p - base for p in noisy[10:]])
    moving = Smoother(25)  # a steady pan of 4 px a frame: followed within a few px once under way
    panned = [moving(i, base + [4 * i, 0]) for i in range(40)]
    assert np.abs(panned[-1] - (base + [156, 0])).max() < 6
    assert smoother(50, None) is None
    assert np.array_equal(smoother(51, base), base)  # after a gap: the new points as they are
    assert np.array_equal(Smoother(25)(7, base), base)
    cut = Smoother(25)
    cut(0, base)
    assert np.array_equal(cut(1, base + [45, 0]), base + [45, 0])  # a jump of 0.75 eye distances: a new shot
