"""The command line: `python -m lipsync --face F --audio A --outfile O.mp4`.

It takes the flags of the official Wav2Lip inference.py with the same meanings, plus
--blend, --device and --detector. Exit status 0 means the output file is complete;
any problem is one sentence on stderr and a non-zero status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .blend import BLEND_MODES
from .errors import LipSyncError
from .faces import DETECTORS
from .model import PRECISIONS
from .video import ENCODERS
from .weights import CHECKPOINTS, DEFAULT_CHECKPOINT


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got '{value}'")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lipsync",
        description="Lip-sync the face in a video or photo to an audio track with Wav2Lip. "
                    "Takes the official Wav2Lip inference.py flags.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--face", required=True, help="video or photo containing the face (any format ffmpeg or "
                                                 "OpenCV reads; photos are recognised by content)")
    p.add_argument("--audio", required=True, help="audio file, or a video whose sound track to use")
    p.add_argument("--outfile", default="results/result_voice.mp4", help="where to write the MP4 result")
    p.add_argument("--checkpoint_path", default=None,
                   help=f"Wav2Lip checkpoint file, or a name ({', '.join(CHECKPOINTS)}). When omitted: "
                        f"$LIPSYNC_CHECKPOINT, then weights/{CHECKPOINTS[DEFAULT_CHECKPOINT].filename}, "
                        "then a download from the Hugging Face Hub")
    p.add_argument("--static", type=_bool, nargs="?", const=True, default=False,
                   help="use only the first frame of the face video (always so for a photo)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the output when the face is a photo")
    p.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="pixels added to the detected face box; raise BOTTOM until the chin is inside")
    p.add_argument("--face_det_batch_size", type=int, default=16, help="frames per face-detection batch")
    p.add_argument("--wav2lip_batch_size", type=int, default=0,
                   help="faces per Wav2Lip model batch; 0 picks by device (128 on CUDA, 8 on a CPU, where small "
                        "batches run faster). The result does not depend on it")
    p.add_argument("--resize_factor", type=int, default=1,
                   help="divide the resolution by this first (2 turns 1080p into 540p); often better and faster")
    p.add_argument("--crop", type=int, nargs=4, default=[0, -1, 0, -1], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="keep only this region of the frame (after resize and rotate); -1 means to the edge. "
                        "Useful when several faces are visible")
    p.add_argument("--box", type=int, nargs=4, default=[-1, -1, -1, -1], metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                   help="use this fixed face box instead of detection (pads are not added); for a face that "
                        "is not detected and hardly moves")
    p.add_argument("--rotate", action="store_true", help="turn frames 90 degrees clockwise first (phone videos "
                                                         "that come out sideways)")
    p.add_argument("--nosmooth", action="store_true", help="do not average face boxes over 5 frames (for fast "
                                                           "motion)")
    p.add_argument("--blend", choices=BLEND_MODES, default="box",
                   help="how the generated mouth is pasted: 'box' exactly as the original; 'feather' fades the "
                        "box edges into the frame")
    p.add_argument("--device", choices=("auto", "cuda", "cpu", "mps"), default="auto", help="where the models run")
    p.add_argument("--detector", choices=DETECTORS, default="auto",
                   help="face detector: 's3fd' (what Wav2Lip was trained with; downloads 90 MB once), 'haar' "
                        "(OpenCV, no download), 'auto' (s3fd on a GPU when available, else haar; on a CPU haar, "
                        "since s3fd takes seconds per frame there)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the model's arithmetic: fp32 gives the official numbers; fp16 (GPU) and bf16 (GPU, recent "
                        "CPUs) are faster with small differences in the mouth")
    p.add_argument("--det_max_side", type=int, default=0,
                   help="run S3FD on frames shrunk to this longer side, boxes mapped back (0: full resolution, "
                        "as the original); e.g. 640 makes detection of 1080p several times faster")
    p.add_argument("--encoder", choices=ENCODERS, default="auto",
                   help="H.264 encoder: 'auto' uses NVIDIA's h264_nvenc when the models run on CUDA and it works "
                        "there, else libx264")
    p.add_argument("--allow_silence", action="store_true",
                   help="sync silent or near-silent audio instead of stopping with an error")
    p.add_argument("--max_seconds", type=float, default=float(os.environ.get("LIPSYNC_MAX_SECONDS", "0")),
                   help="refuse audio longer than this many seconds (0: no limit) [$LIPSYNC_MAX_SECONDS]")
    p.add_argument("--max_side", type=int, default=int(os.environ.get("LIPSYNC_MAX_SIDE", "4096")),
                   help="refuse frames whose longer side exceeds this many pixels after --resize_factor "
                        "(0: no limit) [$LIPSYNC_MAX_SIDE]")
    p.add_argument("--quiet", action="store_true", help="print only errors")
    return p


class ProgressLine:
    """One self-rewriting progress line on stderr per stage, closed before anything else is printed."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.stage: str | None = None
        self.last = 0.0
        self.open = False  # a line without its newline is on the terminal

    def __call__(self, stage: str, done: int, total: int) -> None:
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = ProgressLine(args.quiet)
    try:
        from . import LipSync, Options

        options = Options(static=args.static, fps=args.fps, pads=tuple(args.pads),
                          face_det_batch_size=args.face_det_batch_size, wav2lip_batch_size=args.wav2lip_batch_size,
                          resize_factor=args.resize_factor, crop=tuple(args.crop), box=tuple(args.box),
                          rotate=args.rotate, nosmooth=args.nosmooth, blend=args.blend, detector=args.detector,
                          allow_silence=args.allow_silence, max_seconds=args.max_seconds, precision=args.precision,
                          det_max_side=args.det_max_side, max_side=args.max_side, encoder=args.encoder)
        options.validate()
        out_dir = os.path.dirname(os.path.abspath(args.outfile))
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as err:
            raise LipSyncError(f"Cannot create the output folder '{out_dir}' ({err.strerror}). Choose another "
                               "--outfile.") from None
        engine = LipSync(args.checkpoint_path, device=args.device)
        if not args.quiet:
            print(f"Model {engine.checkpoint_path} on {engine.device}", file=sys.stderr)
        result = engine.sync(args.face, args.audio, args.outfile, options, progress=progress)
    except LipSyncError as err:
        progress.close()
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        progress.close()
        print("Stopped; no output was written.", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: say so in one line, keep the traceback for those who ask
        progress.close()
        if os.environ.get("LIPSYNC_DEBUG"):
            raise
        print(f"Unexpected error ({type(err).__name__}: {err}). This is a bug in lipsync; rerun with "
              "LIPSYNC_DEBUG=1 for the details and report them.", file=sys.stderr)
        return 3
    progress.close()
    if not args.quiet:
        print(f"Face detector: {result.detector}", file=sys.stderr)
        print(f"Wrote {result.outfile}: {result.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
