"""BlazeFace's output decoding (lipsync.faces.blazeface_decoding) on hand-made tensors, without the model or mediapipe:
the anchor layout of each graph, the box arithmetic, the threshold, and MediaPipe's weighted NMS."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.faces import blazeface_decoding as ssd

SHORT = ssd.SsdSpec(128, (8, 16, 16, 16), True)
FULL = ssd.SsdSpec(192, (4,), False)


def test_anchors_are_laid_out_as_the_graphs_make_them():
    short, full = ssd.anchor_centres(SHORT), ssd.anchor_centres(FULL)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # short range: 16x16 cells with 2 anchors each, then 8x8 cells with 6 (three stride-16 layers merged)
    assert short[0].tolist() == short[1].tolist() == [0.5 / 16, 0.5 / 16] and short[2][0] == pytest.approx(1.5 / 16)
    assert short[512:518].tolist() == [[0.5 / 8, 0.5 / 8]] * 6 and short[-1].tolist() == [7.5 / 8, 7.5 / 8]
    assert full[1][0] == pytest.approx(1.5 / 48) and full[48].tolist() == pytest.approx([0.5 / 48, 1.5 / 48])


def _raw(rows: list[tuple[int, float, float, float, float, float]], n: int = 2304):
    """Raw tensors with the given (anchor index, dx, dy, w, h, logit) rows (input pixels), the rest unlikely."""
    boxes, scores = np.zeros((1, n, 16), np.float32), np.full((1, n, 1), -20.0, np.float32)
    for index, dx, dy, w, h, logit in rows:
        boxes[0, index, :4], scores[0, index, 0] = (dx, dy, w, h), logit
    return boxes, scores


def test_boxes_are_decoded_around_their_anchor_and_thresholded():
    anchors = ssd.anchor_centres(FULL)
    boxes, scores = _raw([(100, 9.6, 0.0, 38.4, 19.2, 2.0), (200, 0, 0, 10, 10, 0.0), (300, 0, 0, -5, 10, 3.0)])
    decoded = ssd.decode(boxes, scores, anchors, 192, threshold=0.6)
    assert len(decoded.scores) == 1  # 0.5 is under the threshold, a negative width is dropped
    cx, cy = anchors[100] + [0.05, 0.0]
    assert decoded.boxes[0] == pytest.approx([cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05], abs=1e-6)
    assert decoded.scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert ssd.decode(*_raw([(5, 0, 0, 10, 10, 500.0)]), anchors, 192, 0.6).scores[0] == 1.0  # logits clipped


def test_weighted_nms_merges_overlapping_boxes_by_score_and_keeps_the_best_score():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    kept = ssd.weighted_nms(ssd.Decoded(boxes, scores))
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7])
    assert kept.boxes[0] == pytest.approx((boxes[0] * 0.6 + boxes[1] * 0.9) / 1.5)
    assert kept.boxes[1] == pytest.approx(boxes[2])
    assert len(ssd.weighted_nms(ssd.Decoded(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))).scores) == 0


def test_letterboxed_boxes_are_mapped_back_to_the_image():
    # a 200x100 image letterboxed into a square of 200: the image's rows are the square's middle half
    box = ssd.to_source([0.25, 0.25, 0.75, 0.75], (200.0, 200.0), (200, 100))
    assert box[0] == pytest.approx([0.25, 0.0, 0.75, 1.0])
