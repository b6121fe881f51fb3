"""File helpers shared by the weights, the detection cache and the model cache (where derived copies of a
checkpoint live: its memory-mapped state dict, its OpenVINO conversion)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import atomic


def sha256_file(path: str | Path) -> str:
    """The SHA256 of a file's bytes, read 4 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_home() -> Path:
    """lipsync's cache root: $LIPSYNC_CACHE_DIR, else ~/.cache/lipsync. Each cache has its own folder inside it
    (detections/, models/), so the root can be any folder: lipsync writes and prunes only inside its own
    subfolders, never next to a file of yours. Read at each call."""
    root = os.environ.get("LIPSYNC_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "lipsync"


def cache_root() -> Path:
    """Where converted models live: $LIPSYNC_MODEL_CACHE, else models/ in the cache root (`cache_home`)."""
    env = os.environ.get("LIPSYNC_MODEL_CACHE")
    return Path(env) if env else cache_home() / "models"


def checkpoint_sha256(path: str | os.PathLike, root: Path | None = None) -> str:
    """SHA256 of a checkpoint, memoised by (real path, size, mtime) so a 436 MB file is hashed once, not per start."""
    root = root or cache_root()
    st = os.stat(path)
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = root / "sha256.json"
    try:
        memo = json.loads(memo_file.read_text())
        if key in memo:
            return memo[key]
    except (OSError, ValueError, TypeError):
        memo = {}
    digest = sha256_file(path)
    try:
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = digest
        atomic.write_text(memo_file, json.dumps(memo))
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return digest
