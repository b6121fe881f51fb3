"""Batch dubbing: many clips from a manifest, on this machine or on a Ray cluster, one model per worker.

    python -m lipsync batch jobs.csv                      # local workers (lipsync.cli.batch)
    python -m lipsync batch jobs.jsonl --ray              # Ray: a local instance, or the cluster in $RAY_ADDRESS

`run_batch` is the whole batch: the jobs checked (batch_manifest: rows, batch_outputs:
what they may overwrite), complete outputs skipped, the rest run by an executor
(batch_local: this process or worker processes; batch_ray: Ray actors), one `JobResult`
per job gathered into the `BatchReport` (batch_report). Each worker (batch_worker) loads
the model once and turns any job's failure into that job's result, so one bad row never
stops the others. Ctrl-C or SIGTERM stops the jobs in flight (no partial files) and
still hands back the report, in `BatchInterrupted`.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping

from ..options import EngineOptions
from ..runtime.interrupts import InterruptFlag
from .local import run_in_processes, run_in_this_process
from .manifest import Job, ManifestError, as_jobs
from .outputs import check_jobs
from .ray_cluster import run_on_ray
from .report import BatchReport, JobResult
from .worker import default_workers

ProgressFn = Callable[[JobResult, int, int], None]  # (a finished job, jobs finished so far, jobs in all)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a batch: the jobs in flight were stopped (no partial files); `report` says what
    was done; `signal_number` which signal it was (lipsync.cli.flags.stop_status makes it the exit status)."""

    def __init__(self, report: BatchReport, signal_number: int = signal.SIGINT) -> None:
        super().__init__("batch stopped")
        self.report = report
        self.signal_number = signal_number


def run_batch(jobs: Iterable[Job | Mapping[str, Any]], workers: int | None = None, ray: str | bool | None = None,
              force: bool = False, progress: ProgressFn | None = None, checkpoint: str | None = None,
              device: str = "auto", base: str | os.PathLike | None = None,
              defaults: Mapping[str, Any] | None = None, protected: Mapping[str, str] | None = None,
              min_sync_confidence: float | None = None) -> BatchReport:
    """Run many jobs with the model loaded once per worker; returns the report of every job.

    `jobs`: Job objects (see `load_manifest`) or manifest-style dicts, e.g.
    {"face": "a.mp4", "audio": "a.wav", "output": "out/a.mp4", "pads": [0, 20, 0, 0]}.
    `ray`: None or False runs locally; True or "" a Ray instance (the cluster in
    $RAY_ADDRESS, else a new local one, or the one this process already started); a
    string, that address. `workers`: local processes or Ray actors (default: one per GPU,
    else one). Jobs whose output is already complete are skipped unless `force`.
    `protected`: files no job may write, by what they are ({path: "manifest"}); see
    batch_outputs.check_jobs for all that an output may not overwrite.
    `min_sync_confidence`: score every job (as Options.score) and mark those whose confidence (LSE-C) is under it
    (the report's `low_sync`).
    Raises ManifestError before any job when the jobs cannot be run, LipSyncError when
    no worker could load the model, and BatchInterrupted (a KeyboardInterrupt, with the
    report so far) after Ctrl-C.
    """
    started = time.perf_counter()
    jobs = as_jobs(jobs, base, defaults)
    if min_sync_confidence is not None:  # implies scoring
        jobs = [replace(job, options=job.options.with_changes(score=True)) for job in jobs]
    complete = check_jobs(jobs, force, protected)
    if workers is not None and workers < 1:
        raise ManifestError("--workers must be 1 or more.")
    engine_options = EngineOptions(checkpoint, device)
    results: dict[int, JobResult] = {}
    finished = 0

    def record(result: JobResult) -> None:
        nonlocal finished
        result.judge(min_sync_confidence)
        results[result.row] = result
        finished += 1
        if progress is not None:
            progress(result, finished, len(jobs))

    todo = []
    for job in jobs:
        if not force and job.row in complete:
            record(JobResult.of(job, "skipped"))
        else:
            todo.append(job)
    use_ray = ray is not None and ray is not False
    backend = "ray" if use_ray else "local"
    count = workers or (0 if use_ray else default_workers())
    report = BatchReport([], backend=backend, workers=count, min_sync_confidence=min_sync_confidence)

    def loaded(n: int) -> None:  # the workers whose model loaded: the report's count
        report.workers = n

    stop = InterruptFlag()
    try:
        if todo:
            if use_ray:
                address = ray if isinstance(ray, str) and ray else None
                stream = run_on_ray(todo, engine_options, workers, address, loaded)
            elif min(count, len(todo)) == 1:
                stream = run_in_this_process(todo, engine_options, loaded, stop.check)
            else:
                stream = run_in_processes(todo, engine_options, min(count, len(todo)), loaded, late=record)
            try:
                for result in stream:
                    record(result)
                    stop.check()
            finally:
                stream.close()  # at once, not when collected: stops the jobs in flight and the workers
    except KeyboardInterrupt as err:
        report.interrupted = True
        signal_number = getattr(stop.hit or err, "signal_number", signal.SIGINT)
    finally:
        stop.restore()
    report.jobs = [results.get(job.row) or JobResult.of(job, "cancelled") for job in jobs]
    report.seconds = time.perf_counter() - started
    if report.interrupted:
        raise BatchInterrupted(report, signal_number)
    return report
