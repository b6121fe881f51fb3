"""Padding, smoothing and missing faces, as the official code does them (and better for missing faces)."""

from __future__ import annotations

import numpy as np
import pytest

import media
from lipsync.errors import LipSyncError
from lipsync.faces import HaarDetector, crops_from_detections, pad_detection, smooth_boxes


def test_pads_are_clipped_to_the_frame():
    assert pad_detection((5, 8, 90, 95), (10, 10, 10, 10), height=100, width=96) == [0, 0, 96, 100]
    assert pad_detection((20, 20, 60, 60), (0, 10, 0, 0), height=100, width=100) == [20, 20, 60, 70]


def test_smoothing_is_the_official_in_place_integer_mean():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12], [3, 3, 13, 13],
                      [4, 4, 14, 14], [9, 9, 19, 19], [20, 20, 30, 30]])
    out = smooth_boxes(boxes)
    assert out[0].tolist() == [2, 2, 12, 12]  # mean of rows 0..4
    assert out[1].tolist() == [3, 3, 13, 13]  # mean(1,2,3,4,9) = 3.8, truncated
    # rows 3.. use the last five rows, which by then include smoothed values (in place)
    tail = boxes.copy()
    for i in range(len(tail)):
        window = tail[len(tail) - 5:] if i + 5 > len(tail) else tail[i: i + 5]
        tail[i] = np.mean(window, axis=0)
    assert out.tolist() == tail.tolist()
    assert out.dtype == boxes.dtype


def test_frames_without_a_face_pass_through():
    detections = [(10, 10, 50, 50), None, (12, 10, 52, 50), None]
    crops = crops_from_detections(detections, (0, 0, 0, 0), 100, 100)
    assert crops[1] is None and crops[3] is None
    assert crops[0] == crops[2] == (10, 50, 11, 51)  # smoothed over the two frames that have a face


def test_no_face_anywhere_is_a_clear_error():
    with pytest.raises(LipSyncError, match="No face was found"):
        crops_from_detections([None, None], (0, 10, 0, 0), 100, 100)


def test_haar_finds_the_astronaut_face_and_not_a_blank_frame():
    x1, y1, x2, y2 = HaarDetector().detect_one(media.astronaut_bgr())
    assert 165 <= x1 <= 190 and 60 <= y1 <= 95 and 255 <= x2 <= 285 and 155 <= y2 <= 190  # brows to chin
    assert HaarDetector().detect_one(np.full((240, 320, 3), 128, np.uint8)) is None
