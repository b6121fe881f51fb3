"""The batch's report: what became of each job, the totals, and the file scripts read (JSON or CSV).

Written atomically (a hidden partial file moved into place), so a script never reads a
half-written report, even after Ctrl-C.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from .. import atomic
from ..errors import LipSyncError
from .manifest import Job

STATUSES = ("done", "failed", "skipped", "cancelled")  # cancelled: not run because the batch was stopped


@dataclass
class JobResult:
    """What became of one job, as the report lists it."""

    row: int
    face: str
    audio: str
    output: str
    status: str  # one of STATUSES
    error: str = ""
    frames: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, job: Job, status: str, error: str = "", frames: int = 0, seconds: float = 0.0) -> "JobResult":
        return cls(job.row, job.face, job.audio, job.output, status, error, frames, round(seconds, 3))

    def line(self, done: int, total: int) -> str:
        """The one line the CLI prints for this job."""
        width = len(str(total))
        head = f"[{done:>{width}}/{total}] {self.status:<7} row {self.row}: {self.output}"
        if self.status == "done":
            return f"{head} ({self.frames} frames in {self.seconds:.1f} s)"
        if self.status == "skipped":
            return f"{head} (already complete; --force to redo)"
        return f"{head}: {self.error}" if self.error else head


@dataclass
class BatchReport:
    """Every job's result and the totals; written as JSON or CSV by `write`."""

    jobs: list[JobResult]
    seconds: float = 0.0  # wall time of the whole batch
    backend: str = "local"  # 'local' or 'ray'
    workers: int = 0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for j in self.jobs if j.status == status)

    @property
    def ok(self) -> bool:
        """Every job done or skipped: what exit status 0 means."""
        return all(j.status in ("done", "skipped") for j in self.jobs)

    @property
    def totals(self) -> dict[str, Any]:
        done = self.count("done")
        return {"jobs": len(self.jobs), **{s: self.count(s) for s in STATUSES},
                "frames": sum(j.frames for j in self.jobs), "seconds": round(self.seconds, 3),
                "job_seconds": round(sum(j.seconds for j in self.jobs), 3),
                "clips_per_minute": round(60 * done / self.seconds, 2) if self.seconds > 0 and done else 0.0,
                "backend": self.backend, "workers": self.workers, "interrupted": self.interrupted}

    def summary(self) -> str:
        """One line for the end of the CLI's output."""
        t = self.totals
        parts = [f"{t[s]} {s}" for s in STATUSES if t[s] or s != "cancelled"]
        return (f"{t['jobs']} jobs: {', '.join(parts)}; {t['frames']} frames in {t['seconds']:.1f} s "
                f"({self.backend}, {self.workers} worker{'s' if self.workers != 1 else ''})")

    def to_dict(self) -> dict[str, Any]:
        return {"totals": self.totals, "jobs": [asdict(j) for j in self.jobs]}

    def write(self, path: str | os.PathLike) -> str:
        """Write the report atomically: JSON for a .json name, else CSV (one row per job, then a 'total' row)."""
        path = os.path.abspath(path)
        if str(path).lower().endswith(".json"):
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            buffer = io.StringIO()
            names = [f.name for f in fields(JobResult)]
            writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
            writer.writeheader()
            for j in self.jobs:
                writer.writerow(asdict(j))
            t = self.totals
            writer.writerow({"row": "total", "status": "; ".join(f"{t[s]} {s}" for s in STATUSES),
                             "frames": t["frames"], "seconds": t["seconds"]})
            text = buffer.getvalue()
        _write_atomically(path, text)
        return path


def _write_atomically(path: str, text: str) -> None:
    """A report is read by scripts: it must never be seen half-written, even after Ctrl-C."""
    try:
        atomic.write_text(path, text)
    except OSError as err:
        raise LipSyncError(f"Cannot write the report '{path}' ({err.strerror}). Choose another --report.") \
            from None
