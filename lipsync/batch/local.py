"""Running a batch's jobs on this machine: in this process (one worker), or in worker processes (several).

Several workers are processes of our own (spawned, so CUDA is safe), each loading its
model once and then taking one job at a time through a pipe: the parent hands the next
job to whichever worker is idle. Every worker says at start whether its model loaded; one
that failed is dropped (the others take its share), and the batch stops with that
sentence only when none loaded, as on Ray. A worker that dies fails its job alone.
Only the standard library is used.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Sequence

from ..errors import LipSyncError
from ..options import EngineOptions
from ..runtime.devices import import_torch
from ..runtime.interrupts import InterruptFlag
from .manifest import Job
from .report import JobResult
from .worker import Worker, cpu_count

log = logging.getLogger("lipsync.batch.run")

MakeWorker = Callable[[EngineOptions, int], Worker]  # (engine options, threads) -> a worker, in its process
STOP_SECONDS = 60  # how long stopped workers get to unwind their jobs (delete partial files) before being killed


def run_in_this_process(jobs: Sequence[Job], engine_options: EngineOptions,
                        started: Callable[[int], None] = lambda n: None,
                        check: Callable[[], None] = lambda: None) -> Iterator[JobResult]:
    """One worker: this process loads the model once; Ctrl-C unwinds the job in flight, which deletes its partial
    file. `check` is the batch's `InterruptFlag.check`, called at every step of a job."""
    worker = Worker(engine_options)
    if worker.ready():
        raise LipSyncError(worker.ready())
    log.info("Model %s", worker.describe())
    started(1)
    for job in jobs:
        yield worker.run(job, check)


@dataclass
class _Process:
    """One worker process, our end of its pipe, and the job it runs (None: idle)."""

    process: Any
    conn: Connection
    job: Job | None = None


def run_in_processes(jobs: Sequence[Job], engine_options: EngineOptions, workers: int,
                     started: Callable[[int], None] = lambda n: None,
                     make_worker: MakeWorker = Worker,
                     late: Callable[[JobResult], None] = lambda result: None) -> Iterator[JobResult]:
    """`workers` processes, one model each, fed one job at a time each (see the module doc).

    `started` is told how many workers loaded their model; `make_worker` builds the worker in each process
    (a module-level callable: it is sent to a spawned process); `late` gets the results of jobs that finished
    while the batch was being stopped (their outputs are complete: the report should say so).
    """
    context = multiprocessing.get_context("spawn")
    gpus = _gpus(engine_options, workers)
    threads = 0 if gpus else max(1, cpu_count() // workers)
    procs: list[_Process] = []
    try:
        for index in range(workers):
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, name=f"lipsync-batch-worker-{index}", daemon=True,
                                      args=(theirs, engine_options, threads, gpus[index] if gpus else None,
                                            make_worker))
            process.start()
            theirs.close()
            procs.append(_Process(process, ours))
        idle = _loaded(procs)
        started(len(idle))
        queue = deque(jobs)
        busy: list[_Process] = []
        while queue or busy:
            while queue and idle:
                worker = idle.pop()
                worker.job = queue.popleft()
                worker.conn.send(worker.job)
                busy.append(worker)
            if not busy:  # every worker died: the jobs left cannot run
                while queue:
                    yield JobResult.of(queue.popleft(), "failed", "No worker process was left to run it (they "
                                                                  "stopped; see the errors above).")
                break
            for conn in wait([w.conn for w in busy]):
                worker = next(w for w in busy if w.conn is conn)
                busy.remove(worker)
                job, worker.job = worker.job, None
                try:
                    result = conn.recv()
                except (EOFError, OSError):  # the process died: its job failed, the others go on without it
                    worker.process.join(timeout=5)
                    yield JobResult.of(job, "failed", "The worker process running it stopped (exit status "
                                                      f"{worker.process.exitcode}).")
                    continue
                idle.append(worker)
                yield result
    except BaseException:
        # Ctrl-C, SIGTERM or the caller stopping: interrupt the jobs in flight so their writers delete the partial
        # files. In a terminal the workers got Ctrl-C themselves already; from `kill` only we did.
        for worker in procs:
            if worker.job is not None and worker.process.is_alive():
                try:
                    os.kill(worker.process.pid, signal.SIGINT)
                except OSError:
                    pass
        raise
    finally:
        _end(procs, late)


def _gpus(engine_options: EngineOptions, workers: int) -> list[int] | None:
    """The GPU each worker is pinned to (round robin), or None without CUDA (or without torch: the CPU install)."""
    torch = import_torch()
    if torch is not None and torch.cuda.is_available() and engine_options.device in ("auto", "cuda"):
        return [i % torch.cuda.device_count() for i in range(workers)]
    return None


def _loaded(procs: list[_Process]) -> list[_Process]:
    """Wait for every worker's word on its model; drop the ones that failed; stop when none loaded."""
    errors: dict[int, str] = {}
    pending = {id(w.conn): w for w in procs}
    while pending:
        for conn in wait([w.conn for w in pending.values()]):
            worker = pending.pop(id(conn))
            try:
                error = conn.recv()
            except (EOFError, OSError):
                worker.process.join(timeout=5)
                error = f"The worker process stopped while loading the model (exit status {worker.process.exitcode})."
            if error:
                errors[id(worker)] = error
    good = [w for w in procs if id(w) not in errors]
    if not good:
        raise LipSyncError(next(iter(errors.values())))
    for worker in procs:
        if id(worker) in errors:
            log.warning("A worker process could not load the model and is left out: %s", errors[id(worker)])
    return good


def _end(procs: list[_Process], late: Callable[[JobResult], None]) -> None:
    """Tell idle workers to stop, give busy ones time to unwind (or to hand over a job that finished meanwhile),
    then make sure every process is gone."""
    for worker in procs:
        try:
            worker.conn.send(None)
        except (OSError, ValueError):
            pass
    for worker in procs:
        if worker.job is not None:
            try:
                if worker.conn.poll(STOP_SECONDS):
                    late(worker.conn.recv())
            except (EOFError, OSError):
                pass  # stopped mid-job: its writer deleted the partial file
        worker.process.join(timeout=STOP_SECONDS)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()


def _serve(conn: Connection, engine_options: EngineOptions, threads: int, gpu: int | None,
           make_worker: MakeWorker) -> None:
    """A worker process: load the model, say whether it loaded, then run the jobs it is sent until told to stop.

    Idle, it ignores Ctrl-C and SIGTERM (the parent decides; the pipe's plumbing must not die with a
    traceback); while a job runs, either stops that job, whose writer then deletes its partial file.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if gpu is not None:  # before torch starts CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    worker = make_worker(engine_options, threads)
    conn.send(worker.ready())
    if worker.ready():
        return
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop = InterruptFlag()  # an interruption swallowed by a garbage-collection callback still ends the process
        try:
            result = worker.run(job, stop.check)
        except KeyboardInterrupt:
            return
        finally:
            stop.restore()
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        conn.send(result)
