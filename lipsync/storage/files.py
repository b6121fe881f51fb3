"""File helpers shared by the weights, the detection cache and the model cache (where derived copies of a
checkpoint live: its memory-mapped state dict, its OpenVINO conversion)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..environment import CACHE_DIR, MODEL_CACHE
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
    return CACHE_DIR.read() or Path.home() / ".cache" / "lipsync"


def cache_root() -> Path:
    """Where converted models live: $LIPSYNC_MODEL_CACHE, else models/ in the cache root (`cache_home`)."""
    return MODEL_CACHE.read() or cache_home() / "models"


def file_identity(path: str | os.PathLike) -> dict[str, int]:
    """What says a file is still the one hashed: size, mtime_ns, inode and ctime_ns.

    Size and mtime alone are not enough: `cp -p`, `rsync -a` or unpacking an archive put a
    file of the same size in place with the old mtime (a checkpoint replaced so gave the old
    one's OpenVINO model, reported as cached). The ctime cannot be set back by a user: any
    write, in place (same inode) or by a rename over the old file (a new inode), moves it on."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino, "ctime_ns": st.st_ctime_ns}


def file_sha256(path: str | os.PathLike, root: Path | None = None) -> str:
    """SHA256 of a file, remembered in `root`/sha256.json (root: the model cache) per real path with its
    identity (`file_identity`), so a 436 MB checkpoint or a 350 MB cached model is hashed once, not at every
    start, and hashed again once it changes in any way. Stat first, then hash: a file changed while it is
    hashed has a new identity by the next call."""
    root = root or cache_root()
    real, identity = os.path.realpath(path), file_identity(path)
    memo = _read_memo(root)
    entry = memo.get(real)
    if isinstance(entry, dict) and entry.get("identity") == identity and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = sha256_file(path)
    memo[real] = {"identity": identity, "sha256": digest}
    try:
        atomic.write_text(root / "sha256.json", json.dumps(_existing(memo)))
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return digest


checkpoint_sha256 = file_sha256  # a checkpoint's SHA256: the model cache's key


def _read_memo(root: Path) -> dict:
    try:
        memo = json.loads((root / "sha256.json").read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _existing(memo: dict) -> dict:
    """The memo without the files that are gone (superseded cache entries, deleted checkpoints)."""
    return {path: entry for path, entry in memo.items() if os.path.exists(path)}
