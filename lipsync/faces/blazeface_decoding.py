"""BlazeFace's output decoding, as MediaPipe's legacy face_detection graph does it: anchors, boxes, weighted NMS.

Restated from mediapipe 0.10.14 (modules/face_detection/face_detection*.pbtxt and the
calculators they configure: SsdAnchorsCalculator, TensorsToDetectionsCalculator,
NonMaxSuppressionCalculator), so that the bundled TFLite models give the boxes and
scores that the mediapipe package gives, without the package. Pure numpy, float32 as
there; the model itself is run by lipsync.faces.blazeface.

Everything here is in the model's relative input coordinates: 0..1 across the
letterboxed square the model sees.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

SCORE_CLIP = 100.0  # raw logits are clipped to +-this before the sigmoid (score_clipping_thresh)
NMS_IOU = 0.3  # boxes overlapping the best one by more than this IoU are merged into it (min_suppression_threshold)


class SsdSpec(NamedTuple):
    """One BlazeFace model's decoding options, as its graph sets them."""

    side: int  # the square input (tensor_width = tensor_height = x/y/w/h_scale)
    strides: tuple[int, ...]  # one per output layer; equal neighbours share their cells
    interpolated: bool  # interpolated_scale_aspect_ratio > 0: a second anchor per layer and cell


def anchor_centres(spec: SsdSpec) -> np.ndarray:
    """(N, 2) anchor centres (x, y), in the order the model emits its N boxes.

    SsdAnchorsCalculator with fixed_anchor_size (every anchor is 1 x 1, so only its
    centre matters), anchor offset 0.5 and one aspect ratio (1.0), plus the
    interpolated one when the spec has it. Layers with the same stride are merged:
    their anchors share each cell, layer by layer.
    """
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(spec.strides):
        same = layer
        while same < len(spec.strides) and spec.strides[same] == spec.strides[layer]:
            same += 1
        per_cell = (same - layer) * (2 if spec.interpolated else 1)
        cells = math.ceil(spec.side / spec.strides[layer])
        for y in range(cells):
            for x in range(cells):
                centres += [((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell
        layer = same
    return np.array(centres, np.float32)


class Decoded(NamedTuple):
    """Boxes (N, 4) as (xmin, ymin, xmax, ymax) and their scores (N,), relative to the model input."""

    boxes: np.ndarray
    scores: np.ndarray


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, side: int,
           threshold: float) -> Decoded:
    """The boxes scoring at least `threshold`, in anchor order (TensorsToDetectionsCalculator).

    `raw_boxes` (N, 16): x centre, y centre, width, height (box_format XYWH, as
    reverse_output_order sets it), then six keypoints, in input pixels relative to the
    anchor; `raw_scores` (N, 1) are logits. Boxes of negative or NaN size are dropped.
    """
    logits = np.clip(raw_scores.reshape(-1).astype(np.float32, copy=False), -SCORE_CLIP, SCORE_CLIP)
    with np.errstate(over="ignore"):  # exp(100) is inf in float32, and the score 0, as in MediaPipe's C++
        scores = (np.float32(1) / (np.float32(1) + np.exp(-logits))).astype(np.float32)
    chosen = scores >= np.float32(threshold)  # only these are decoded (a few of the 896 or 2304)
    raw = raw_boxes.reshape(-1, raw_boxes.shape[-1])[chosen].astype(np.float32, copy=False)
    anchors, scale = anchors[chosen], np.float32(side)
    cx, cy = raw[:, 0] / scale + anchors[:, 0], raw[:, 1] / scale + anchors[:, 1]
    half_w, half_h = raw[:, 2] / scale / np.float32(2), raw[:, 3] / scale / np.float32(2)
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (width >= 0) & (height >= 0)  # NaN compares False: dropped too
    return Decoded(boxes[keep], scores[chosen][keep])


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each of `boxes` with `box`, as MediaPipe's Rectangle_f measures it (touching boxes: 0 over
    their union; an empty union: 0)."""
    ix1, iy1 = np.maximum(boxes[:, 0], box[0]), np.maximum(boxes[:, 1], box[1])
    ix2, iy2 = np.minimum(boxes[:, 2], box[2]), np.minimum(boxes[:, 3], box[3])
    meets = (ix1 <= ix2) & (iy1 <= iy2)
    inter = np.where(meets, (ix2 - ix1) * (iy2 - iy1), np.float32(0))
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, np.float32(1)), np.float32(0))


def weighted_nms(decoded: Decoded, threshold: float = NMS_IOU) -> Decoded:
    """MediaPipe's weighted non-maximum suppression: best first, each box the score-weighted mean of the boxes
    overlapping it by more than `threshold` IoU, with the best one's score."""
    order = np.argsort(-decoded.scores, kind="stable")
    boxes, scores = decoded.boxes[order], decoded.scores[order]
    remaining = np.arange(len(scores))
    kept_boxes: list[np.ndarray] = []
    kept_scores: list[float] = []
    while remaining.size:
        top = remaining[0]
        similar = _iou(boxes[remaining], boxes[top]) > threshold
        members = remaining[similar]
        box = boxes[top]
        if members.size:
            weights = scores[members]
            box = (boxes[members] * weights[:, None]).sum(axis=0, dtype=np.float32) / weights.sum(dtype=np.float32)
        kept_boxes.append(box.astype(np.float32))
        kept_scores.append(scores[top])
        if not members.size:  # MediaPipe stops once a round merges nothing (only a box of no area does that)
            break
        remaining = remaining[~similar]
    return Decoded(np.array(kept_boxes, np.float32).reshape(-1, 4), np.array(kept_scores, np.float32))


def to_source(boxes: Sequence[float] | np.ndarray, roi_size: tuple[float, float],
              image_size: tuple[int, int]) -> np.ndarray:
    """Boxes relative to the letterboxed input -> relative to the source image (DetectionProjectionCalculator,
    for a region centred on the image and not rotated: only the letterbox padding is undone)."""
    (roi_w, roi_h), (width, height) = roi_size, image_size
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    sx, sy = np.float32(roi_w) / np.float32(width), np.float32(roi_h) / np.float32(height)
    ox, oy = (np.float32(-0.5) * np.float32(roi_w) + np.float32(width) * np.float32(0.5)) / np.float32(width), \
        (np.float32(-0.5) * np.float32(roi_h) + np.float32(height) * np.float32(0.5)) / np.float32(height)
    return np.stack([boxes[:, 0] * sx + ox, boxes[:, 1] * sy + oy, boxes[:, 2] * sx + ox, boxes[:, 3] * sy + oy],
                    axis=1)
