"""The score command: `python -m lipsync score VIDEO [--audio AUDIO] [--syncnet PATH] [--crop face|none] [--vshift 15]
[--json] [--device ...]`.

SyncNet's verdict on any clip, a lip-synced result or an original to compare it with, as the Wav2Lip
paper measures it: the confidence (LSE-C), the distance (LSE-D) and the sound's offset
(lipsync.scoring; docs/scoring.md). No Wav2Lip model is loaded. The figures go to stdout (with
`--json`, exactly one JSON object and nothing else), progress and errors to stderr; the exit statuses
are the other commands' (lipsync.cli.flags): 1 for a clip that cannot be scored or missing weights, 2
for a bad command line.
"""

from __future__ import annotations

import argparse
import json

from ..options import DETECTORS, DEVICES
from .flags import command_status, log_to_stderr, stoppable
from .sync import ProgressLine

CROPS = ("face", "none")  # lipsync.scoring.score.CROPS (not imported: `--help` stays quick)


def _shifts(value: str) -> int:
    """--vshift: a whole number of frames, 0 or more."""
    try:
        shifts = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames, not {value!r}") from None
    if shifts < 0:
        raise argparse.ArgumentTypeError("the offsets searched must be 0 or more frames each way")
    return shifts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lipsync score",
        description="Score a video's lip sync with SyncNet as the Wav2Lip paper does: confidence (LSE-C, higher is "
                    "better), distance (LSE-D, lower is better) and the sound's offset in frames of 40 ms.")
    p.add_argument("video", help="the clip to score (a lip-synced result, or any video of a talking face)")
    p.add_argument("--audio", default=None, help="score the lips against this sound instead of the video's own")
    p.add_argument("--syncnet", default=None, metavar="PATH",
                   help="SyncNet weights (default: $LIPSYNC_SYNCNET, else weights/syncnet_v2.model, else a download "
                        "of 55 MB from the authors, checked by its SHA256)")
    p.add_argument("--crop", default="face", choices=CROPS,
                   help="'face': find the face and crop it as the official evaluation does; 'none': score the whole "
                        "frame (a clip that is already a face crop, as LRS2's are) (default: face)")
    p.add_argument("--vshift", type=_shifts, default=15,
                   help="offsets searched each way, in frames of 40 ms (default: 15, the official)")
    p.add_argument("--detector", default="auto", choices=DETECTORS,
                   help="face detector for --crop face (default: auto, as the sync command)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="where SyncNet runs (default: auto)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: offset, lse_c, lse_d, frames, framewise, vshift, crop, backend, ...")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def main(argv: list[str]) -> int:
    """The score command on `argv`; the exit status."""
    args = build_parser().parse_args(argv)
    log_to_stderr(args.quiet)
    progress = ProgressLine(args.quiet)
    try:
        from ..engine import score_clip

        with stoppable(progress) as report:
            score = score_clip(args.video, args.audio, crop=args.crop, vshift=args.vshift, syncnet=args.syncnet,
                               device=args.device, detector=args.detector, progress=report)
    except BaseException as err:  # one sentence and an exit status (lipsync.cli.flags)
        return command_status(err, "Stopped; nothing was scored.", progress.close)
    progress.close()
    if args.json:
        print(json.dumps(score.to_dict()))
    else:
        print(f"{args.video}: {score.summary()}")
    return 0
