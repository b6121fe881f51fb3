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

from ..errors import LipSyncError
from ..storage import atomic
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
    # the sync score (--score, --min_sync_confidence; None, an empty cell: not scored)
    offset: int | None = None  # frames of 40 ms; positive: the sound early
    lse_c: float | None = None  # confidence, higher is better
    lse_d: float | None = None  # distance, lower is better
    low_sync: bool | None = None  # lse_c under --min_sync_confidence (None: no threshold, or not scored)
    score_problem: str = ""  # why a score asked for is missing (the video was made all the same)

    @classmethod
    def of(cls, job: Job, status: str, error: str = "", frames: int = 0, seconds: float = 0.0,
           score: Any = None, score_problem: str = "") -> "JobResult":
        """`score`: the job's SyncScore, or None."""
        figures = {} if score is None else {"offset": score.offset, "lse_c": round(score.lse_c, 4),
                                            "lse_d": round(score.lse_d, 4)}
        return cls(job.row, job.face, job.audio, job.output, status, error, frames, round(seconds, 3),
                   score_problem=score_problem, **figures)

    def judge(self, min_confidence: float | None) -> None:
        """Mark the job when its confidence is under `min_confidence` (--min_sync_confidence)."""
        self.low_sync = None if min_confidence is None or self.lse_c is None else self.lse_c < min_confidence

    def line(self, done: int, total: int) -> str:
        """The one line the CLI prints for this job."""
        width = len(str(total))
        head = f"[{done:>{width}}/{total}] {self.status:<7} row {self.row}: {self.output}"
        if self.status == "done":
            sync = "" if self.lse_c is None else \
                f"; sync LSE-C {self.lse_c:.2f}, LSE-D {self.lse_d:.2f}, offset {self.offset:+d}" + \
                (" (low)" if self.low_sync else "")
            unscored = f"; not scored: {self.score_problem}" if self.score_problem else ""
            return f"{head} ({self.frames} frames in {self.seconds:.1f} s{sync}{unscored})"
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
    min_sync_confidence: float | None = None  # --min_sync_confidence: jobs under it are marked low_sync

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
                "backend": self.backend, "workers": self.workers, "interrupted": self.interrupted,
                "scored": sum(1 for j in self.jobs if j.lse_c is not None),
                "low_sync": sum(1 for j in self.jobs if j.low_sync), "min_sync_confidence": self.min_sync_confidence}

    def summary(self) -> str:
        """One line for the end of the CLI's output."""
        t = self.totals
        parts = [f"{t[s]} {s}" for s in STATUSES if t[s] or s != "cancelled"]
        low = "" if self.min_sync_confidence is None else \
            f"; {t['low_sync']} of {t['scored']} scored under sync confidence {self.min_sync_confidence:g}"
        return (f"{t['jobs']} jobs: {', '.join(parts)}; {t['frames']} frames in {t['seconds']:.1f} s "
                f"({self.backend}, {self.workers} worker{'s' if self.workers != 1 else ''}){low}")

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
                             "frames": t["frames"], "seconds": t["seconds"],
                             "low_sync": t["low_sync"] if self.min_sync_confidence is not None else None})
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
