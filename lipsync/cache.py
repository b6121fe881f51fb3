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
from pathlib import Path
from typing import Optional

from .faces import Detection

CACHE_DIR = Path(os.environ.get("LIPSYNC_CACHE_DIR", Path.home() / ".cache" / "lipsync" / "detections"))
FORMAT_VERSION = 1


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_key(face: str, detector: str, resize_factor: int, rotate: bool, crop: tuple, static: bool) -> str:
    settings = json.dumps([FORMAT_VERSION, file_digest(face), detector, resize_factor, rotate, list(crop), static])
    return hashlib.sha256(settings.encode()).hexdigest()[:32]


def load(key: str, frames_needed: int) -> Optional[tuple[list[Detection], tuple[int, int]]]:
    """Cached detections for at least `frames_needed` frames (or for the whole clip), else None."""
    path = CACHE_DIR / f"{key}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    detections = [tuple(d) if d is not None else None for d in data["detections"]]
    if len(detections) < frames_needed and not data["complete"]:
        return None
    return detections[:frames_needed], tuple(data["size"])


def store(key: str, detections: list[Detection], size: tuple[int, int], complete: bool) -> None:
    """Save atomically; a cache that cannot be written is simply not used."""
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = CACHE_DIR / f"{key}.{os.getpid()}.partial"
        partial.write_text(json.dumps({"detections": detections, "size": list(size), "complete": complete}))
        os.replace(partial, CACHE_DIR / f"{key}.json")
    except OSError:
        pass
