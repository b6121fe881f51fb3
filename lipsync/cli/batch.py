"""The batch command: `python -m lipsync batch MANIFEST [--workers N | --ray [ADDRESS]] [setting flags]`.

Setting flags given here are defaults for every row (a row's own value wins). Prints a
progress bar over the jobs and one line per finished job on stderr, writes the report
(batch_report) next to the manifest or where --report says, and exits with 0 (all done
or skipped), 1 (some failed), 2 (the manifest cannot be run), 130 (Ctrl-C) or 143
(SIGTERM); see lipsync.cli.flags.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..batch.manifest import JSON_SUFFIXES, ManifestError, load_manifest
from ..batch.outputs import check_jobs
from ..batch.report import BatchReport, JobResult
from ..batch.run import BatchInterrupted, run_batch
from ..errors import LipSyncError
from ..options import EngineOptions
from ..runtime.interrupts import sigterm_as_interrupt
from ..weights.locate import resolve_syncnet
from .flags import EXIT_FAILED, add_settings, command_status, given_settings, log_to_stderr, stop_status


def build_parser() -> argparse.ArgumentParser:
    """`python -m lipsync batch`: the batch's own flags, plus every setting flag as a default for all rows."""
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
    p.add_argument("--force", action="store_true",
                   help="redo jobs whose output already exists and is complete, and overwrite an existing output that "
                        "is not a complete video (never an input, the manifest or the report)")
    p.add_argument("--report", default=None,
                   help="where to write the report (.json: JSON, else CSV; default: next to the manifest, "
                        "<manifest name>.report.csv, or .report.json for a JSON-lines manifest)")
    p.add_argument("--quiet", action="store_true", help="print only failed jobs, errors and the summary")
    p.add_argument("--min_sync_confidence", type=float, default=None, metavar="X",
                   help="score every result with SyncNet (as --score) and mark the jobs whose confidence (LSE-C) is "
                        "under X in the report's low_sync column and the summary (e.g. 3: LatentSync's floor; the "
                        "Wav2Lip paper's own average is 7.8)")
    add_settings(p)
    return p


def default_report_path(manifest: str) -> str:
    manifest = os.path.abspath(manifest)
    stem, suffix = os.path.splitext(manifest)
    return stem + (".report.json" if suffix.lower() in JSON_SUFFIXES else ".report.csv")


class _Progress:
    """A bar over the jobs on stderr (drawn from `start`) and one line per finished job (printed above the bar)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None

    def start(self, total: int) -> None:
        if self.quiet:
            return
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
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    """The batch command; its exit statuses are in the module doc."""
    args = build_parser().parse_args(argv)
    log_to_stderr(args.quiet)
    report_path = args.report or default_report_path(args.manifest)
    progress = _Progress(args.quiet)
    stopped = False
    try:
        with sigterm_as_interrupt():
            report = _run(args, report_path, progress)
        code = 0 if report.ok else EXIT_FAILED
    except BatchInterrupted as stop:  # the report is still written: what was done, what was cancelled
        report, code, stopped = stop.report, stop_status(stop), True
    except BaseException as err:  # one sentence per problem and an exit status (lipsync.cli.flags)
        return command_status(err, "Stopped before any job ran; no output was written.", progress.close)
    progress.close()
    try:
        written = report.write(report_path)
    except LipSyncError as err:
        print(f"Error: {err}", file=sys.stderr)
        written = None
    if stopped:
        print("Stopped; the jobs in flight were discarded (no partial files); rerun to continue.", file=sys.stderr)
    print(report.summary() + (f"; report: {written}" if written else ""), file=sys.stderr)
    return code


def _run(args: argparse.Namespace, report_path: str, progress: _Progress) -> BatchReport:
    """Read and check the manifest (nothing runs when a row is refused), then run the batch."""
    engine, defaults = given_settings(args)
    jobs = load_manifest(args.manifest, defaults)
    try:
        engine_options = EngineOptions(**engine)
    except LipSyncError as err:  # a bad batch-wide setting is a bad command line (exit status 2), like a bad row
        raise ManifestError(str(err)) from None
    protected = {args.manifest: "manifest", report_path: "report"}
    check_jobs(jobs, args.force, protected)  # before the progress bar: a refused batch prints its sentences alone
    if args.min_sync_confidence is not None:  # every job is to be judged: without the weights the batch cannot be
        resolve_syncnet()  # found or fetched once, before any job; missing, they stop it in one sentence (status 1)
    progress.start(len(jobs))
    return run_batch(jobs, workers=args.workers, ray=args.ray, force=args.force, progress=progress,
                     checkpoint=engine_options.checkpoint_path, device=engine_options.device, protected=protected,
                     min_sync_confidence=args.min_sync_confidence)
