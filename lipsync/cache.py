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
import threading
from pathlib import Path
from typing import Optional

from .faces import Detection

CACHE_DIR = Path(os.environ.get("LIPSYNC_CACHE_DIR", Path.home() / ".cache" / "lipsync" / "detections"))
FORMAT_VERSION = 2


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(face: str, detector: str, resize_factor: int, rotate: bool, crop: tuple, static: bool,
              det_max_side: int = 0) -> str:
    """Everything raw detections depend on: the file's bytes and the settings applied before detection."""
    settings = json.dumps([FORMAT_VERSION, file_digest(face), detector, resize_factor, rotate, list(crop), static,
                           det_max_side])
    return hashlib.sha256(settings.encode()).hexdigest()[:32]


def load(key: str, frames_needed: int) -> Optional[list[Detection]]:
    """Cached detections for the first `frames_needed` frames (fewer when the clip is shorter), else None."""
    path = CACHE_DIR / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        detections = [tuple(int(v) for v in d) if d is not None else None for d in data["detections"]]
        complete = bool(data["complete"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(detections) < frames_needed and not complete:
        return None
    return detections[:frames_needed]


def store(key: str, detections: list[Detection], complete: bool) -> None:
    """Save atomically; `complete` means the list covers the whole clip. A cache that cannot be written is skipped."""
    partial = CACHE_DIR / f"{key}.{os.getpid()}.{threading.get_ident()}.partial"
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"detections": detections, "complete": complete}))
        os.replace(partial, CACHE_DIR / f"{key}.json")
    except OSError:
        partial.unlink(missing_ok=True)
