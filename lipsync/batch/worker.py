"""A batch worker: one loaded model and its face detectors, running jobs one after another.

What a local worker process or a Ray actor holds. The model is what costs: loading it
takes seconds and a clip of a few seconds takes about as long, so each worker loads it
once and runs job after job (the one-clip CLI reloads it per clip).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from ..environment import DEBUG
from ..errors import LipSyncError
from ..options import EngineOptions
from ..runtime.devices import import_torch
from .manifest import Job
from .report import JobResult

log = logging.getLogger("lipsync.batch.run")


class Worker:
    """One loaded model and its detectors, running jobs one after another: what a local process or Ray actor holds.

    Loading never raises: an error (a bad checkpoint) is kept and returned by `ready`, so
    the caller can drop this worker, or stop the batch when every worker failed, with
    the sentence the user needs rather than a remote traceback.
    """

    def __init__(self, engine_options: EngineOptions, threads: int = 0, allow_download: bool = True) -> None:
        self.load_error: str | None = None
        self.engine = None
        try:
            if threads > 0:  # a worker sharing the cores with others must not start a thread per core
                torch = import_torch()  # S3FD and the PyTorch backend; OpenVINO is given `threads` below
                if torch is not None:
                    torch.set_num_threads(threads)
            from ..engine import LipSync

            self.engine = LipSync(engine_options.checkpoint_path, engine_options.device, allow_download, threads)
        except LipSyncError as err:
            self.load_error = str(err)
        except Exception as err:  # reported as a sentence; the batch decides
            self.load_error = f"Loading the model failed ({type(err).__name__}: {err})."

    def ready(self) -> str | None:
        """None when the model is loaded, else the sentence saying why not."""
        return self.load_error

    def describe(self) -> str:
        return f"{self.engine.checkpoint_path} on {self.engine.device}" if self.engine else "not loaded"

    def run(self, job: Job, check: Callable[[], None] = lambda: None) -> JobResult:
        """Run one job; any failure becomes that job's result, so one bad row never stops the others.

        `check` is called at every step of the job (each batch of frames) and may raise KeyboardInterrupt to stop
        it: an interruption that Python swallowed (see lipsync.cli.flags.InterruptFlag) still stops the job in flight.
        """
        start = time.perf_counter()
        if self.engine is None:
            return JobResult.of(job, "failed", self.load_error or "The model is not loaded.")
        try:
            result = self.engine.sync(job.face, job.audio, job.output, job.options,
                                      progress=lambda stage, done, total: check())
        except LipSyncError as err:
            return JobResult.of(job, "failed", str(err), seconds=time.perf_counter() - start)
        except Exception as err:  # a bug, but one clip's bug must not cost the batch
            if DEBUG.read():
                log.exception("job %s", job.row)
            return JobResult.of(job, "failed", f"Unexpected error ({type(err).__name__}: {err}); this is a bug in "
                                               "lipsync, rerun with LIPSYNC_DEBUG=1 for the details.",
                                seconds=time.perf_counter() - start)
        return JobResult.of(job, "done", frames=result.frames, seconds=time.perf_counter() - start, score=result.score,
                            score_problem=result.score_problem or _offset_problem(result.offset_problem))


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total: containers and taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers() -> int:
    """One worker per GPU; on a CPU one worker, whose model uses every core.

    Measured on 2 cores (bench/RESULTS.md, batch section): two workers of one thread each
    ran no faster than one worker of two threads, and each holds its own model and
    detector in memory; one worker per GPU keeps each GPU busy with a model of its own.
    """
    torch = import_torch()  # None in the CPU install: one worker
    return torch.cuda.device_count() if torch is not None and torch.cuda.is_available() else 1


def _offset_problem(problem: str) -> str:
    """The report's one column for what went wrong with the score also says when a measured offset was not fixed."""
    return f"the offset was measured but not fixed: {problem}" if problem else ""
