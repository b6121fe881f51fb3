"""Batch dubbing: many clips from a manifest, on this machine or on a Ray cluster.

    python -m lipsync batch jobs.csv                      # local workers
    python -m lipsync batch jobs.jsonl --ray              # Ray: a local instance, or the cluster in $RAY_ADDRESS
    python -m lipsync batch jobs.csv --ray ray://head:10001

A manifest is a CSV file or JSON lines, one job per row: `face`, `audio`, `output`, and
any setting of `lipsync.options.Options` by its CLI name (pads, blend, resize_factor, …).
Relative paths are resolved against the manifest's folder. Flags given to the command
(e.g. `--detector haar`) are defaults for every row; a row's own value wins.

Why it is built this way:
- The model is what costs: loading it takes seconds and a clip of a few seconds takes
  about as long, so each worker loads the model (and its face detectors) once and runs
  job after job (`Worker`). The one-clip CLI reloads it per clip.
- Everything that can be refused is refused before any job starts (`load_manifest`,
  `check_jobs`): a manifest that cannot be parsed, an unknown column, a bad value (each
  row's `Options` is built up front), a duplicate output, an output folder that cannot
  be written. Those are `ManifestError` (exit status 2).
- A job that fails (missing file, no face, silent audio) fails alone: `Worker.run` turns
  its error into the job's result and the batch goes on.
- Outputs are written atomically by the engine's VideoWriter (a hidden partial file,
  moved into place only when ffmpeg has finished), so a file at an output path is always
  complete. A rerun therefore skips a job whose output probes as a video of positive
  duration (`is_complete`); probing rather than trusting existence also catches a file
  put there by something else (a truncated copy, a placeholder). We chose this over a
  sidecar marker: no extra file next to every output, and outputs made by an earlier run
  or by the one-clip CLI count too. What it cannot see is a changed row (other pads, a
  replaced input): use --force for that.
- Scheduling is not ours: locally it is the standard library's process pool (or, for
  one worker, this process), on a cluster it is Ray's actors, with Ray's restarts and
  task retries when a node is lost.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .errors import LipSyncError
from .options import EngineOptions, Options, declared

log = logging.getLogger(__name__)

FILE_COLUMNS = ("face", "audio", "output")
ALIASES = {"outfile": "output"}  # the one-clip CLI's name for the output
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
STATUSES = ("done", "failed", "skipped", "cancelled")  # cancelled: not run because the batch was stopped

ProgressFn = Callable[["JobResult", int, int], None]  # (a finished job, jobs finished so far, jobs in all)


class ManifestError(LipSyncError):
    """The manifest or the jobs it describes cannot be run; found before any job starts (exit status 2)."""


class _InterruptFlag:
    """Ctrl-C remembered as well as raised: Python drops a KeyboardInterrupt that lands in a garbage-collection
    callback ("Exception ignored in ..."), and short jobs make that likely; the batch then stops after the job
    that swallowed it, instead of running on. Only in the main thread, where signal handlers live."""

    def __init__(self) -> None:
        self.hit = False
        self.previous = None
        self.previous_hook = sys.unraisablehook
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)
            sys.unraisablehook = self._unraisable

    def _unraisable(self, info) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt) and self.hit:
            return  # remembered above: no "Exception ignored" traceback for the user
        self.previous_hook(info)

    def _on_sigint(self, signum, frame) -> None:
        self.hit = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            sys.unraisablehook = self.previous_hook
            self.previous = None


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch: the jobs in flight were stopped (no partial files); `report` says what was done."""

    def __init__(self, report: "BatchReport") -> None:
        super().__init__("batch stopped")
        self.report = report


# --------------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One clip to dub: absolute paths and checked options. `row` is its 1-based place in the manifest."""

    row: int
    face: str
    audio: str
    output: str
    options: Options = field(default_factory=Options)


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
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=".report.", suffix=".partial", dir=folder)
    except OSError as err:
        raise LipSyncError(f"Cannot write the report in '{folder}' ({err.strerror}). Choose another --report.") \
            from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


# --------------------------------------------------------------------------------------------------- manifest


def setting_types() -> dict[str, Any]:
    """Each per-row setting's default (its type follows from it), from the one declaration in lipsync.options."""
    return {name: default for name, default, _ in declared(Options)}


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise LipSyncError(f"The setting {name} must be true or false, not {value!r}.")


def convert_value(name: str, value: Any, default: Any) -> Any:
    """A manifest cell as the type of its setting: CSV gives text ('0 10 0 0'), JSON gives numbers and lists.

    Numbers are left to `Options` itself, which checks and coerces them; only the two
    spellings it cannot read (a boolean as text, a rectangle as one string) are turned here.
    """
    if isinstance(default, bool):
        return _parse_bool(name, value)
    if isinstance(default, tuple) and isinstance(value, str):
        parts = value.replace(",", " ").split()
        if len(parts) != len(default):
            raise LipSyncError(f"The setting {name} takes {len(default)} numbers, not {value!r}.")
        return tuple(parts)
    if isinstance(default, tuple) and not isinstance(value, (list, tuple)):
        raise LipSyncError(f"The setting {name} takes {len(default)} numbers, not {value!r}.")
    return value


def _canonical(column: Any) -> str:
    """A column name as a setting name: '--pads' and ' Pads ' both mean pads; outfile means output."""
    name = str(column).strip().lstrip("-").lower().replace("-", "_")
    return ALIASES.get(name, name)


def check_columns(columns: Iterable[Any], where: str) -> None:
    """Refuse a column that is neither a file column nor a declared setting, naming the ones that exist."""
    known = setting_types()
    engine = {name for name, _, _ in declared(EngineOptions)}
    for column in columns:
        name = _canonical(column)
        if name in FILE_COLUMNS or name in known:
            continue
        if name in engine:
            raise ManifestError(f"{where}: '{column}' is chosen for the whole batch (one model per worker), not per "
                                f"row; give it as --{name} to the batch command.")
        raise ManifestError(f"{where}: unknown column '{column}'. Known: {', '.join(FILE_COLUMNS)}, "
                            f"{', '.join(known)}.")


def job_from_row(row: Mapping[str, Any], number: int, base: str | os.PathLike,
                 defaults: Mapping[str, Any] | None = None, where: str = "Job") -> Job:
    """One manifest row as a checked Job: paths made absolute against `base`, Options built (so checked) now."""
    where = f"{where} {number}"
    check_columns(row.keys(), where)
    types = setting_types()
    values: dict[str, Any] = dict(defaults or {})
    files: dict[str, str] = {}
    for column, value in row.items():
        name = _canonical(column)
        if value is None or (isinstance(value, str) and value.strip() == ""):
            continue  # an empty cell keeps the default (CSV rows all have every column)
        if name in FILE_COLUMNS:
            if not isinstance(value, str):
                raise ManifestError(f"{where}: '{column}' must be a file path, not {value!r}.")
            files[name] = os.path.abspath(os.path.join(base, os.path.expanduser(value.strip())))
        else:
            try:
                values[name] = convert_value(name, value, types[name])
            except LipSyncError as err:
                raise ManifestError(f"{where}: {err}") from None
    missing = [c for c in FILE_COLUMNS if c not in files]
    if missing:
        raise ManifestError(f"{where} has no {' and no '.join(missing)}; every job needs face, audio and output.")
    try:
        options = Options(**values)
    except LipSyncError as err:
        raise ManifestError(f"{where}: {err}") from None
    return Job(number, files["face"], files["audio"], files["output"], options)


def read_rows(path: str) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """(line number, row) for each job in a CSV or JSON-lines manifest, and what a row is called in errors.

    The format follows the name (.jsonl, .ndjson, .json: JSON lines; anything else: CSV),
    so a malformed file is an error about the format the user meant, not a guess.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise ManifestError(f"The manifest '{path}' does not exist. Check the path.") from None
    except IsADirectoryError:
        raise ManifestError(f"'{path}' is a folder; give the manifest file (CSV or JSON lines).") from None
    except UnicodeDecodeError:
        raise ManifestError(f"The manifest '{path}' is not UTF-8 text; save it as a UTF-8 CSV or JSON-lines file.") \
            from None
    except OSError as err:
        raise ManifestError(f"Cannot read the manifest '{path}' ({err.strerror}).") from None
    if path.lower().endswith(JSON_SUFFIXES):
        return _read_jsonl(text, path), "Line"
    return _read_csv(text, path), "Row"


def _read_jsonl(text: str, path: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"Line {number} of the manifest '{path}' is not valid JSON ({err.msg}); each line "
                                "must be one object like {\"face\": ..., \"audio\": ..., \"output\": ...}.") from None
        if not isinstance(row, dict):
            raise ManifestError(f"Line {number} of the manifest '{path}' is not a JSON object; each line must be one "
                                "object like {\"face\": ..., \"audio\": ..., \"output\": ...}.")
        rows.append((number, row))
    return rows


def _read_csv(text: str, path: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        lines = [(reader.line_num, cells) for cells in reader]
    except csv.Error as err:
        raise ManifestError(f"The manifest '{path}' is not valid CSV (line {reader.line_num}: {err}).") from None
    lines = [(n, cells) for n, cells in lines if any(c.strip() for c in cells) and not cells[0].startswith("#")]
    if not lines:
        raise ManifestError(f"The manifest '{path}' is empty; its first line must name the columns, e.g. "
                            "face,audio,output.")
    _, header = lines[0]
    header = [h.strip() for h in header]
    if len(set(map(_canonical, header))) != len(header):
        raise ManifestError(f"The manifest '{path}' names a column twice in its first line.")
    rows = []
    for number, cells in lines[1:]:
        if len(cells) != len(header):
            raise ManifestError(f"Row {number} of the manifest '{path}' has {len(cells)} cells but the header has "
                                f"{len(header)}; quote a value that contains a comma.")
        rows.append((number, dict(zip(header, cells))))
    return rows


def load_manifest(path: str | os.PathLike, defaults: Mapping[str, Any] | None = None) -> list[Job]:
    """Every job of a manifest, checked; relative paths are resolved against the manifest's folder."""
    path = os.path.abspath(path)
    rows, word = read_rows(path)
    if not rows:
        raise ManifestError(f"The manifest '{path}' lists no jobs.")
    base = os.path.dirname(path)
    return [job_from_row(row, number, base, defaults, where=word) for number, row in rows]


def as_jobs(jobs: Iterable[Job | Mapping[str, Any]], base: str | os.PathLike | None = None,
            defaults: Mapping[str, Any] | None = None) -> list[Job]:
    """Jobs from Job objects or manifest-style dicts (relative paths against `base`, default the current folder)."""
    base = os.path.abspath(base or os.getcwd())
    out = []
    for number, job in enumerate(jobs, 1):
        out.append(job if isinstance(job, Job) else job_from_row(job, number, base, defaults))
    return out


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


# --------------------------------------------------------------------------------------------------- workers


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
                import torch

                torch.set_num_threads(threads)
            from .engine import LipSync

            self.engine = LipSync(engine_options.checkpoint_path, engine_options.device, allow_download)
        except LipSyncError as err:
            self.load_error = str(err)
        except Exception as err:  # noqa: BLE001  (reported as a sentence; the batch decides)
            self.load_error = f"Loading the model failed ({type(err).__name__}: {err})."

    def ready(self) -> str | None:
        """None when the model is loaded, else the sentence saying why not."""
        return self.load_error

    def describe(self) -> str:
        return f"{self.engine.checkpoint_path} on {self.engine.device}" if self.engine else "not loaded"

    def run(self, job: Job) -> JobResult:
        """Run one job; any failure becomes that job's result, so one bad row never stops the others."""
        start = time.perf_counter()
        if self.engine is None:
            return JobResult.of(job, "failed", self.load_error or "The model is not loaded.")
        try:
            result = self.engine.sync(job.face, job.audio, job.output, job.options)
        except LipSyncError as err:
            return JobResult.of(job, "failed", str(err), seconds=time.perf_counter() - start)
        except Exception as err:  # noqa: BLE001  (a bug, but one clip's bug must not cost the batch)
            if os.environ.get("LIPSYNC_DEBUG"):
                log.exception("job %s", job.row)
            return JobResult.of(job, "failed", f"Unexpected error ({type(err).__name__}: {err}); this is a bug in "
                                               "lipsync, rerun with LIPSYNC_DEBUG=1 for the details.",
                                seconds=time.perf_counter() - start)
        return JobResult.of(job, "done", frames=result.frames, seconds=time.perf_counter() - start)


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
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


# --------------------------------------------------------------------------------------------------- local backend

_process_worker: Worker | None = None


def _init_process(engine_options: EngineOptions, threads: int, gpus: Any) -> None:
    """Initializer of a local worker process: pin it to one GPU (before torch starts CUDA), then load the model."""
    global _process_worker
    # Idle, a worker ignores Ctrl-C (the pool's own plumbing must not die with a traceback); `_process_run`
    # takes it while a job runs, so that job's writer deletes its partial file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())
    _process_worker = Worker(engine_options, threads)


def _process_ready() -> str | None:
    assert _process_worker is not None
    return _process_worker.ready()


def _process_run(job: Job) -> JobResult:
    assert _process_worker is not None
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _process_worker.run(job)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_in_this_process(jobs: Sequence[Job], engine_options: EngineOptions) -> Iterator[JobResult]:
    """One worker: this process loads the model once; Ctrl-C unwinds the job in flight, which deletes its partial file."""
    worker = Worker(engine_options)
    if worker.ready():
        raise LipSyncError(worker.ready())
    log.info("Model %s", worker.describe())
    for job in jobs:
        yield worker.run(job)


def _run_in_processes(jobs: Sequence[Job], engine_options: EngineOptions, workers: int) -> Iterator[JobResult]:
    """Several local workers: the standard library's process pool, one model per process (spawned, so CUDA is safe)."""
    import multiprocessing

    import torch

    context = multiprocessing.get_context("spawn")
    gpus = None
    threads = 0
    if torch.cuda.is_available() and engine_options.device in ("auto", "cuda"):
        gpus = context.Queue()
        for i in range(workers):
            gpus.put(i % torch.cuda.device_count())
    else:
        threads = max(1, cpu_count() // workers)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process,
                               initargs=(engine_options, threads, gpus))
    try:
        errors = [pool.submit(_process_ready).result() for _ in range(workers)]
        if all(errors):
            raise LipSyncError(errors[0])
        queue = deque(jobs)
        running: dict[Future, Job] = {}
        while queue or running:
            while queue and len(running) < workers:
                job = queue.popleft()
                running[pool.submit(_process_run, job)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    yield future.result()
                except Exception as err:  # noqa: BLE001  (the worker process died: that job failed, say how)
                    yield JobResult.of(job, "failed", f"The worker process running it stopped ({type(err).__name__}).")
    except BaseException:
        # Ctrl-C (or the caller stopping): interrupt the jobs in flight so their writers delete the partial files,
        # then let the processes end. In a terminal they got the SIGINT already; from `kill` only we did.
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signal.SIGINT)
            except (OSError, TypeError):
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --------------------------------------------------------------------------------------------------- Ray backend


def _ray_module():
    try:
        import ray
    except ImportError:
        raise LipSyncError("--ray needs Ray, which is not installed: pip install -r requirements-ray.txt") from None
    return ray


def _package_runtime_env() -> dict[str, Any]:
    """This lipsync package as Ray's py_modules: uploaded once per job, so cluster nodes need only its dependencies.

    Ray accepts a local folder only for the whole job (ray.init); when the caller started
    Ray, the workers import lipsync as the caller's job environment provides it.
    """
    import lipsync

    return {"py_modules": [os.path.dirname(os.path.abspath(lipsync.__file__))]}


def ray_plan(ray: Any, workers: int | None) -> tuple[int, dict[str, Any]]:
    """How many actors and what each requests, from what the cluster has.

    With GPUs: one actor per GPU, each asking for num_gpus=1 (Ray then sets its
    CUDA_VISIBLE_DEVICES). Without: one actor per node, each asking for that node's cores,
    since one model uses all the cores it has (see `default_workers`).
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return (workers or gpus), {"num_gpus": 1, "num_cpus": 1}
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    node_cpus = min(int(n["Resources"]["CPU"]) for n in nodes) if nodes else max(1, int(resources.get("CPU", 1)))
    count = workers or max(1, len(nodes))
    total = int(resources.get("CPU", node_cpus))
    return count, {"num_cpus": max(1, min(node_cpus, total // count))}


def _run_on_ray(jobs: Sequence[Job], engine_options: EngineOptions, workers: int | None,
                address: str | None, started: Callable[[int], None]) -> Iterator[JobResult]:
    """Ray actors, one model each, fed one job at a time each (ray.wait): Ray places them and restarts lost ones."""
    ray = _ray_module()
    started_here = not ray.is_initialized()
    if started_here:  # ship this lipsync package to the workers (py_modules), so nodes need its dependencies only
        ray.init(address=address or None, log_to_driver=False, include_dashboard=False,
                 logging_level=logging.WARNING, configure_logging=False, runtime_env=_package_runtime_env())
    actors: list[Any] = []
    running: dict[Any, tuple[Job, Any]] = {}
    try:
        count, request = ray_plan(ray, workers)
        actor_class = ray.remote(Worker).options(max_restarts=2, max_task_retries=2, **request)
        threads = 0 if request.get("num_gpus") else int(request["num_cpus"])
        actors = [actor_class.remote(engine_options, threads) for _ in range(count)]
        errors = ray.get([a.ready.remote() for a in actors])
        if all(errors):
            raise LipSyncError(errors[0])
        for actor, error in zip(actors, errors):
            if error:
                log.warning("A Ray worker could not load the model and is left out: %s", error)
        idle = [a for a, e in zip(actors, errors) if not e]
        started(len(idle))
        queue = deque(jobs)
        while queue or running:
            while queue and idle:
                job, actor = queue.popleft(), idle.pop()
                running[actor.run.remote(job)] = (job, actor)
            [ref], _ = ray.wait(list(running), num_returns=1)
            job, actor = running.pop(ref)
            idle.append(actor)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayError as err:
                yield JobResult.of(job, "failed", f"The Ray worker running it was lost ({type(err).__name__}).")
    except BaseException:
        # Ctrl-C: ask the jobs in flight to stop (Ray raises KeyboardInterrupt in the actor, so the writer
        # deletes its partial file), give them a moment, then end the actors.
        for ref in running:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001
                pass
        if running:
            ray.wait(list(running), num_returns=len(running), timeout=10)
        raise
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
        if started_here:
            ray.shutdown()


# --------------------------------------------------------------------------------------------------- the batch


def run_batch(jobs: Iterable[Job | Mapping[str, Any]], workers: int | None = None, ray: str | bool | None = None,
              force: bool = False, progress: ProgressFn | None = None, checkpoint: str | None = None,
              device: str = "auto", base: str | os.PathLike | None = None,
              defaults: Mapping[str, Any] | None = None) -> BatchReport:
    """Run many jobs with the model loaded once per worker; returns the report of every job.

    `jobs`: Job objects (see `load_manifest`) or manifest-style dicts, e.g.
    {"face": "a.mp4", "audio": "a.wav", "output": "out/a.mp4", "pads": [0, 20, 0, 0]}.
    `ray`: None or False runs locally; True or "" a Ray instance (the cluster in
    $RAY_ADDRESS, else a new local one, or the one this process already started); a
    string, that address. `workers`: local processes or Ray actors (default: one per GPU,
    else one). Jobs whose output is already complete are skipped unless `force`.
    Raises ManifestError before any job when the jobs cannot be run, LipSyncError when
    no worker could load the model, and BatchInterrupted (a KeyboardInterrupt, with the
    report so far) after Ctrl-C.
    """
    started = time.perf_counter()
    jobs = as_jobs(jobs, base, defaults)
    check_jobs(jobs)
    if workers is not None and workers < 1:
        raise ManifestError("--workers must be 1 or more.")
    engine_options = EngineOptions(checkpoint, device)
    results: dict[int, JobResult] = {}
    finished = 0

    def record(result: JobResult) -> None:
        nonlocal finished
        results[result.row] = result
        finished += 1
        if progress is not None:
            progress(result, finished, len(jobs))

    todo = []
    for job in jobs:
        if not force and is_complete(job.output):
            record(JobResult.of(job, "skipped"))
        else:
            todo.append(job)
    use_ray = ray is not None and ray is not False
    backend = "ray" if use_ray else "local"
    count = workers or (0 if use_ray else default_workers())
    report = BatchReport([], backend=backend, workers=count)
    try:
        if todo:
            if use_ray:
                address = ray if isinstance(ray, str) and ray else None
                stream = _run_on_ray(todo, engine_options, workers, address,
                                     lambda n: setattr(report, "workers", n))
            elif min(count, len(todo)) == 1:
                report.workers = 1
                stream = _run_in_this_process(todo, engine_options)
            else:
                report.workers = min(count, len(todo))
                stream = _run_in_processes(todo, engine_options, report.workers)
            stop = _InterruptFlag()
            try:
                for result in stream:
                    record(result)
                    stop.check()
            finally:
                stop.restore()
                stream.close()  # at once, not when collected: stops the jobs in flight and the workers
    except KeyboardInterrupt:
        report.interrupted = True
    report.jobs = [results.get(job.row) or JobResult.of(job, "cancelled") for job in jobs]
    report.seconds = time.perf_counter() - started
    if report.interrupted:
        raise BatchInterrupted(report)
    return report


# --------------------------------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    """`python -m lipsync batch`: the batch's own flags, plus every setting flag as a default for all rows."""
    from .flags import add_setting

    p = argparse.ArgumentParser(
        prog="python -m lipsync batch",
        description="Lip-sync many clips listed in a manifest (CSV or JSON lines: face, audio, output and any "
                    "setting by its flag name), loading the model once per worker. Setting flags given here are "
                    "defaults for every row.")
    p.add_argument("manifest", help="CSV or JSON-lines (.jsonl) file, one job per row; relative paths are resolved "
                                    "against its folder")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray: the cluster at ADDRESS, else $RAY_ADDRESS, else a local Ray instance")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes or Ray actors (default: one per GPU; on a CPU one, using all cores)")
    p.add_argument("--force", action="store_true", help="redo jobs whose output already exists and is complete")
    p.add_argument("--report", default=None,
                   help="where to write the report (.json: JSON, else CSV; default: next to the manifest, "
                        "<manifest name>.report.csv, or .report.json for a JSON-lines manifest)")
    p.add_argument("--quiet", action="store_true", help="print only failed jobs, errors and the summary")
    for cls in (EngineOptions, Options):
        for name, default, meta in declared(cls):
            if meta.get("cli", True):
                add_setting(p, name, default, meta)
    return p


def default_report_path(manifest: str) -> str:
    manifest = os.path.abspath(manifest)
    stem, suffix = os.path.splitext(manifest)
    return stem + (".report.json" if suffix.lower() in JSON_SUFFIXES else ".report.csv")


class _Progress:
    """A bar over the jobs on stderr and one line per finished job (printed above the bar)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        if not quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="job", file=sys.stderr, dynamic_ncols=True, leave=False)
            except ImportError:
                self.bar = None

    def __call__(self, result: JobResult, done: int, total: int) -> None:
        if not self.quiet or result.status == "failed":
            line = result.line(done, total)
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    """The batch command; exit status 0: all done or skipped, 1: some failed, 2: bad manifest, 130: Ctrl-C."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    given = vars(args)
    engine = {name: given[name] for name, _, _ in declared(EngineOptions) if name in given}
    defaults = {name: given[name] for name, _, _ in declared(Options) if name in given}
    report_path = args.report or default_report_path(args.manifest)
    try:
        jobs = load_manifest(args.manifest, defaults)
        check_jobs(jobs)
        engine_options = EngineOptions(**engine)
    except LipSyncError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    progress = _Progress(len(jobs), args.quiet)
    code = 0
    try:
        report = run_batch(jobs, workers=args.workers, ray=args.ray, force=args.force, progress=progress,
                           checkpoint=engine_options.checkpoint_path, device=engine_options.device)
    except BatchInterrupted as stop:
        report, code = stop.report, 130
    except ManifestError as err:
        progress.close()
        print(f"Error: {err}", file=sys.stderr)
        return 2
    except LipSyncError as err:
        progress.close()
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.close()
        print("Stopped before any job ran; no output was written.", file=sys.stderr)
        return 130
    progress.close()
    try:
        written = report.write(report_path)
    except LipSyncError as err:
        print(f"Error: {err}", file=sys.stderr)
        written = None
    if code == 130:
        print("Stopped; the jobs in flight were discarded (no partial files); rerun to continue.", file=sys.stderr)
    print(report.summary() + (f"; report: {written}" if written else ""), file=sys.stderr)
    return code or (0 if report.ok else 1)
