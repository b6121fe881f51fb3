"""The sync command: `python -m lipsync --face F --audio A --outfile O.mp4` (or the `lipsync` command).

It takes the flags of the official Wav2Lip inference.py with the same meanings; every
setting flag is generated from its declaration in `lipsync.options`. Exit status 0
means the output file is complete; any problem is one sentence on stderr and a
non-zero status, never a traceback (the statuses: lipsync.cli.flags). Ctrl-C and SIGTERM
stop the job without leaving a partial file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

from ..errors import LipSyncError
from .flags import add_settings, command_status, log_to_stderr, split_args, stoppable

JOB_FLAGS = ("face", "audio", "outfile", "quiet")  # the job's files and the CLI's own switch: not settings
FIRST_FRAME_STAGE = "Syncing lips"  # its first progress call comes once the first batch of frames is written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lipsync",
        description="Lip-sync the face in a video or photo to an audio track with Wav2Lip. "
                    "Takes the official Wav2Lip inference.py flags.")
    p.add_argument("--face", required=True, help="video or photo containing the face (any format ffmpeg or "
                                                 "OpenCV reads; photos are recognised by content)")
    p.add_argument("--audio", required=True, help="audio file, or a video whose sound track to use")
    p.add_argument("--outfile", default="results/result_voice.mp4",
                   help="where to write the MP4 result (default: results/result_voice.mp4)")
    add_settings(p)
    p.add_argument("--quiet", action="store_true", help="print only errors")
    return p


class ProgressLine:
    """One self-rewriting progress line on stderr per stage, closed before anything else is printed."""

    def __init__(self, quiet: bool, started: float | None = None) -> None:
        self.quiet = quiet
        self.stage: str | None = None
        self.last = 0.0
        self.open = False  # a line without its newline is on the terminal
        self.started = time.perf_counter() if started is None else started
        self.first_frame: float | None = None  # seconds from the start of the process to the first synced frames

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.first_frame is None and stage == FIRST_FRAME_STAGE and done > 0:
            self.first_frame = time.perf_counter() - self.started
            if not self.quiet:
                self.close()
                print(f"First frame after {self.first_frame:.1f} s", file=sys.stderr, flush=True)
        if self.quiet:
            return
        now = time.monotonic()
        if stage != self.stage:
            self.close()
        if stage != self.stage or done >= total or now - self.last > 1.0:
            print(f"\r{stage}: {done}/{total}", end="", file=sys.stderr, flush=True)
            self.open, self.stage, self.last = True, stage, now

    def close(self) -> None:
        if self.open:
            print(file=sys.stderr, flush=True)
            self.open = False


def _make_out_dir(outfile: str) -> None:
    out_dir = os.path.dirname(os.path.abspath(outfile))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise LipSyncError(f"Cannot create the output folder '{out_dir}' ({err.strerror}). Choose another "
                           "--outfile.") from None


def main(argv: list[str]) -> int:
    """Run the sync command on `argv` (its flags); the exit status."""
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    progress = ProgressLine(args.quiet, started)
    log_to_stderr(args.quiet)
    try:
        with stoppable(progress) as report:
            result = _sync(args, report, started)
    except BaseException as err:  # one sentence and an exit status (lipsync.cli.flags); a bug re-raised when debugging
        return command_status(err, "Stopped; no output was written.", progress.close)
    progress.close()
    if result.enhance_problem:  # the video is complete, without the enhancement that was asked for
        print(f"Warning: the mouth was not enhanced. {result.enhance_problem}", file=sys.stderr)
    if result.score_problem:  # the video is complete, without its score
        print(f"Warning: the sync was not scored. {result.score_problem}", file=sys.stderr)
    if result.offset_problem:  # the video is complete and scored, its sound as it was made
        print(f"Warning: the measured offset was not fixed. {result.offset_problem}", file=sys.stderr)
    if not args.quiet:
        print(f"Face detector: {result.detector_label}", file=sys.stderr)
        if result.score is not None:
            print(f"Sync (SyncNet): {result.score.figures()}", file=sys.stderr)
        if result.offset_clause:
            print(f"Offset: {result.offset_clause}", file=sys.stderr)
        print(f"Wrote {result.outfile}: {result.summary()}", file=sys.stderr)
    return 0


def _sync(args: argparse.Namespace, progress: Callable[[str, int, int], None], started: float):
    """The one job: options checked, inputs checked from their headers, then the model loaded and the clip synced."""
    engine_options, options = split_args(args)
    _make_out_dir(args.outfile)
    from ..engine import LipSync, check_inputs

    check_inputs(args.face, args.audio, options)  # bad files are refused before the model loads
    engine = LipSync(engine_options.checkpoint_path, device=engine_options.device)
    if not args.quiet:
        print(f"Model {engine.checkpoint_path} on {engine.device} (ready after "
              f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return engine.sync(args.face, args.audio, args.outfile, options, progress=progress)
