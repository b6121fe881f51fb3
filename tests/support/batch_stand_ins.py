"""Stand-in batch workers (no model) for the local executor's own logic; importable by its spawned processes."""

from __future__ import annotations

import os
from pathlib import Path

from lipsync.batch.report import JobResult

FIRST_MARKER = "LIPSYNC_TEST_FIRST_WORKER"  # a path: the worker that creates it is the one that fails to load


class StandInWorker:
    """Says whether it "loaded"; runs a job by writing its process id into the output (and dies on 'die.txt')."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error

    def ready(self) -> str | None:
        return self.error

    def run(self, job, check=lambda: None) -> JobResult:
        if Path(job.output).name == "die.txt":
            os._exit(3)  # the process dies mid-job, as on a crash or an out-of-memory kill
        Path(job.output).write_text(str(os.getpid()))
        return JobResult.of(job, "done", frames=os.getpid())


def first_fails(engine_options, threads: int) -> StandInWorker:
    """The first worker process to get here cannot load its model; the others can."""
    try:
        os.close(os.open(os.environ[FIRST_MARKER], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return StandInWorker()
    return StandInWorker("The checkpoint 'x.pth' is damaged.")


def all_fail(engine_options, threads: int) -> StandInWorker:
    return StandInWorker("The checkpoint 'x.pth' is damaged.")
