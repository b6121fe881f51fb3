"""Where the models run, how much they take at once, and handing memory back.

The batch sizes are per device because small batches run faster on a CPU and big ones
on a GPU; the frame budget caps how many full frames wait for their faces, so a 4K clip
needs no more memory than a 720p one. Running out of GPU memory halves the batch, for
the model and the detector alike (`map_batches`).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence, TypeVar

from ..environment import FRAME_BUDGET_MB, THREADS
from ..errors import LipSyncError
from ..options import DEVICES

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BATCH = {"cuda": 128, "mps": 64, "cpu": 8}  # faces per model call; on a CPU small batches run faster
def frame_budget_bytes() -> int:
    """Decoded frames a job holds per batch, in bytes ($LIPSYNC_FRAME_BUDGET_MB)."""
    return int(FRAME_BUDGET_MB.read() * 2**20)


# What a GPU's driver leaves on Linux: NVIDIA (CUDA), AMD ROCm (also torch.cuda), a GPU passed into WSL.
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl")
GPU_REQUIREMENTS = "requirements-gpu.txt"  # what installs PyTorch (and S3FD) on top of the CPU install


def no_gpu_here(platform: str | None = None, driver_paths: tuple[str, ...] = GPU_DRIVER_PATHS) -> bool:
    """True on Linux with no GPU driver at all: then 'auto' is the CPU, known without importing torch.

    Importing torch costs about 1.3 s of a CPU job's start, and a CPU job on OpenVINO needs
    no torch at all. Anywhere else (a driver present, macOS, Windows) torch itself is asked,
    as before. `platform` and `driver_paths` are this machine's unless given (tests)."""
    platform = sys.platform if platform is None else platform
    return platform.startswith("linux") and not any(os.path.exists(p) for p in driver_paths)


def nvidia_driver_present() -> bool:
    """An NVIDIA driver is installed (its Linux device files, or nvidia-smi, which every NVIDIA driver ships)."""
    return any(os.path.exists(p) for p in NVIDIA_DRIVER_PATHS) or shutil.which("nvidia-smi") is not None


def import_torch() -> ModuleType | None:
    """torch, or None when it is not installed (the CPU install) or does not import (a broken install)."""
    try:
        import torch
    except Exception:  # ImportError, or a native library that fails to load
        return None
    return torch


def torch_available() -> bool:
    """Whether torch would import, answered without importing it when it is not loaded yet."""
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def torch_missing(what: str, otherwise: str = "") -> LipSyncError:
    """The one sentence for a feature that needs PyTorch where it is not installed: what to install, or do instead."""
    return LipSyncError(f"{what} needs PyTorch, which is not installed here. Install it with "
                        f"`pip install -r {GPU_REQUIREMENTS}`{', or ' + otherwise if otherwise else ''}.")


def resolve_device(name: str = "auto") -> str:
    """'auto' -> cuda, mps or cpu, whichever is here; an explicit device that is missing is a clear error.

    Without torch (the CPU install) 'auto' is the CPU, unless an NVIDIA driver says a GPU is
    here: then the sentence says what to install, rather than running 20 times slower unsaid."""
    if name not in DEVICES:
        raise LipSyncError(f"Unknown device '{name}'. Choose auto, cuda, cpu or mps.")
    if name == "cpu" or (name == "auto" and no_gpu_here()):
        return "cpu"
    torch = import_torch()
    if torch is None:
        if name != "auto":
            raise torch_missing(f"--device {name}", "use --device cpu")
        if nvidia_driver_present():
            raise torch_missing("This machine has an NVIDIA GPU, and running on it",
                                "pass --device cpu to run on the CPU")
        return "cpu"
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise LipSyncError("--device cuda was asked for but no CUDA GPU is available. Use --device auto or cpu.")
    if name == "mps" and not mps:
        raise LipSyncError("--device mps was asked for but Apple's MPS is not available. Use --device auto or cpu.")
    return name


def cpu_threads() -> int:
    """The threads one job's CPU work gets by default: OMP_NUM_THREADS, else one per physical core (torch's own
    default). Callers pass the count on explicitly (lipsync.generator: OpenVINO's streams); nothing here depends
    on which libraries happen to be imported."""
    wanted = THREADS.read()
    return wanted if wanted > 0 else physical_cores()


def physical_cores() -> int:
    """Cores this process may run on, counting hyper-threads once (torch's default thread count)."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology.joinpath("physical_package_id").read_text().strip(),
                       topology.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def frames_in_budget(wanted: int, height: int, width: int) -> int:
    """`wanted` capped so that many full BGR frames stay within the frame budget (at least 1)."""
    return max(1, min(wanted, frame_budget_bytes() // (height * width * 3)))


def model_batch(requested: int, height: int, width: int, device: str = "cpu") -> int:
    """The model batch (`requested`, or the device's default when 0), capped by the frame budget.

    The batch size does not change the output (batch norm runs in eval mode).
    """
    return frames_in_budget(requested or DEFAULT_BATCH.get(device.split(":")[0], 16), height, width)


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def map_batches(run: Callable[[int, int], Sequence[T]], total: int, step: int, device: str,
                exhausted: str) -> tuple[list[Sequence[T]], int]:
    """`run(start, stop)` over consecutive slices of `total` items; a slice that runs out of memory is retried in
    halves. Returns the outputs of each slice and the step that worked; `exhausted` is the error when even one
    item does not fit."""
    outputs: list[Sequence[T]] = []
    start, step = 0, max(1, step)
    while start < total:
        stop = min(total, start + step)
        try:
            outputs.append(run(start, stop))
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            if step == 1:
                raise LipSyncError(exhausted) from None
            step = max(1, step // 2)
            empty_device_cache(device)
            log.warning("Out of memory; retrying with batches of %d", step)
            continue
        start = stop
    return outputs, step


def empty_device_cache(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def release_memory(device: str) -> None:
    """Hand a finished job's memory back to the system, so a long-running server returns to its baseline.

    Frames and activations are freed when a job ends, but glibc keeps freed heap pages
    and CUDA keeps its cache; both are returned here.
    """
    gc.collect()
    empty_device_cache(device)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to trim
        pass
