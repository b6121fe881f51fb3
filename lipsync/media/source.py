"""The face input as a re-readable stream of prepared frames (resized, rotated, cropped).

A video is decoded as it is read, never held whole; a clip short enough to fit the
frame budget is kept after its first pass, so looping it under longer audio does not
start a decoder per loop. A photo is decoded once.
"""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

from ..errors import LipSyncError
from ..geometry import Box
from ..options import FULL_FRAME, Options
from ..runtime.devices import frame_budget_bytes
from ..runtime.timings import StageTimes
from .probe import MediaInfo
from .video import read_frames, read_image


def prepared_size(width: int, height: int, options: Options) -> tuple[int, int]:
    """(width, height) of a frame after resize, rotate and crop, computed from the source size alone."""
    if options.resize_factor > 1:
        width, height = width // options.resize_factor, height // options.resize_factor
    if options.rotate:
        width, height = height, width
    crop = crop_box(options, height, width)
    return (crop.width, crop.height) if crop else (width, height)


def crop_box(options: Options, height: int, width: int) -> Box | None:
    """The --crop region of a (resized, rotated) frame, or None for the whole frame."""
    if options.crop == FULL_FRAME:
        return None
    top, bottom, left, right = options.crop
    box = Box.from_tblr(top, height if bottom == -1 else bottom, left, width if right == -1 else right)
    if not box.inside(height, width):
        raise LipSyncError(f"--crop {' '.join(map(str, options.crop))} lies outside the {width}x{height} frame "
                           "(after resize/rotate). Give top bottom left right inside it.")
    return box


class FaceSource:
    """Prepared frames of a video or photo, as many passes as needed."""

    def __init__(self, info: MediaInfo, options: Options, timings: StageTimes | None = None) -> None:
        self.info = info
        self.options = options
        self.timings = timings or StageTimes()
        self.width, self.height = prepared_size(info.width, info.height, options)
        self._still = self.prepare(read_image(info.path)) if info.is_image else None
        self._kept: list[np.ndarray] | None = None  # every frame, once a short clip has been read through

    @property
    def static(self) -> bool:
        return self.info.is_image or self.options.static

    @property
    def frame_estimate(self) -> int:
        """Frames in the clip, from its duration (1 for a photo or --static)."""
        return 1 if self.static else max(1, round(self.info.duration * self.info.fps))

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        o = self.options
        if o.resize_factor > 1:
            frame = cv2.resize(frame, (frame.shape[1] // o.resize_factor, frame.shape[0] // o.resize_factor))
        if o.rotate:
            frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
        crop = crop_box(o, *frame.shape[:2])
        return np.ascontiguousarray(frame[crop.slices()]) if crop else frame

    def first(self) -> np.ndarray:
        """The first prepared frame (its decoder is stopped straight after)."""
        frames = self.frames(limit=1)
        try:
            return next(frames)
        finally:
            frames.close()

    def frames(self, limit: int = 0) -> Iterator[np.ndarray]:
        """One pass over the frames, from the first (at most `limit` when given)."""
        if self._still is not None:
            yield self._still.copy()
            return
        if self._kept is not None:
            yield from (f.copy() for f in self._kept[: limit or None])
            return
        keep: list[np.ndarray] | None = [] if not limit and not self.options.static else None
        budget = frame_budget_bytes()
        n = 0
        wanted = 1 if self.options.static else limit
        for frame in self.timings.timed("decode", read_frames(self.info, max_frames=wanted)):
            frame = self.prepare(frame)
            if keep is not None:
                budget -= frame.nbytes
                if budget >= 0:
                    keep.append(frame.copy())
                else:
                    keep = None  # too long to keep: later passes decode again
            yield frame
            n += 1
        if n == 0:
            raise LipSyncError(f"No frame could be decoded from '{self.info.path}'. Re-export it and try again.")
        if keep is not None:
            self._kept = keep

    def looped(self, total: int) -> Iterator[tuple[int, np.ndarray]]:
        """(frame index, frame) for `total` output frames: frames repeat when the audio is longer."""
        produced = 0
        if self.static:
            first = self.first()
            while produced < total:
                yield 0, first.copy()
                produced += 1
            return
        while produced < total:
            for index, frame in enumerate(self.frames()):
                yield index, frame
                produced += 1
                if produced == total:
                    return

    def head(self, limit: int) -> Iterator[np.ndarray]:
        """The first `limit` frames (one when static): those the output will use."""
        return self.frames(limit=1 if self.static else limit)
