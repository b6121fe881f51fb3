"""One rectangle type for the whole package: `Box`, corners in frame pixels, end-exclusive.

Detectors, trackers, crops, pads, the preview and the blend all speak `Box`. Its corners
are integers once a box leaves a detector (`Box.of` truncates, as the official code
does): crops, pads and slices need whole pixels. Inside a detector or tracker a box
keeps its fractions (BlazeFace's boxes, optical flow's shifts), so that rounding
happens once, at the end. The official
Wav2Lip order (top, bottom, left, right) appears only at the edges, the CLI flags and
the app's controls, through `Box.from_tblr` and `Box.tblr`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

IMG_SIZE = 96  # the side of the generator's square face crops, in and out


class Box(NamedTuple):
    x1: float  # int once truncated by Box.of
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_tblr(cls, top: int, bottom: int, left: int, right: int) -> "Box":
        return cls(int(left), int(top), int(right), int(bottom))

    @classmethod
    def of(cls, values: Sequence[float]) -> "Box":
        """A Box from any four numbers (x1, y1, x2, y2), truncated to integers as the official code does."""
        x1, y1, x2, y2 = (int(v) for v in values)
        return cls(x1, y1, x2, y2)

    @property
    def tblr(self) -> tuple[int, int, int, int]:
        return self.y1, self.y2, self.x1, self.x2

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def size(self) -> float:
        """The longer side: how big a face is, whichever way it is turned."""
        return max(self.width, self.height)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    @property
    def area(self) -> float:
        return max(0, self.width) * max(0, self.height)

    def inside(self, height: int, width: int) -> bool:
        """Whether the box is non-empty and lies within a height x width frame."""
        return 0 <= self.x1 < self.x2 <= width and 0 <= self.y1 < self.y2 <= height

    def clipped(self, height: int, width: int) -> "Box":
        return Box(max(0, self.x1), max(0, self.y1), min(width, self.x2), min(height, self.y2))

    def padded(self, pads: Sequence[int], height: int, width: int) -> "Box":
        """Widened by pads (top, bottom, left, right) and clipped to the frame, as the official code pads."""
        top, bottom, left, right = pads
        return Box(self.x1 - left, self.y1 - top, self.x2 + right, self.y2 + bottom).clipped(height, width)

    def contains(self, x: float, y: float) -> bool:
        return self.x1 <= x < self.x2 and self.y1 <= y < self.y2

    def scaled(self, factor: float) -> "Box":
        """Every corner times `factor` (a box on a resized copy of the frame), fractions kept."""
        return Box(self.x1 * factor, self.y1 * factor, self.x2 * factor, self.y2 * factor)

    def shifted(self, dx: float, dy: float) -> "Box":
        return Box(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy)

    def _intersection(self, other: "Box") -> float:
        return Box(max(self.x1, other.x1), max(self.y1, other.y1), min(self.x2, other.x2), min(self.y2, other.y2)).area

    def iou(self, other: "Box") -> float:
        inter = self._intersection(other)
        union = self.area + other.area - inter
        return inter / union if union else 0.0

    def overlap(self, other: "Box") -> float:
        """The intersection over the smaller box's area: 1 when one box lies inside the other."""
        smaller = min(self.area, other.area)
        return self._intersection(other) / smaller if smaller > 0 else 0.0

    def slices(self) -> tuple[slice, slice]:
        """numpy index of the box in a frame: frame[box.slices()]."""
        return slice(self.y1, self.y2), slice(self.x1, self.x2)
