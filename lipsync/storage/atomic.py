"""Write-then-replace: the one way this project puts a file or a folder in place.

Everything a person, a script or another process may read while we write it (a result MP4, a batch report, the
face-box cache, a converted model, downloaded weights) is written under a hidden partial name in the same folder
and moved onto its real name in one `os.replace`. A reader therefore sees the whole thing or nothing, a crash or
Ctrl-C leaves no half-written file under the real name, and the partial is removed on every failure path.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PartialFile:
    """A hidden partial file beside `target`, moved onto it by `commit()` and deleted by `discard()`.

    For writers whose life is longer than one `with` block (the video encoder that ffmpeg fills while frames
    arrive); everything else uses `replacing()` or `write_text()`.
    """

    def __init__(self, target: str | os.PathLike[str], suffix: str = ".partial") -> None:
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.target.stem}.", suffix=suffix, dir=self.target.parent)
        os.close(fd)
        self.path = Path(name)

    def commit(self, mode: int = 0o644) -> Path:
        """Put the partial in place. mkstemp makes it private; `mode` makes it an ordinary file."""
        os.chmod(self.path, mode)
        os.replace(self.path, self.target)
        return self.target

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@contextmanager
def replacing(target: str | os.PathLike[str], suffix: str = ".partial") -> Iterator[Path]:
    """Yield a partial path to write; on a clean exit it replaces `target`, on any exception it is deleted."""
    partial = PartialFile(target, suffix)
    try:
        yield partial.path
        partial.commit()
    finally:
        partial.discard()


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8, newlines as given) to `target` atomically."""
    with replacing(target) as partial:
        partial.write_text(text, encoding="utf-8", newline="")
    return Path(target)


@contextmanager
def replacing_folder(target: str | os.PathLike[str], done_marker: str) -> Iterator[Path]:
    """Yield a hidden folder to fill; on a clean exit it becomes `target` (an old, damaged `target` is removed).

    Two processes may build the same entry at once: when the move fails because the other one got there first
    (`target/done_marker` exists), that entry is kept and ours dropped.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / done_marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
