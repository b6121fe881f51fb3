"""What a batch's jobs may write: checked before any job starts, so a batch never overwrites what it should not.

Outputs are written atomically by the engine's VideoWriter (a hidden partial file,
moved into place only when ffmpeg has finished), so a file at an output path is always
complete. A rerun therefore skips a job whose output probes as a video of positive
duration (`is_complete`); probing rather than trusting existence also tells a file put
there by something else, which is refused rather than overwritten. We chose this over a
sidecar marker: no extra file next to every output, and outputs made by an earlier run
or by the one-clip CLI count too. What it cannot see is a changed row (other pads, a
replaced input): use --force for that.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Mapping, Sequence

from ..errors import LipSyncError
from .manifest import Job, ManifestError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")  # the result is an H.264 MP4; these names say so to every player


def check_jobs(jobs: Sequence[Job], force: bool = False, protected: Mapping[str, str] | None = None) -> set[int]:
    """Refuse, before any job starts, every output that would destroy something; returns the rows whose output
    is already complete (to skip unless `force`).

    An output may not be: a folder; a file in `protected` (path: what it is, e.g. the manifest and the report);
    any job's face or audio; another job's output; a name without a video suffix; an existing file that is not a
    complete video from an earlier run (unless `force`, which never lets an input be overwritten). Every row at
    fault gets its sentence (one `ManifestError` with all of them), then unwritable folders are refused.
    """
    if not jobs:
        raise ManifestError("There are no jobs to run.")
    nul = [f"Job {job.row}: a file name contains a NUL character; check the manifest's paths."
           for job in jobs if any("\0" in p for p in (job.face, job.audio, job.output))]
    if nul:
        raise ManifestError(*nul)
    taken = _Files()
    for path, what in (protected or {}).items():
        taken.add(path, f"the {what}")
    for job in jobs:
        taken.add(job.face, f"the face of job {job.row}", job.row)
        taken.add(job.audio, f"the audio of job {job.row}", job.row)
    problems: list[str] = []
    complete: set[int] = set()
    outputs = _Files()
    for job in jobs:
        problem = _problem(job, taken, outputs, force)
        if problem:
            problems.append(problem)
        elif is_complete(job.output):
            complete.add(job.row)
        outputs.add(job.output, f"job {job.row}", job.row)
    if problems:
        raise ManifestError(*problems)
    for folder in sorted({os.path.dirname(j.output) for j in jobs}):
        check_writable(folder)
    return complete


def _problem(job: Job, taken: "_Files", outputs: "_Files", force: bool) -> str | None:
    """The one sentence saying why this job's output may not be written, or None."""
    out = job.output
    if os.path.isdir(out):
        return f"The output of job {job.row}, '{out}', is a folder; give a file name."
    clash = taken.find(out)
    if clash is not None:
        what, row = clash
        if row == job.row:
            return f"Job {job.row} would overwrite its own input '{out}'; choose another output."
        return f"Job {job.row} would overwrite {what}, '{out}'; choose another output."
    earlier = outputs.find(out)
    if earlier is not None:
        return f"Jobs {earlier[1]} and {job.row} both write '{out}'; give each job its own output."
    if not out.lower().endswith(VIDEO_SUFFIXES):
        return (f"The output of job {job.row}, '{out}', is not named as a video; end it in .mp4 (the result is an "
                "MP4 video).")
    if os.path.lexists(out) and not force and not is_complete(out):
        return (f"The output of job {job.row}, '{out}', already exists and is not a complete video from an earlier "
                "run; move it away, or give --force to overwrite it.")
    return None


class _Files:
    """Files by identity: the same real path (links followed), or the same file under another name (a hard link)."""

    def __init__(self) -> None:
        self._paths: dict[str, tuple[str, int]] = {}
        self._inodes: dict[tuple[int, int], tuple[str, int]] = {}

    def add(self, path: str, what: str, row: int = 0) -> None:
        self._paths.setdefault(_real(path), (what, row))
        inode = _inode(path)
        if inode is not None:
            self._inodes.setdefault(inode, (what, row))

    def find(self, path: str) -> tuple[str, int] | None:
        """(what it is, its row) when `path` is a file already named here."""
        found = self._paths.get(_real(path))
        if found is None:
            inode = _inode(path)
            found = self._inodes.get(inode) if inode is not None else None
        return found


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_writable(folder: str) -> None:
    """Create the folder and prove a file can be made in it (permissions alone mislead, e.g. as root)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ManifestError(f"Cannot write in the output folder '{folder}' ({err.strerror or err}); choose outputs "
                            "in a folder you can write to.") from None


def is_complete(output: str) -> bool:
    """Whether an earlier run finished this output: a readable video of positive duration (see the module doc).

    Remembered by (path, size, modification time), so checking a batch and then running it probes each file once.
    """
    try:
        st = os.stat(output)
    except OSError:
        return False
    if not os.path.isfile(output):
        return False
    return _probed_complete(os.path.realpath(output), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _probed_complete(path: str, size: int, mtime_ns: int) -> bool:
    from ..media.probe import probe_media

    try:
        info = probe_media(path)
    except LipSyncError:
        return False
    return info.has_video and not info.is_image and info.duration > 0
