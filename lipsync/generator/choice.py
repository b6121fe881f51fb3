"""Which library runs the generator, and the fallback when it fails: OpenVINO on a CPU, else PyTorch.

- `auto` (the default) takes OpenVINO on a CPU when it imports (measured 1.6-1.8x PyTorch
  there), PyTorch otherwise; CUDA, MPS and fp16 always run on PyTorch.
- Any failure of OpenVINO (missing, building, compiling, the self-check, a later
  inference) falls back to PyTorch with a one-line reason: it never stops a job, unless
  PyTorch is not installed either (the CPU install), which is then one sentence saying
  what to install.
- `backend_for` chooses once per (device, precision, choice) for a LazyModel: an engine
  builds and compiles once, not per job.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import LipSyncError
from ..options import BACKENDS
from ..runtime.devices import GPU_REQUIREMENTS, torch_available, torch_missing
from ..weights.openvino_cache import native_bf16
from . import openvino_backend
from .lazy import LazyModel
from .torch_backend import TorchBackend

log = logging.getLogger(__name__)


class SafeBackend:
    """A backend that switches to PyTorch for good if it fails at inference (the job goes on)."""

    def __init__(self, backend: Any, network: LazyModel, device: str = "cpu", precision: str = "fp32") -> None:
        self.backend = backend
        self.network = network
        self.device = device
        self.precision = precision

    @property
    def name(self) -> str:
        return self.backend.name

    def for_latency(self) -> "SafeBackend":
        """The same model tuned for one face at a time (live sessions): OpenVINO with one stream on all the threads,
        so a single face uses every core instead of one; any other backend as it is."""
        if not hasattr(self.backend, "single_stream"):
            return self
        return SafeBackend(self.backend.single_stream(), self.network, self.device, self.precision)

    @property
    def label(self) -> str:
        return self.backend.label

    def __call__(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        try:
            return self.backend(mels, faces)
        except Exception as err:  # any failure of the fast path: PyTorch takes over
            if isinstance(self.backend, TorchBackend):
                raise
            if not torch_available():
                raise LipSyncError(f"OpenVINO failed at inference ({one_line(err)}), and PyTorch, which would take "
                                   f"over, is not installed. Install it with `pip install -r {GPU_REQUIREMENTS}`.") \
                    from None
            reason = f"OpenVINO failed at inference ({one_line(err)}); PyTorch took over"
            log.warning("Model backend: %s", reason)
            self.backend = TorchBackend(self.network, self.device, self.precision, reason)
            return self.backend(mels, faces)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def choose_backend(network: LazyModel | Any, device: str, precision: str = "fp32", choice: str = "auto",
                   warm_batch: int = 8, timings: dict[str, float] | None = None) -> SafeBackend:
    """The backend this network runs on, with why, as a SafeBackend (never raises for OpenVINO's sake).

    `network` is a LazyModel, or a loaded Wav2Lip module (wrapped in one)."""
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}")
    network = LazyModel.of(network, str(device))

    def pytorch(reason: str, without_torch: LipSyncError) -> SafeBackend:
        if not torch_available():
            raise without_torch
        return SafeBackend(TorchBackend(network, device, precision, reason), network, device, precision)

    on_cpu = "use --backend auto (OpenVINO on a CPU)"
    if choice == "pytorch":
        return pytorch("chosen with --backend pytorch", torch_missing("--backend pytorch", on_cpu))
    if str(device).split(":")[0] != "cpu":
        return pytorch(f"OpenVINO runs on a CPU only; {device} uses PyTorch" if choice == "openvino" else "",
                       torch_missing(f"Running the model on {device}", "use --device cpu"))
    if precision not in ("fp32", "bf16"):
        return pytorch(f"{precision} runs on PyTorch", torch_missing(f"--precision {precision}", "use fp32"))
    try:
        import openvino  # noqa: F401
    except Exception as err:  # ImportError, or a broken native library
        return pytorch(f"OpenVINO not available ({one_line(err)}); pip install openvino for about 1.7x the speed "
                       "on a CPU", LipSyncError(f"Neither OpenVINO nor PyTorch is installed, and one of them runs "
                                                f"the model. Install OpenVINO with `pip install openvino` "
                                                f"({one_line(err)})."))
    try:
        return SafeBackend(openvino_backend.load_openvino(network, warm_batch, timings, precision), network, device,
                           precision)
    except LipSyncError:
        raise  # the checkpoint itself is bad (missing, damaged, not Wav2Lip): the user's error, not OpenVINO's
    except Exception as err:
        log.warning("OpenVINO could not run the model (%s); using PyTorch", one_line(err))
        return pytorch(f"OpenVINO failed ({one_line(err)})",
                       LipSyncError(f"OpenVINO could not run the model ({one_line(err)}), and PyTorch, which would "
                                    f"take over, is not installed. Install it with `pip install -r "
                                    f"{GPU_REQUIREMENTS}`."))


def resolve_precision(precision: str, device: str, choice: str = "auto") -> str:
    """The arithmetic `precision` stands for on `device`: 'auto' is bf16 on a CPU that computes it natively when
    OpenVINO runs the model (faster, within a few levels of fp32), fp32 everywhere else (GPUs too, until bf16 or
    fp16 there is measured against fp32); any other value is itself."""
    if precision != "auto":
        return precision
    on_openvino = str(device).split(":")[0] == "cpu" and choice in ("auto", "openvino")
    return "bf16" if on_openvino and native_bf16() else "fp32"


def backend_for(network: LazyModel, device: str, precision: str = "fp32", choice: str = "auto",
                warm_batch: int = 8, latency: bool = False) -> SafeBackend:
    """choose_backend once per (device, precision, choice) for this network: an engine builds once, not per job.
    `latency`: the variant for one face at a time (SafeBackend.for_latency), made once from the same model."""
    precision = resolve_precision(precision, device, choice)
    key = (str(device), precision, choice, latency)
    with network.lock:  # re-entrant: the latency variant is made from the plain one
        if key not in network.backends:
            network.backends[key] = (backend_for(network, device, precision, choice, warm_batch).for_latency()
                                     if latency else choose_backend(network, device, precision, choice, warm_batch))
        return network.backends[key]
