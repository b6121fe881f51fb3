"""BlazeFace, MediaPipe's face detector, run by OpenVINO from the bundled TFLite models: one image, or a
whole frame searched with tiles for small faces.

Why not the mediapipe package: it is a frozen 2024 release that pulls in ~480 MB (jax,
matplotlib), pins protobuf below 5 and a second OpenCV wheel, for two models of 0.2 and
0.7 MB. OpenVINO reads their .tflite files directly; OpenCV's dnn module cannot read the
full-range model (it has no DENSIFY operator, OpenCV 4.14).

What MediaPipe's legacy face_detection graph does around the model is restated here
(the input) and in lipsync.faces.blazeface_decoding (the output), so the boxes and scores are MediaPipe's
(tests/test_blazeface.py compares them): the image's centred square around it (the
longer side, keep_aspect_ratio) is warped onto the model's input with bilinear
sampling and black borders, scaled to [-1, 1]; the boxes are decoded against the SSD
anchors, merged by weighted NMS and mapped back from the letterbox.

The search for small faces (`search`) runs the full-range model on the whole frame and
then on overlapping tiles, coarse to fine. Large frames are searched on a copy shrunk
to 720p (WORK_SIZE; boxes are mapped back), so a frame costs at most as many tiles as
a 720p frame (119), and a caller may cap them further and go on where it stopped.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from ..assets import asset_path
from ..geometry import Box
from . import blazeface_decoding as ssd
from .detection import ScoredBox


class Model(NamedTuple):
    """One of MediaPipe's two BlazeFace models, with the decoding options its graph gives it."""

    file: str
    spec: ssd.SsdSpec
    threshold: float  # the graph's min_score_thresh: boxes scoring less are dropped before the NMS


# modules/face_detection/face_detection_short_range.pbtxt and face_detection_full_range.pbtxt
SHORT_RANGE = Model("face_detection_short_range.tflite", ssd.SsdSpec(128, (8, 16, 16, 16), True), 0.5)
FULL_RANGE = Model("face_detection_full_range_sparse.tflite", ssd.SsdSpec(192, (4,), False), 0.6)

WORK_SIZE = (1280, 720)  # px: a frame larger than this (either way round) is searched on a shrunk copy
MIN_TILE = 160  # px (in the working copy): the smallest tile; 45 px faces in 720p are found (a clear one: 14 px)
TILE_OVERLAP = 0.4  # a tile's face overlapping a face already found this much (of the smaller box) is the same


def letterbox(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The model input (1, side, side, 3) float32 RGB in [-1, 1] for a BGR image, and the side of the square
    region it shows (the image's longer side), as MediaPipe's ImageToTensorCalculator makes it."""
    height, width = image.shape[:2]
    square = np.float32(max(width, height))  # PadRoi with a square tensor: the longer side, centred
    corners = cv2.boxPoints(((np.float32(0.5) * width, np.float32(0.5) * height), (square, square), 0.0))
    target = np.array([[0, side], [0, 0], [side, 0], [side, side]], np.float32)  # boxPoints' order: BL TL TR BR
    matrix = cv2.getPerspectiveTransform(corners, target)
    warped = cv2.warpPerspective(image, matrix, (side, side), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    tensor = cv2.cvtColor(warped, cv2.COLOR_BGR2RGB).astype(np.float32)[None]
    tensor *= np.float32(2 / 255)  # [0, 255] -> [-1, 1]: output_tensor_float_range
    tensor -= np.float32(1)
    return tensor, float(square)


class _Compiled:
    """A model compiled by OpenVINO with its own inference requests, each lent to one thread at a time.

    A pool rather than one request per thread: every job detects on a thread of its own and
    requests kept per thread would outlive it. fp32 is enforced: OpenVINO's default on CPUs
    with bf16 units would move the boxes away from MediaPipe's.
    """

    def __init__(self, model: Model, threads: int) -> None:
        import openvino as ov

        self.tensor = ov.Tensor  # an input wraps the caller's array (no copy)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(asset_path(model.file))), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY"})
        # the box output is (1, N, 16), the score output (1, N, 1); their names differ between the two files
        self.boxes = next(i for i, out in enumerate(self.compiled.outputs) if out.get_partial_shape()[-1] == 16)
        self.scores = 1 - self.boxes
        self.anchors = ssd.anchor_centres(model.spec)
        self._free: list = []
        self._lock = threading.Lock()

    @contextmanager
    def request(self) -> Iterator:
        with self._lock:
            request = self._free.pop() if self._free else None
        if request is None:
            request = self.compiled.create_infer_request()
        try:
            yield request
        finally:
            with self._lock:
                self._free.append(request)


class BlazeFace:
    """BlazeFace's two models, compiled once and shared by every thread (see the module docstring)."""

    def __init__(self, threads: int = 1) -> None:
        self._models = {model: _Compiled(model, threads) for model in (SHORT_RANGE, FULL_RANGE)}

    def detect(self, image: np.ndarray, model: Model, x0: float = 0, y0: float = 0) -> list[ScoredBox]:
        """The faces BlazeFace finds on a BGR image (a view into a frame may be given, with its top-left corner
        at (x0, y0)): boxes in frame pixels, best first, scoring at least the model's threshold.

        The threshold is the graph's own: mediapipe 0.10.14's legacy solution ignores its
        min_detection_confidence (measured: 0.3 and 0.7 give what 0.5 gives), and it also
        decides which boxes the NMS merges, so a caller wanting more filters the result.
        """
        height, width = image.shape[:2]
        compiled = self._models[model]
        tensor, square = letterbox(image, model.spec.side)
        with compiled.request() as request:
            request.set_input_tensor(compiled.tensor(tensor, shared_memory=True))
            request.infer()
            raw_boxes = request.get_output_tensor(compiled.boxes).data.copy()
            raw_scores = request.get_output_tensor(compiled.scores).data.copy()
        decoded = ssd.weighted_nms(ssd.decode(raw_boxes, raw_scores, compiled.anchors, model.spec.side,
                                             model.threshold))
        relative = ssd.to_source(decoded.boxes, (square, square), (width, height))
        return [ScoredBox(Box(x0 + float(b[0]) * width, y0 + float(b[1]) * height, x0 + float(b[2]) * width,
                              y0 + float(b[3]) * height), float(s))
                for b, s in zip(relative, decoded.scores)]

    def search(self, frame: np.ndarray, tile_score: float, everywhere: bool,
               near: Optional[Box] = None, budget: int = 0, start: int = 0) -> tuple[list[ScoredBox], int]:
        """Faces on a BGR frame: the whole frame, then (when that finds none, or `everywhere`) tiles, coarse to
        fine, stopping after the first tile size that finds a face unless `everywhere`.

        `near` keeps to the tiles that meet that region (a lost face is looked for where it was); `budget` > 0
        runs at most that many tiles, from tile number `start` on (wrapping round). Returns the faces (frame
        pixels, best first per tile) and where the next search should start.
        """
        height, width = frame.shape[:2]
        scale = min(1.0, WORK_SIZE[0] / max(height, width), WORK_SIZE[1] / min(height, width))
        work = frame if scale == 1.0 else cv2.resize(
            frame, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        found = self.detect(work, FULL_RANGE)
        if found and not everywhere:
            return _scaled(found, scale), start
        tiles = tile_grid(*work.shape[:2])
        if near is not None:
            region = near.scaled(scale)
            tiles = [t for t in tiles if t.box.overlap(region) > 0]
        picked = list(range(len(tiles)))
        if budget and len(tiles) > budget:
            first = start % len(tiles)
            picked = sorted((picked[first:] + picked[:first])[:budget])  # coarse tiles first
        level = None
        for index in picked:
            tile = tiles[index]
            if found and not everywhere and tile.level != level:
                break  # a face at the previous tile size: smaller tiles are not needed
            level = tile.level
            x1, y1, x2, y2 = tile.box
            found += [f for f in self.detect(work[y1:y2, x1:x2], FULL_RANGE, x1, y1)
                      if f.score >= tile_score and all(f.box.overlap(g.box) < TILE_OVERLAP for g in found)]
        return _scaled(found, scale), (start + len(picked) if budget else start)


class Tile(NamedTuple):
    level: int  # 0 for the largest tiles
    box: Box


def tile_grid(height: int, width: int) -> list[Tile]:
    """Overlapping square tiles (half a side apart) over a frame, coarse to fine: from half the shorter side
    (192 px at least) down to MIN_TILE, halving; tiles at the right and bottom edges are cut by the frame."""
    tiles: list[Tile] = []
    side, level = max(192, min(height, width) // 2), 0
    while side >= MIN_TILE:
        step = side // 2
        tiles += [Tile(level, Box(x, y, min(width, x + side), min(height, y + side)))
                  for y in range(0, max(1, height - step), step) for x in range(0, max(1, width - step), step)]
        side, level = side // 2, level + 1
    return tiles


def _scaled(faces: Sequence[ScoredBox], scale: float) -> list[ScoredBox]:
    """Boxes found on a copy shrunk by `scale`, in frame pixels."""
    if scale == 1.0:
        return list(faces)
    return [ScoredBox(f.box.scaled(1 / scale), f.score) for f in faces]
