"""Face detections cached by the face file's content and the detection settings.

Detection is the costliest stage of the original; a second run on the same video with
other audio, pads or blend mode needs the same raw boxes, so they are stored (a few KB
of JSON) and reused. Pads and smoothing are applied after the cache, so changing them
never invalidates it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Optional, Sequence

from ..geometry import Box
from ..storage import atomic
from ..storage.files import cache_home, sha256_file
from .detection import Detection

# Our own folder in the cache root: `prune_detection_cache` deletes only files in here that are named as we name
# them, so a root pointed at a folder of other files ($LIPSYNC_CACHE_DIR=~/.config) loses nothing.
CACHE_DIR = cache_home() / "detections"
FORMAT_VERSION = 2
KEY_LENGTH = 32
OWN_FILE = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}(\.json|\.\d+\.\d+\.partial)")  # entries, and stores cut short


def cache_key(face: str, detector: str, resize_factor: int, rotate: bool, crop: tuple, static: bool,
              det_max_side: int = 0) -> str:
    """Everything raw detections depend on: the file's bytes and the settings applied before detection."""
    settings = json.dumps([FORMAT_VERSION, sha256_file(face), detector, resize_factor, rotate, list(crop), static,
                           det_max_side])
    return hashlib.sha256(settings.encode()).hexdigest()[:KEY_LENGTH]


def load(key: str, frames_needed: int) -> Optional[list[Detection]]:
    """Cached detections for the first `frames_needed` frames (fewer when the clip is shorter), else None."""
    path = CACHE_DIR / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        detections = [Box.of(d) if d is not None else None for d in data["detections"]]
        complete = bool(data["complete"])
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None
    if not all(d is None or _plausible(d) for d in detections):
        return None  # a damaged entry (an inverted or negative box) is detected again, and then overwritten
    if len(detections) < frames_needed and not complete:
        return None
    try:
        os.utime(path)  # a cache entry in use is kept by `prune`
    except OSError:
        pass
    return detections[:frames_needed]


def _plausible(box: Box) -> bool:
    """What a detector can have written: a non-empty box in non-negative frame pixels."""
    return 0 <= box.x1 < box.x2 and 0 <= box.y1 < box.y2


def store(key: str, detections: Sequence[Detection], complete: bool) -> None:
    """Save atomically; `complete` means the list covers the whole clip. A cache that cannot be written is skipped."""
    try:
        atomic.write_text(CACHE_DIR / f"{key}.json", json.dumps({"detections": detections, "complete": complete}))
    except OSError:
        pass


def prune_detection_cache(max_age_seconds: float) -> int:
    """Delete cached detections not used for `max_age_seconds` (a public server keeps visitors' boxes no longer
    than their results); returns how many were deleted. Only files named as `store` names them are touched."""
    deleted = 0
    now = time.time()
    for path in CACHE_DIR.iterdir() if CACHE_DIR.is_dir() else ():
        try:
            if OWN_FILE.fullmatch(path.name) and path.is_file() and not path.is_symlink() \
                    and now - path.stat().st_mtime > max_age_seconds:
                path.unlink()
                deleted += 1
        except OSError:
            pass
    return deleted
