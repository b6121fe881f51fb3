"""Running SyncNet: OpenVINO fp32 on a CPU (built from the weights, cached on disk), PyTorch on a GPU or as fallback.

- CPU: the OpenVINO graph of lipsync.scoring.graph, cached by lipsync.weights.openvino_cache under the
  weights' SHA256 (a later start reads neither the weights nor torch), compiled in fp32
  (enforced: OpenVINO would pick bf16 on CPUs with AMX) with one static shape per batch
  size; a short last batch is padded when that costs fewer windows than compiling. A fresh
  graph is compared with PyTorch when torch imports, as the generator's is.
- GPU (or a CPU without OpenVINO): the PyTorch module of lipsync.scoring.network in fp32,
  with cuDNN's TF32 turned off around each call, so a GPU gives the CPU's distances (TF32
  would move them by about 1e-3).
Both take and give numpy arrays: lips (B, 3, 5, 224, 224), mfcc (B, 1, 13, 20), float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any

import numpy as np

from ..errors import LipSyncError
from ..options import BACKENDS  # the generator's choices, the same words
from ..runtime.concurrency import BuildOnce
from ..runtime.devices import (
    cpu_threads,
    import_torch,
    resolve_device,
    torch_available,
    torch_missing,
)
from ..storage.files import cache_root, checkpoint_sha256
from ..weights import openvino_cache as ovmodels
from .checkpoint import Weights, read_syncnet_weights
from .layout import LIP_FRAMES, LIP_SIZE, MFCC_BANDS, MFCC_STEPS

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the graph changes: cached entries of another format are then ignored
IR_NAME = "syncnet.xml"
DEFAULT_BATCH = {"cpu": 20, "cuda": 64, "mps": 32}  # windows per call; 20 is the official batch
SELF_CHECK_TOLERANCE = 1e-3  # largest |OpenVINO - PyTorch| over the largest |PyTorch| accepted after building


class OpenVINOSyncNet:
    """SyncNet on OpenVINO's CPU plugin in fp32: one compiled static shape per batch size."""

    name = "openvino"
    MAX_PADDING = 4  # windows of padding accepted to reuse a compiled shape (compiling costs about as much)

    def __init__(self, ov_model: Any, core: Any, threads: int, batch_size: int) -> None:
        self.ov_model, self.core, self.threads, self.batch_size = ov_model, core, threads, batch_size
        self._requests: dict[int, Any] = {}
        self._lock = threading.Lock()  # one infer request per shape, shared: one batch at a time
        self.reason = ""

    def request(self, size: int) -> Any:
        if size not in self._requests:
            model = self.ov_model.clone()
            model.reshape({0: [size, 3, LIP_FRAMES, LIP_SIZE, LIP_SIZE], 1: [size, 1, MFCC_BANDS, MFCC_STEPS]})
            compiled, _ = ovmodels.compile_cpu(self.core, model, self.threads)
            self._requests[size] = compiled.create_infer_request()
        return self._requests[size]

    def __call__(self, lips: np.ndarray, mfcc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = len(lips)
        with self._lock:
            size = min((s for s in self._requests if count <= s <= count + self.MAX_PADDING), default=count)
            if size > count:  # repeat the last window: real values, and its outputs are dropped
                lips = np.concatenate([lips, np.repeat(lips[-1:], size - count, axis=0)])
                mfcc = np.concatenate([mfcc, np.repeat(mfcc[-1:], size - count, axis=0)])
            request = self.request(size)
            request.infer([np.ascontiguousarray(lips, np.float32), np.ascontiguousarray(mfcc, np.float32)])
            return (request.get_output_tensor(0).data[:count].copy(), request.get_output_tensor(1).data[:count].copy())

    @property
    def label(self) -> str:
        return f"openvino ({self.reason})" if self.reason else "openvino"


class TorchSyncNet:
    """The PyTorch module in fp32 on `device`."""

    name = "pytorch"

    def __init__(self, weights: Weights, device: str, batch_size: int, reason: str = "") -> None:
        from .network import build_syncnet

        self.device, self.batch_size, self.reason = device, batch_size, reason
        self.model = build_syncnet(weights, device)

    def _exact(self) -> Any:
        """cuDNN without TF32 for the call (torch lets convolutions use it by default on recent GPUs)."""
        import torch

        if not self.device.startswith("cuda"):
            return contextlib.nullcontext()
        cudnn = torch.backends.cudnn
        return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                           allow_tf32=False)

    def __call__(self, lips: np.ndarray, mfcc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode(), self._exact():
            lip = self.model.forward_lip(torch.from_numpy(np.ascontiguousarray(lips)).to(self.device))
            aud = self.model.forward_aud(torch.from_numpy(np.ascontiguousarray(mfcc)).to(self.device))
            return lip.float().cpu().numpy(), aud.float().cpu().numpy()

    @property
    def label(self) -> str:
        return f"pytorch on {self.device} fp32" + (f" ({self.reason})" if self.reason else "")


def example_inputs(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Real-looking windows for the self-check: smooth images in 0..255 and MFCC-like values."""
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 1, LIP_SIZE), np.linspace(0, 1, LIP_SIZE), indexing="ij")
    base = 120 + 60 * np.sin(6 * xx + 3 * yy) * np.cos(4 * yy)
    lips = np.clip(base + 20 * rng.random((count, 3, LIP_FRAMES, LIP_SIZE, LIP_SIZE)), 0, 255)
    mfcc = rng.normal(0, 10, (count, 1, MFCC_BANDS, MFCC_STEPS))
    return lips.astype(np.float32), mfcc.astype(np.float32)


def load_openvino(path: str, threads: int, batch_size: int) -> OpenVINOSyncNet:
    """The OpenVINO network for the weights at `path`, from the model cache or built now (raises on any failure)."""
    import openvino as ov

    from .graph import build_graph

    sha = checkpoint_sha256(path, cache_root())
    core = ov.Core()
    held: dict[str, Weights] = {}

    def build() -> Any:
        held["weights"] = read_syncnet_weights(path)
        return build_graph(held["weights"])

    def prepare(model: Any) -> OpenVINOSyncNet:
        net = OpenVINOSyncNet(model, core, threads, batch_size)
        net.request(batch_size)
        return net

    def check(net: OpenVINOSyncNet) -> None:
        if import_torch() is None:
            held["unchecked"] = {}
            return
        reference = TorchSyncNet(held["weights"], "cpu", 2)
        lips, mfcc = example_inputs(2)
        for got, want in zip(net(lips, mfcc), reference(lips, mfcc)):
            err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))
            if err > SELF_CHECK_TOLERANCE:
                raise RuntimeError(f"its embeddings differ from PyTorch's by {err:.1e} (relative)")

    made = ovmodels.load_or_build(ovmodels.entry_dir(f"syncnet-{sha}", FORMAT), IR_NAME, build, prepare, check,
                                  core=core, meta={"format": FORMAT, "precision": "f32", "built": "from the weights"})
    net = made.value
    checked = "" if "unchecked" not in held else ", not compared with PyTorch (not installed)"
    net.reason = f"OpenVINO {ov.__version__.split('-')[0]} fp32, {threads} threads, {made.state}{checked}"
    return net


def load_syncnet(weights: str | None = None, device: str = "cpu", *, backend: str = "auto", batch_size: int = 0,
                 threads: int = 0, download: bool = True) -> OpenVINOSyncNet | TorchSyncNet:
    """SyncNet ready to embed windows: `weights` a path (None: found or downloaded,
    lipsync.weights.locate.resolve_syncnet), `device` 'cpu', 'cuda', 'mps' or 'auto'. On a CPU `auto` takes
    OpenVINO and falls back to PyTorch with a logged reason; 'pytorch' or a GPU device takes PyTorch. Load it
    once and pass it to every score_video call."""
    from ..weights.locate import resolve_syncnet

    if backend not in BACKENDS:
        raise LipSyncError(f"Unknown scoring backend '{backend}'. Choose one of: {', '.join(BACKENDS)}.")
    path = resolve_syncnet(weights, download=download)
    device = resolve_device(device)
    batch = batch_size or DEFAULT_BATCH.get(device.split(":")[0], 20)
    reason = ""
    if device == "cpu" and backend != "pytorch":
        try:
            return load_openvino(path, threads or cpu_threads(), batch)
        except LipSyncError:
            raise
        except Exception as err:  # not installed, or failed to build, compile or check
            if backend == "openvino":
                raise LipSyncError(f"OpenVINO cannot run SyncNet here ({type(err).__name__}: {err}). Use the "
                                   "pytorch backend.") from None
            reason = f"OpenVINO unavailable: {type(err).__name__}"
            log.warning("SyncNet on PyTorch: %s", reason)
    if not torch_available():
        raise torch_missing(f"Scoring lip sync on {device}" if device != "cpu" else "Scoring without OpenVINO",
                            "install OpenVINO (pip install openvino) to score on the CPU")
    return TorchSyncNet(read_syncnet_weights(path), device, batch, reason)


_shared: BuildOnce[OpenVINOSyncNet | TorchSyncNet] = BuildOnce(
    lambda path, device: load_syncnet(path, device, download=False))


def shared_syncnet(weights: str | None = None, device: str = "cpu",
                   download: bool = True) -> OpenVINOSyncNet | TorchSyncNet:
    """SyncNet loaded once per (weights file, device) in this process and shared, like the face detectors: every
    job an engine scores, the engine's `score` and the score command use the one network (a load costs about a
    second: reading 55 MB, compiling OpenVINO). The weights are found first (`weights` None: found or downloaded,
    lipsync.weights.locate.resolve_syncnet), so a missing file is its one sentence before anything is built."""
    from ..weights.locate import resolve_syncnet

    path = os.path.realpath(resolve_syncnet(weights, download=download))
    return _shared.get(path, resolve_device(device))
