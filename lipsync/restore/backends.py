"""Which library runs the face restorer (GFPGAN v1.4): PyTorch in batches on a GPU, OpenVINO fp32 on a CPU.

Called on (B, 3, 512, 512) float32 RGB in [-1, 1], it returns the restored faces in the
same layout (unclipped, as the network gives them). The network is 87 M parameters and
about 170 GFLOP a face in its plain convolutions, some 20 times the Wav2Lip generator:

- on CUDA/MPS: PyTorch fp32, batches of `GPU_BATCH` faces, halved on out-of-memory;
- on a CPU: OpenVINO fp32 (INFERENCE_PRECISION_HINT f32, checked), converted once per
  weights file and cached on disk like the generator's model (lipsync.weights.openvino_cache): under
  LIPSYNC_MODEL_CACHE (default ~/.cache/lipsync/models), keyed by the weights' SHA256, the
  OpenVINO version and FORMAT, written atomically, its files verified against the hashes in
  its meta.json before use (rebuilt when they differ); a fresh conversion is checked against
  PyTorch on one face. Any OpenVINO failure falls back to PyTorch with the reason in the
  stats; it never stops a job.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LipSyncError
from ..runtime.concurrency import BuildOnce
from ..runtime.devices import cpu_threads, map_batches, torch_available, torch_missing
from ..storage.files import cache_root, checkpoint_sha256
from ..weights import openvino_cache as ovmodels

log = logging.getLogger(__name__)

# What one face costs, for telling a person beforehand (the app) and asking ZeroGPU for enough time
# (lipsync.engine.gpu_seconds).
# CPU: the enhance stage of a job on the 2-core AMD EPYC where this was written (OpenVINO fp32, landmarks and
# warps included, beside the lip-sync model; bench/RESULTS.md), as core-seconds, divided by the cores a job gets.
CPU_CORE_SECONDS_PER_FACE = 2 * 2.9
# GPU: an estimate, not measured (no GPU was lent where this was written): about 200 GFLOP a face in fp32 at a
# tenth of a data-centre GPU's peak, with the landmarks and warps on the CPU beside it.
GPU_SECONDS_PER_FACE = 0.03
FORMAT = 1  # bump when the conversion or the saved layout changes: old cache entries are then ignored
IR_NAME = "gfpgan.xml"
GPU_BATCH = 16  # faces per PyTorch call on a GPU (about 3 GB of activations at fp32)
SELF_CHECK_TOLERANCE = 0.02  # largest |OpenVINO - PyTorch| accepted on the [-1, 1] output after converting


def seconds_per_face(device: str) -> float:
    """About how long the restorer takes per face on `device` (see the constants above)."""
    return CPU_CORE_SECONDS_PER_FACE / cpu_threads() if str(device).startswith("cpu") else GPU_SECONDS_PER_FACE


def needs_torch() -> LipSyncError:
    """The one sentence for the CPU install (no torch): the network is PyTorch code (on a CPU, converted for
    OpenVINO once per weights file and OpenVINO version; a cached conversion then runs without torch)."""
    return torch_missing("The GFPGAN face restorer", "set enhance to none")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


class TorchRestorer:
    """GFPGAN on PyTorch: the GPU path, and the CPU fallback."""

    name = "pytorch"

    def __init__(self, weights: str, device: str, reason: str = "", model: Any = None) -> None:
        if model is None and not torch_available():
            raise needs_torch()
        from .gfpgan import load_gfpgan

        self.device = str(device)
        self.model = model if model is not None else load_gfpgan(weights, self.device)
        self.reason = reason
        self.max_batch = GPU_BATCH if not self.device.startswith("cpu") else 4

    def _run(self, faces: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(faces).to(self.device)).float().cpu().numpy()

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        outputs, self.max_batch = map_batches(
            lambda start, stop: self._run(faces[start:stop]), len(faces), min(len(faces), self.max_batch),
            self.device, "The face restorer ran out of GPU memory even one face at a time. Use --enhance none, or "
                         "close other programs using the GPU.")
        return np.concatenate(outputs)

    @property
    def label(self) -> str:
        return f"pytorch ({self.reason})" if self.reason else f"pytorch on {self.device}"


class OpenVINORestorer:
    """GFPGAN on OpenVINO's CPU plugin in fp32, one face per request, one request per stream."""

    name = "openvino"

    def __init__(self, ov_model: Any, core: Any, threads: int) -> None:
        self.streams = max(1, min(2, threads))
        self.compiled, _ = ovmodels.compile_cpu(core, ov_model, threads, self.streams)  # fp32, checked
        self.requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        self.lock = threading.Lock()  # the requests are shared by the engine's jobs: one batch at a time
        per_stream = max(1, threads // self.streams)
        self.reason = (f"OpenVINO {ovmodels.version().split('-')[0]} fp32, {self.streams} stream"
                       f"{'s' if self.streams > 1 else ''} x {per_stream} thread{'s' if per_stream > 1 else ''}")
        self.state = ""  # where the model came from: 'cached', 'built now', ... (ovmodels.Made.state)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        out = np.empty_like(faces)
        with self.lock:
            for start in range(0, len(faces), self.streams):
                running = []
                for k, i in enumerate(range(start, min(len(faces), start + self.streams))):
                    self.requests[k].start_async([np.ascontiguousarray(faces[i:i + 1])])
                    running.append((self.requests[k], i))
                for request, i in running:
                    request.wait()
                    out[i] = request.get_output_tensor(0).data[0]
        return out

    @property
    def label(self) -> str:
        return f"openvino ({self.reason}, {self.state})" if self.state else f"openvino ({self.reason})"


class SafeRestorer:
    """A restorer that switches to PyTorch for good when OpenVINO fails at inference (the job goes on)."""

    def __init__(self, backend: Any, weights: str, device: str) -> None:
        self.backend, self.weights, self.device = backend, weights, device

    @property
    def label(self) -> str:
        return self.backend.label

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        try:
            return self.backend(faces)
        except Exception as err:  # any failure of the fast path: PyTorch takes over
            if isinstance(self.backend, TorchRestorer):
                raise
            reason = f"OpenVINO failed at inference ({_one_line(err)}); PyTorch took over"
            log.warning("Face restorer: %s", reason)
            self.backend = TorchRestorer(self.weights, self.device, reason)
            return self.backend(faces)


def example_faces(n: int = 1) -> np.ndarray:
    """Smooth, face-like inputs in [-1, 1] (never zeros) for tracing and the self-check."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, 512, dtype=np.float32), np.linspace(-1, 1, 512, dtype=np.float32),
                         indexing="ij")
    base = 0.6 * np.exp(-(xx ** 2 + yy ** 2) * 1.5) - 0.2 + 0.1 * np.sin(9 * xx) * np.cos(7 * yy)
    faces = np.stack([base, base * 0.8, base * 0.7])[None].repeat(n, axis=0)
    return np.ascontiguousarray(np.clip(faces, -1, 1), dtype=np.float32)


def cache_entry(weights: str) -> Path:
    """The on-disk cache folder of this weights file's OpenVINO conversion (lipsync.weights.openvino_cache names it)."""
    return ovmodels.entry_dir(f"gfpgan-{checkpoint_sha256(weights, cache_root())}", FORMAT)


def load_openvino(weights: str) -> OpenVINORestorer:
    """GFPGAN on OpenVINO, read from the cache or converted now (and checked against PyTorch); raises on failure.

    Converting runs the PyTorch network, so it needs torch; a cached conversion runs without it."""
    import openvino as ov

    core = ov.Core()
    threads = cpu_threads()
    example = example_faces(1)
    reference: list[np.ndarray] = []

    def convert() -> Any:
        if not torch_available():
            raise needs_torch()
        import torch

        from .gfpgan import load_gfpgan

        model = load_gfpgan(weights, "cpu")
        with torch.inference_mode():
            converted = ov.convert_model(model, example_input=torch.from_numpy(example))
            reference.append(model(torch.from_numpy(example)).numpy())
        return converted

    def check(restorer: OpenVINORestorer) -> None:
        error = float(np.abs(restorer(example) - reference[0]).max())
        if error > SELF_CHECK_TOLERANCE:
            raise RuntimeError(f"its output differs from PyTorch's by {error:.3f}")

    made = ovmodels.load_or_build(cache_entry(weights), IR_NAME, build=convert,
                                  prepare=lambda model: OpenVINORestorer(model, core, threads), check=check,
                                  meta={"format": FORMAT}, core=core)
    made.value.state = made.state
    return made.value


def build_restorer(weights: str, device: str, backend: str = "auto") -> SafeRestorer:
    """The restorer for this weights file on this device, with why (never raises for OpenVINO's sake)."""
    device = str(device)
    if device.split(":")[0] != "cpu" or backend == "pytorch":
        reason = "chosen with --backend pytorch" if backend == "pytorch" and device == "cpu" else ""
        return SafeRestorer(TorchRestorer(weights, device, reason), weights, device)
    try:
        return SafeRestorer(load_openvino(weights), weights, device)
    except LipSyncError:
        raise  # the weights file itself is bad: the user's error, not OpenVINO's
    except ImportError as err:
        reason = f"OpenVINO not available ({_one_line(err)})"
    except Exception as err:
        reason = f"OpenVINO failed ({_one_line(err)})"
        log.warning("OpenVINO could not run the face restorer (%s); using PyTorch", reason)
    return SafeRestorer(TorchRestorer(weights, device, reason), weights, device)


_restorers = BuildOnce(build_restorer)


def shared_restorer(weights: str, device: str, backend: str = "auto") -> SafeRestorer:
    """One restorer per (weights, device, backend) in this process, built on first use (a server's jobs share it)."""
    return _restorers.get(weights, str(device), backend)
