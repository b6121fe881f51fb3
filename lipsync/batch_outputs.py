"""What a batch's jobs may write: checked before any job starts, so a batch never overwrites what it should not.

Outputs are written atomically by the engine's VideoWriter (a hidden partial file,
moved into place only when ffmpeg has finished), so a file at an output path is always
complete. A rerun therefore skips a job whose output probes as a video of positive
duration (`is_complete`); probing rather than trusting existence also catches a file
put there by something else. We chose this over a sidecar marker: no extra file next to
every output, and outputs made by an earlier run or by the one-clip CLI count too. What
it cannot see is a changed row (other pads, a replaced input): use --force for that.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

from .batch_manifest import Job, ManifestError
from .errors import LipSyncError


def check_jobs(jobs: Sequence[Job]) -> None:
    """What would make jobs clash or fail all alike, refused before any starts: duplicates, unwritable folders."""
    if not jobs:
        raise ManifestError("There are no jobs to run.")
    seen: dict[str, Job] = {}
    for job in jobs:
        key = os.path.normcase(os.path.realpath(job.output))
        if key in seen:
            raise ManifestError(f"Jobs {seen[key].row} and {job.row} both write '{job.output}'; give each job its own "
                                "output.")
        seen[key] = job
        if key in (os.path.normcase(os.path.realpath(job.face)), os.path.normcase(os.path.realpath(job.audio))):
            raise ManifestError(f"Job {job.row} would overwrite its own input '{job.output}'; choose another output.")
        if os.path.isdir(job.output):
            raise ManifestError(f"The output of job {job.row}, '{job.output}', is a folder; give a file name.")
    for folder in sorted({os.path.dirname(j.output) for j in jobs}):
        check_writable(folder)


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
    """Whether an earlier run finished this output: a readable video of positive duration (see the module doc)."""
    if not os.path.isfile(output):
        return False
    from .probe import probe_media

    try:
        info = probe_media(output)
    except LipSyncError:
        return False
    return info.has_video and not info.is_image and info.duration > 0
