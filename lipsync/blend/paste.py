"""Pasting the generated 96x96 face back into the frame.

'box' is the official paste: the generated face, resized to the crop, replaces the
crop's pixels outright (a visible seam where skin tones differ). 'feather' blends the
same pixels through a mask that fades out over the crop's outer margin, so the centre
of the crop is exactly the 'box' result and its border melts into the original.
'mouth' takes only the lower face (lips, mouth, chin, lower jaw line) from the
generator, through a soft elliptical mask that is exactly 0 above the middle of the box
(eyes, brows, forehead, upper nose, hair and background stay the frame's own pixels,
bit for bit), after matching the generated pixels' colour to the frame's skin around
the mask (the mean of each Lab channel over the ring where the mask fades out).

`paste` also takes a weight in [0, 1] that scales the generated pixels' share (the
cross-fade into and out of a pause, lipsync.blend.pauses); weight 0 leaves the frame as it is.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..geometry import Box

FEATHER_MARGIN = 0.12  # fraction of the crop's size over which the mask fades out

# The mouth mask, in fractions of the crop (width for x, height for y). Wav2Lip's crop runs from the brows
# (or the forehead) to just under the chin; its generator paints the lower half, where the mouth is.
MOUTH_TOP = 0.50  # the mask is exactly 0 above this line (the generator's own masked half starts here)
MOUTH_FULL = 0.64  # ... and rises (smoothstep) to its full height by this line, under the nose
MOUTH_CENTRE = (0.50, 0.74)  # centre of the ellipse (x, y): the mouth
MOUTH_AXES = (0.34, 0.23)  # semi-axes of the ellipse before feathering: cheek to cheek, nose to chin
MOUTH_SIGMA = 0.055  # Gaussian feather, fraction of the crop's smaller side
MOUTH_EDGE = 0.04  # the mask reaches 0 this far inside the crop's sides and bottom, whatever the blur
COLOUR_RING = (0.05, 0.5)  # mask values between which the skin is compared for the colour match
COLOUR_MIN_PIXELS = 16  # fewer ring pixels than this (tiny faces): no colour match


def paste_box(frame: np.ndarray, face: np.ndarray, crop: Box) -> None:
    """Resize the generated face to the crop (cv2 default, bilinear) and overwrite it, in place."""
    frame[crop.slices()] = cv2.resize(face, (crop.width, crop.height))


@lru_cache(maxsize=64)
def feather_mask(height: int, width: int) -> np.ndarray:
    """A (h, w, 1) float32 mask: 1 inside, easing to 0 at the crop's edges (smoothstep ramps)."""
    def ramp(n: int) -> np.ndarray:
        margin = max(1.0, n * FEATHER_MARGIN)
        pos = np.arange(n, dtype=np.float32) + 0.5
        t = np.clip(np.minimum(pos, n - pos) / margin, 0.0, 1.0)
        return t * t * (3 - 2 * t)

    return (ramp(height)[:, None] * ramp(width)[None, :])[..., None]


def paste_feather(frame: np.ndarray, face: np.ndarray, crop: Box) -> None:
    resized = cv2.resize(face, (crop.width, crop.height)).astype(np.float32)
    alpha = feather_mask(crop.height, crop.width)
    region = frame[crop.slices()].astype(np.float32)
    frame[crop.slices()] = np.clip(region + alpha * (resized - region) + 0.5, 0, 255).astype(np.uint8)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


@lru_cache(maxsize=64)
def mouth_mask(height: int, width: int) -> tuple[np.ndarray, int]:
    """The mouth mask of a crop of this size, (h, w, 1) float32 in [0, 1], and its first non-zero row.

    A feathered ellipse over the lower half of the crop, exactly 0 above `MOUTH_TOP` and at the
    crop's edges. Cached by size: the same box size gives the same mask, so it follows the face
    without flicker. Read-only (it is shared).
    """
    v = (np.arange(height, dtype=np.float32) + 0.5) / height  # row centres, 0..1 down the crop
    u = (np.arange(width, dtype=np.float32) + 0.5) / width
    (cx, cy), (ax, ay) = MOUTH_CENTRE, MOUTH_AXES
    core = ((((u[None, :] - cx) / ax) ** 2 + ((v[:, None] - cy) / ay) ** 2) <= 1.0).astype(np.float32)
    sigma = max(0.5, MOUTH_SIGMA * min(height, width))
    mask = cv2.GaussianBlur(core, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    if mask.ndim == 1:  # a one-pixel crop comes back flat
        mask = mask.reshape(height, width)
    mask = np.clip(mask * 1.02, 0.0, 1.0)  # the blurred core reaches exactly 1 in the middle
    top = _smoothstep((v - MOUTH_TOP) / (MOUTH_FULL - MOUTH_TOP))  # 0 on and above the line
    top[v <= MOUTH_TOP] = 0.0
    margin_y, margin_x = max(1.0, MOUTH_EDGE * height), max(1.0, MOUTH_EDGE * width)
    bottom = _smoothstep((height - 1 - np.arange(height)) / margin_y)  # 0 on the outermost row and columns
    sides = _smoothstep(np.minimum(np.arange(width), width - 1 - np.arange(width)) / margin_x)
    mask = (mask * (top * bottom)[:, None] * sides[None, :]).astype(np.float32)
    mask[mask < 1e-4] = 0.0  # no invisible dust where the frame must stay its own
    rows = np.flatnonzero(mask.any(axis=1))
    first = int(rows[0]) if len(rows) else height
    mask = mask[..., None]
    mask.setflags(write=False)
    return mask, first


def match_colour(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`generated` (float32 BGR 0..255) with each Lab channel's mean moved to the original's over the
    ring where the mask fades out (the skin around the mouth region). Unchanged when the ring is too
    small to measure (tiny faces).

    Only the means: the generated face is a 96x96 image blown up, so its spread over the ring is
    lower than the frame's for want of texture, not for its tone; matching the spread too (gain
    clipped to 0.7..1.4) raised the seam figure on real Wav2Lip output (bench/blend_bench.py).
    """
    ring = (mask[..., 0] > COLOUR_RING[0]) & (mask[..., 0] < COLOUR_RING[1])
    if int(ring.sum()) < COLOUR_MIN_PIXELS:
        return generated

    def lab(pixels: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(pixels[:, None, :] / 255.0, cv2.COLOR_BGR2LAB)[:, 0, :]

    shift = lab(original[ring]).mean(axis=0) - lab(generated[ring]).mean(axis=0)
    gen_lab = cv2.cvtColor(generated / 255.0, cv2.COLOR_BGR2LAB) + shift.astype(np.float32)
    return np.clip(cv2.cvtColor(gen_lab, cv2.COLOR_LAB2BGR) * 255.0, 0.0, 255.0)


def paste_mouth(frame: np.ndarray, face: np.ndarray, crop: Box, colour: bool = True) -> None:
    """Blend the generated lower face into the frame through `mouth_mask`, colour-matched, in place.

    Only the rows from the mask's first non-zero row down, and only the part of the crop inside
    the frame, are read or written; everything else is left exactly as it was.
    """
    if crop.width <= 0 or crop.height <= 0:
        return
    mask, first = mouth_mask(crop.height, crop.width)
    height, width = frame.shape[:2]
    # the part of the crop that is inside the frame and under the mask, in crop coordinates
    y1, y2 = max(first, -crop.y1), min(crop.height, height - crop.y1)
    x1, x2 = max(0, -crop.x1), min(crop.width, width - crop.x1)
    if y1 >= y2 or x1 >= x2:
        return
    resized = cv2.resize(face, (crop.width, crop.height))[y1:y2, x1:x2].astype(np.float32)
    alpha = mask[y1:y2, x1:x2]
    target = (slice(crop.y1 + y1, crop.y1 + y2), slice(crop.x1 + x1, crop.x1 + x2))
    region = frame[target].astype(np.float32)
    if colour:
        resized = match_colour(resized, region, alpha)
    frame[target] = np.clip(region + alpha * (resized - region) + 0.5, 0, 255).astype(np.uint8)


PASTES = {"box": paste_box, "feather": paste_feather, "mouth": paste_mouth}


def paste(mode: str, frame: np.ndarray, face: np.ndarray, crop: Box, weight: float = 1.0) -> None:
    """Paste `face` into `frame` at `crop` the `mode` way, in place; `weight` < 1 keeps that share of
    the frame's own pixels (0: the frame is not touched)."""
    if weight >= 1.0:
        PASTES[mode](frame, face, crop)
        return
    if weight <= 0.0:
        return
    area = crop.clipped(*frame.shape[:2])
    if area.width <= 0 or area.height <= 0:
        return
    before = frame[area.slices()].astype(np.float32)
    PASTES[mode](frame, face, crop)
    after = frame[area.slices()].astype(np.float32)
    frame[area.slices()] = np.clip(before + weight * (after - before) + 0.5, 0, 255).astype(np.uint8)


def alpha_map(mode: str, crop: Box, height: int, width: int) -> np.ndarray:
    """The share of generated pixels at each pixel of a height x width frame (float32), for measuring."""
    alpha = np.zeros((height, width), np.float32)
    if mode == "box":
        crop_alpha = np.ones((crop.height, crop.width), np.float32)
    elif mode == "feather":
        crop_alpha = feather_mask(crop.height, crop.width)[..., 0]
    else:
        crop_alpha = mouth_mask(crop.height, crop.width)[0][..., 0]
    area = crop.clipped(height, width)
    alpha[area.slices()] = crop_alpha[area.y1 - crop.y1: area.y2 - crop.y1, area.x1 - crop.x1: area.x2 - crop.x1]
    return alpha


def _sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img = image.astype(np.float32)
    gx, gy = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    return (gx, gy) if gx.ndim == 3 else (gx[..., None], gy[..., None])


def seam_ratio(result: np.ndarray, original: np.ndarray, alpha: np.ndarray) -> float:
    """Mean gradient across the mask's border in `result`, over the original frame's own gradient there.

    The border is where the mask, blurred a little (so a hard box edge gets a band a few pixels
    wide), is neither 0 nor 1; "across" is along the mask's normal (the direction its value
    changes), per colour channel, combined. Under 1: the paste adds no edge; a seam shows as a
    ratio over 1.
    """
    soft = cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), 1.0)
    band = (soft > 0.05) & (soft < 0.95)
    if not band.any():
        return 1.0
    nx, ny = cv2.Sobel(soft, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(soft, cv2.CV_32F, 0, 1, ksize=3)
    norm = np.maximum(np.sqrt(nx * nx + ny * ny), 1e-12)
    nx, ny = (nx / norm)[..., None], (ny / norm)[..., None]

    def across(image: np.ndarray) -> float:
        gx, gy = _sobel(image)
        return float(np.sqrt(((gx * nx + gy * ny) ** 2).sum(axis=2))[band].mean())

    return across(result) / max(across(original), 1e-6)
