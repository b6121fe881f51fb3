"""Pasting the generated face: 'box' as the original, 'feather' soft at the edges only."""

from __future__ import annotations

import cv2
import numpy as np

from lipsync.blend import paste_box, paste_feather


def _frame_and_face():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)


def test_box_paste_is_a_resized_overwrite():
    frame, face = _frame_and_face()
    original = frame.copy()
    paste_box(frame, face, (10, 90, 20, 120))
    assert np.array_equal(frame[10:90, 20:120], cv2.resize(face, (100, 80)))
    outside = np.ones(frame.shape[:2], bool)
    outside[10:90, 20:120] = False
    assert np.array_equal(frame[outside], original[outside])


def test_feather_keeps_the_centre_and_fades_the_edges():
    frame, face = _frame_and_face()
    boxed, feathered = frame.copy(), frame.copy()
    paste_box(boxed, face, (10, 90, 20, 120))
    paste_feather(feathered, face, (10, 90, 20, 120))
    centre = (slice(30, 70), slice(40, 100))
    assert np.abs(boxed[centre].astype(int) - feathered[centre].astype(int)).max() <= 1
    edge_diff = np.abs(feathered[10, 20:120].astype(int) - frame[10, 20:120].astype(int))
    assert edge_diff.max() <= 2  # the outermost row is (almost) the original
