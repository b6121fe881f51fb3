"""What scoring a result costs, from the files' headers: for the app's switch (on where it costs little) and for
ZeroGPU's request.

A job's score decodes the result at 25 fps, crops the face from the job's own track (no
detector), and runs SyncNet once per 25 fps frame (a window of five); the MFCCs and the
offset search are milliseconds. So the cost is per second of result: 25 windows, plus the
decoding, which grows with the frame's size.
"""

from __future__ import annotations

from ..results import SCORE_FPS
from ..runtime.devices import cpu_threads

# CPU: measured on the 2-core Intel Xeon (AVX-512, AMX) where this was written, shared with other work, OpenVINO fp32
# (`bench/score_bench.py --job`; bench/RESULTS.md, #30: a job's result scored on its own track, 60 s of 1080p and
# 20 s of 720p), as core-seconds, divided by the cores a job gets; the job's own cost (lipsync.media.limits) was
# measured in the same runs, so the two compare.
CPU_CORE_SECONDS_PER_WINDOW = 2 * 0.0135  # SyncNet alone: 71-77 windows/s on 2 threads
CPU_CORE_SECONDS_PER_MEGAPIXEL_FRAME = 2 * 0.0037  # decoding the result at 25 fps, cropping, resizing to 224x224
# GPU: an estimate, not measured (no GPU was lent where this was written): SyncNet is about 4.1 GFLOP a window
# (a millisecond at a tenth of a data-centre GPU's fp32 peak, batched), the decoding and cropping on the CPU beside it.
GPU_SECONDS_PER_WINDOW = 0.002
GPU_SECONDS_PER_MEGAPIXEL_FRAME = 0.004


def seconds(duration: float, megapixels: float, device: str) -> float:
    """About how long scoring `duration` seconds of a result of `megapixels` per frame takes on `device`."""
    windows = max(1.0, duration * SCORE_FPS)
    if str(device).startswith("cpu"):
        per_window = CPU_CORE_SECONDS_PER_WINDOW + CPU_CORE_SECONDS_PER_MEGAPIXEL_FRAME * megapixels
        return windows * per_window / cpu_threads()
    return windows * (GPU_SECONDS_PER_WINDOW + GPU_SECONDS_PER_MEGAPIXEL_FRAME * megapixels)


def gpu_seconds_per_frame(fps: float, megapixels: float) -> float:
    """What scoring adds per output frame of a GPU job (lipsync.media.limits.gpu_seconds_for's `extra_per_frame`)."""
    return (GPU_SECONDS_PER_WINDOW + GPU_SECONDS_PER_MEGAPIXEL_FRAME * megapixels) * SCORE_FPS / max(fps, 1e-6)
