"""Limits on what one job may cost, checked from the headers before anything is decoded.

A public server gets any upload: a 100 KB PNG that declares 30000x30000 pixels, a 7 MB
Opus file that unpacks to hours, a one-frame video at 240 fps. Each limit here is
checked as early as the facts allow: frame size and rate from the header (on the
source, before the resize option), the work of the whole job (pixels x frames) as soon
as the audio's length gives the frame count, and the time a job may run while it runs.
"""

from __future__ import annotations

import time
from typing import Callable

from ..errors import LipSyncError
from ..geometry import Box
from ..options import Options
from .probe import MediaInfo

ProgressCallback = Callable[[str, int, int], None]
MIN_SIDE = 16  # px: the smallest side a frame may have after --resize_factor (a face needs some pixels)


def check_face(info: MediaInfo, options: Options, path: str) -> None:
    """The face input is a picture of acceptable size and frame rate (header facts only)."""
    if not info.has_video:
        raise LipSyncError(f"'{path}' has no picture (it looks like an audio file). Give a video or a photo "
                           "with a face as the face input.")
    side = max(info.width, info.height)
    if options.max_side and side > options.max_side:
        factor = -(-side // options.max_side)
        raise LipSyncError(f"'{path}' is {info.width}x{info.height}, larger than the limit of {options.max_side} px "
                           f"per side. Make a smaller copy first (e.g. 1/{factor} of the size), or raise the limit "
                           "(--max_side, LIPSYNC_MAX_SIDE).")
    smaller = min(info.width, info.height) // options.resize_factor
    if smaller < MIN_SIDE:
        raise LipSyncError(f"--resize_factor {options.resize_factor} would shrink the {info.width}x{info.height} "
                           f"picture of '{path}' to {info.width // options.resize_factor}x"
                           f"{info.height // options.resize_factor}, too small for a face; use a factor that leaves "
                           f"at least {MIN_SIDE} px a side (e.g. 1, 2 or 4).")
    if not info.is_image and options.max_fps and info.fps > options.max_fps:
        raise LipSyncError(f"'{path}' runs at {info.fps:.0f} frames per second, over the limit of "
                           f"{options.max_fps:.0f}. Re-export it at 25 or 30 fps, or raise the limit (--max_fps, "
                           "LIPSYNC_MAX_FPS).")


def check_sound(info: MediaInfo, max_seconds: float, path: str) -> None:
    """The audio input has sound, and its header's duration is within the limit (checked before decoding)."""
    if not info.has_audio:
        raise LipSyncError(f"'{path}' has no sound track. Give an audio file (wav, mp3, m4a, ogg, flac, …) or a "
                           "video that has sound as the audio input.")
    if max_seconds and info.duration > max_seconds + 1:
        raise over_length(info.duration, max_seconds)


def over_length(seconds: float, max_seconds: float) -> LipSyncError:
    return LipSyncError(f"The audio lasts {seconds:.0f} s, over the limit of {max_seconds:.0f} s. Trim it, or raise "
                        "the limit (--max_seconds or LIPSYNC_MAX_SECONDS).")


def check_work(info: MediaInfo, options: Options, frames: int, path: str) -> None:
    """The whole job (output frames x source pixels) stays within the work limit."""
    megapixel_frames = frames * info.width * info.height / 1e6
    if options.max_work and megapixel_frames > options.max_work:
        plural = "s" if frames != 1 else ""
        raise LipSyncError(f"This job is too large: {frames} frame{plural} of {info.width}x{info.height} "
                           f"({megapixel_frames:,.0f} megapixel-frames, over the limit of {options.max_work:,.0f}). "
                           "Use shorter audio or a smaller video, or raise the limit (--max_work, "
                           "LIPSYNC_MAX_WORK).")


def check_box(box: Box, height: int, width: int) -> None:
    if not box.inside(height, width):
        raise LipSyncError(f"The face box {' '.join(map(str, box.tblr))} (top bottom left right) is not inside the "
                           f"{width}x{height} frame. Give 0 <= top < bottom <= {height} and 0 <= left < right <= "
                           f"{width} (--box, or 'Fixed face box' in the app), in pixels after any resize.")


def check_point(point: tuple[int, int], height: int, width: int) -> None:
    if not (0 <= point[0] < width and 0 <= point[1] < height):
        raise LipSyncError(f"The face point {point[0]} {point[1]} is outside the {width}x{height} first frame; give x "
                           "from 0 to the width and y from 0 to the height, in pixels after resize, rotate and crop.")


def with_deadline(progress: ProgressCallback, seconds: float, what: str = "The job",
                  advice: str = "Use shorter audio, a smaller video (the resize option) or a fixed face box"
                  ) -> ProgressCallback:
    """`progress`, stopping the work with a clear error once it has run `seconds` (0: never).

    The pipeline reports progress at every batch and while it waits for faces, so the
    job stops within a batch of the limit; the output is then not written (nothing is lost
    but the unfinished job). The face check before a job (`preview.scan_faces`) reports
    every frame it looks at.
    """
    if not seconds:
        return progress
    deadline = time.monotonic() + seconds

    def report(stage: str, done: int, total: int) -> None:
        if time.monotonic() > deadline:
            raise LipSyncError(f"{what} ran longer than the limit of {seconds:.0f} s and was stopped. {advice}, or "
                               "raise the limit (--time_limit, LIPSYNC_TIME_LIMIT).")
        progress(stage, done, total)

    return report


# What a job costs on a GPU, for asking ZeroGPU for the right duration. Not yet measured on a GPU (no GPU was lent
# where this was written; bench/benchmark.py on one gives the figures): a fixed start (model to the GPU, ffmpeg
# start-up), a per-frame cost (decode, encode, the generator) and a per-megapixel-frame cost (S3FD on the full
# frame dominates), with a margin.
GPU_START_SECONDS = 10.0
GPU_SECONDS_PER_FRAME = 0.01
GPU_SECONDS_PER_MEGAPIXEL_FRAME = 0.02
GPU_MARGIN = 1.5


def gpu_seconds_for(info: MediaInfo, audio_seconds: float, options: Options, extra_per_frame: float = 0.0) -> float:
    """The GPU time a job is expected to take, from the headers of its face and audio files; `extra_per_frame`: what
    a further stage adds per frame (the mouth restorer's GPU seconds a face, when it runs)."""
    frames = job_frames(info, audio_seconds, options)
    per_frame = GPU_SECONDS_PER_FRAME + GPU_SECONDS_PER_MEGAPIXEL_FRAME * megapixels(info, options) + extra_per_frame
    return GPU_MARGIN * (GPU_START_SECONDS + frames * per_frame)


# What a job costs on a CPU, for weighing what a further stage would add (the sync score's switch in the app):
# measured on the 2-core Intel Xeon of bench/RESULTS.md, #30 (`bench/score_bench.py --job`: OpenVINO fp32, cached
# model, fresh BlazeFace detection; 60 s of 1080p at 58.6 ms a frame, 20 s of 720p at 47.1), in the same runs as
# the score's cost (lipsync.scoring.cost), as core-seconds per output frame: the generator's share, and decoding,
# detection, pasting and encoding, which grow with the frame.
CPU_CORE_SECONDS_PER_FRAME = 2 * 0.038
CPU_CORE_SECONDS_PER_MEGAPIXEL_FRAME = 2 * 0.010


def cpu_seconds_for(info: MediaInfo, audio_seconds: float, options: Options, threads: int) -> float:
    """About how long a job on these files takes on `threads` CPU cores, from their headers."""
    frames = job_frames(info, audio_seconds, options)
    return frames * (CPU_CORE_SECONDS_PER_FRAME + CPU_CORE_SECONDS_PER_MEGAPIXEL_FRAME * megapixels(info, options)) \
        / max(1, threads)


def job_fps(info: MediaInfo, options: Options) -> float:
    """The frame rate of a job's output: the face video's own, or --fps for a photo."""
    return options.fps if info.is_image else info.fps


def job_frames(info: MediaInfo, audio_seconds: float, options: Options) -> float:
    """About how many frames a job on these files makes (at least one): the audio's length at the output's rate."""
    return max(1.0, audio_seconds * job_fps(info, options))


def megapixels(info: MediaInfo, options: Options) -> float:
    """Millions of pixels in each frame a job works on (after --resize_factor)."""
    return (info.width // options.resize_factor) * (info.height // options.resize_factor) / 1e6
