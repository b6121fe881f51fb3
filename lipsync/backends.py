"""Which library runs the Wav2Lip generator: OpenVINO on a CPU (measured 1.6-1.8x PyTorch there), else PyTorch.

Every backend is called like `Wav2Lip.forward(mels, faces)`, on numpy arrays: (B, 1, 80, 16)
and (B, 6, 96, 96) float32 in, (B, 3, 96, 96) float32 in [0, 1] out. It gets the network
as a `LazyModel` (below), loaded from the checkpoint only when needed: OpenVINO from its
cache needs neither the PyTorch model nor torch itself (1.3 s of a CPU job's start).

- `auto` (the default) takes OpenVINO on a CPU when it imports, PyTorch otherwise;
  CUDA, MPS and fp16 always run on PyTorch.
- OpenVINO runs fp32, enforced: INFERENCE_PRECISION_HINT=f32 (its default on CPUs with
  AMX or AVX512-BF16 is bf16) and EXECUTION_MODE_HINT=ACCURACY, checked on every compiled
  model. `--precision bf16` on a CPU asks OpenVINO for bf16 instead (about 2x its fp32 on
  an AVX512-BF16 CPU, where PyTorch's bf16 is slower than its fp32); a CPU without bf16
  arithmetic runs fp32 and the stats say so. Two streams, each batch split across them as
  async requests; one static shape per chunk size, compiled on first use (a shorter last
  chunk is padded, not recompiled).
- The converted model is a cache on disk (LIPSYNC_MODEL_CACHE, default
  ~/.cache/lipsync/models), keyed by the checkpoint's SHA256, the OpenVINO version and
  FORMAT, written atomically, converted again when missing or damaged.
- Any failure (OpenVINO missing, conversion, compilation, a self-check against PyTorch,
  a later inference) falls back to PyTorch with a one-line reason: it never stops a job.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .devices import cpu_threads
from .errors import LipSyncError
from .files import cache_root, checkpoint_sha256

if TYPE_CHECKING:  # torch is imported where the PyTorch model is needed, not before
    import torch

    from .model import Wav2Lip

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openvino", "pytorch")
FORMAT = 1  # bump when the conversion or the file layout below changes: old entries are then ignored
SELF_CHECK_TOLERANCE = 1.0 / 255  # largest |OpenVINO - PyTorch| on the [0, 1] output accepted after converting
IR_NAME = "wav2lip.xml"


class LazyModel:
    """The Wav2Lip generator of one checkpoint on one device, loaded from disk on first use.

    PyTorch loads it when it is the backend, to convert it for OpenVINO, or to take over from
    a failing backend; a CPU job on a cached OpenVINO model never does (nor imports torch,
    about 1.3 s of a job's start). It also holds the backends chosen for it, so an engine
    converts and compiles once, not per job.
    """

    def __init__(self, checkpoint_path: str | None, device: str = "cpu", model: Wav2Lip | None = None) -> None:
        self.checkpoint_path = checkpoint_path
        self.device = str(device)
        self._model = model
        self.lock = threading.RLock()  # loading, and choosing backends (lipsync.backends.backend_for)
        self.backends: dict[tuple[str, str, str], Any] = {}

    @classmethod
    def of(cls, model: Wav2Lip | LazyModel, device: str = "cpu") -> LazyModel:
        """`model` itself if lazy, else the one LazyModel of this loaded module (its backends are shared)."""
        if isinstance(model, LazyModel):
            return model
        with _wrap_lock:
            network = model.__dict__.get("_lipsync_network")
            if network is None:
                network = cls(getattr(model, "checkpoint_path", None), device, model)
                model.__dict__["_lipsync_network"] = network
            return network

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> Wav2Lip:
        """The PyTorch model, loaded now if it was not yet."""
        with self.lock:
            if self._model is None:
                from .model import load_model

                if self.checkpoint_path is None:
                    raise LipSyncError("No checkpoint to load the model from.")
                self._model = load_model(self.checkpoint_path, self.device)
            return self._model


_wrap_lock = threading.Lock()


class TorchBackend:
    """The PyTorch model itself (the path on CUDA and MPS, for bf16/fp16, and the fallback).

    fp16/bf16 run the convolutions in half precision (autocast). On CUDA the input goes
    through pinned memory with non-blocking copies and the network runs channels-last.
    """

    name = "pytorch"

    def __init__(self, network: LazyModel, device: str = "cpu", precision: str = "fp32", reason: str = "") -> None:
        import torch

        self.device = str(device)
        self.precision = precision
        self.cuda = self.device.startswith("cuda")
        self.model = network.get()
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.reason = reason

    def _autocast(self):
        import torch

        kind = self.device.split(":")[0]
        if self.precision == "fp32":
            return torch.autocast(device_type=kind, enabled=False)
        return torch.autocast(device_type=kind, dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        import torch

        tensor = torch.from_numpy(array)
        if self.cuda:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def __call__(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = self._to_device(faces)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                return self.model(self._to_device(mels), x).float().cpu().numpy()

    @property
    def label(self) -> str:
        return f"pytorch ({self.reason})" if self.reason else "pytorch"


class OpenVINOBackend:
    """Wav2Lip on OpenVINO's CPU plugin in fp32 (bf16 when asked): one static-shape compiled model per chunk size."""

    name = "openvino"

    def __init__(self, ov_model: Any, core: Any, threads: int, streams: int = 0, precision: str = "fp32") -> None:
        self.ov_model = ov_model
        self.core = core
        self.threads = threads
        self.streams = max(1, min(streams or 2, threads))
        self.precision = precision
        self.ran = precision  # what the compiled model computes in: bf16 asked can be fp32 on an older CPU
        hint, mode = ("bf16", "PERFORMANCE") if precision == "bf16" else ("f32", "ACCURACY")
        self.config = {"INFERENCE_PRECISION_HINT": hint, "EXECUTION_MODE_HINT": mode,
                       "NUM_STREAMS": self.streams, "INFERENCE_NUM_THREADS": threads}
        self._compiled: dict[int, list] = {}  # chunk size -> one infer request per stream
        self._lock = threading.Lock()  # the requests are shared: one batch at a time
        self.reason = ""

    def requests(self, chunk: int) -> list:
        """The infer requests for `chunk` faces, compiling that shape on first use (its precision checked)."""
        if chunk not in self._compiled:
            model = self.ov_model.clone()
            model.reshape({0: [chunk, 1, 80, 16], 1: [chunk, 6, 96, 96]})
            compiled = self.core.compile_model(model, "CPU", self.config)
            precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
            is_f32 = "f32" in precision or "float32" in precision
            if self.precision == "fp32" and not is_f32:
                raise RuntimeError(f"OpenVINO compiled the model in {precision}, not fp32")
            if self.precision == "bf16":
                if not is_f32 and "bf16" not in precision and "bfloat16" not in precision:
                    raise RuntimeError(f"OpenVINO compiled the model in {precision}, not bf16 or fp32")
                self.ran = "fp32" if is_f32 else "bf16"
            self._compiled[chunk] = [compiled.create_infer_request() for _ in range(self.streams)]
        return self._compiled[chunk]

    MAX_PADDING = 8  # faces of padding accepted to reuse a compiled shape (compiling one costs about 10 faces)

    def _chunk_for(self, b: int) -> int:
        """Faces per request for a batch of b: b split over the streams, or a compiled shape that holds such a
        chunk when padding costs less than compiling a new one (a job's short last batch)."""
        target = -(-b // min(self.streams, b))
        if target in self._compiled:
            return target
        fits = [c for c in self._compiled if c >= target and c * -(-b // c) - b <= self.MAX_PADDING]
        return min(fits) if fits else target

    def infer(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(B, 1, 80, 16), (B, 6, 96, 96) float32 arrays -> (B, 3, 96, 96) float32."""
        b = len(faces)
        with self._lock:
            chunk = self._chunk_for(b)
            jobs = []
            for k, lo in enumerate(range(0, b, chunk)):
                size = min(b, lo + chunk) - lo
                shape = chunk
                m, f = mels[lo:lo + size], faces[lo:lo + size]
                if shape > size:  # pad with copies of the last face (real values, no denormals)
                    m = np.concatenate([m, np.repeat(m[-1:], shape - size, axis=0)])
                    f = np.concatenate([f, np.repeat(f[-1:], shape - size, axis=0)])
                req = self.requests(shape)[k % self.streams]
                req.start_async([np.ascontiguousarray(m), np.ascontiguousarray(f)])
                jobs.append((req, size))
            outs = []
            for req, size in jobs:
                req.wait()
                outs.append(req.get_output_tensor(0).data[:size].copy())
            return np.concatenate(outs)

    def __call__(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        return self.infer(mels, faces)

    @property
    def label(self) -> str:
        return f"openvino ({self.reason})" if self.reason else "openvino"


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

    @property
    def label(self) -> str:
        return self.backend.label

    def __call__(self, mels: np.ndarray, faces: np.ndarray) -> np.ndarray:
        try:
            return self.backend(mels, faces)
        except Exception as err:  # noqa: BLE001  (any failure of the fast path: PyTorch takes over)
            if isinstance(self.backend, TorchBackend):
                raise
            reason = f"OpenVINO failed at inference ({_one_line(err)}); PyTorch took over"
            log.warning("Model backend: %s", reason)
            self.backend = TorchBackend(self.network, self.device, self.precision, reason)
            return self.backend(mels, faces)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _example_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth, real-looking inputs for tracing and the self-check (never zeros: an untrained model hits denormals)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    base = 0.35 + 0.3 * torch.sin(6 * xx + 3 * yy) * torch.cos(4 * yy)
    faces = (base + 0.1 * torch.rand(n, 6, 96, 96, generator=gen)).clamp(0, 1)
    faces[:, :3, 48:] = 0  # the masked lower half, as the runner makes it
    t = torch.linspace(0, 1, 16)
    mels = (-2 + 1.5 * torch.sin(20 * t)[None, None, None, :] * torch.rand(n, 1, 80, 1, generator=gen)).clamp(-4, 4)
    return mels.contiguous(), faces.contiguous()


def _entry_dir(sha: str, ov_version: str, root: Path) -> Path:
    return root / f"{sha}-openvino{ov_version}-f{FORMAT}"


def _convert(model: torch.nn.Module, ov: Any) -> Any:
    import torch

    with torch.inference_mode():
        ov_model = ov.convert_model(model.eval(), example_input=_example_inputs(1))
    ov_model.reshape({0: [-1, 1, 80, 16], 1: [-1, 6, 96, 96]})  # dynamic batch on disk, static when compiled
    return ov_model


def _save(ov_model: Any, ov: Any, target: Path) -> None:
    """Save the IR (fp32 weights) into `target` atomically: a reader sees the whole entry or none."""
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        ov.save_model(ov_model, str(tmp / IR_NAME), compress_to_fp16=False)
        (tmp / "meta.json").write_text(json.dumps({"openvino": ov.__version__, "torch": torch.__version__,
                                                   "format": FORMAT, "precision": "f32"}))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # a damaged entry being replaced
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / IR_NAME).exists():  # not just another process that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _self_check(backend: OpenVINOBackend, model: torch.nn.Module, chunk: int) -> float:
    """Largest |OpenVINO - PyTorch| on one chunk of real-looking inputs, on the [0, 1] scale."""
    import torch

    mels, faces = _example_inputs(chunk)
    with torch.inference_mode():
        ref = model(mels, faces).numpy()
    return float(np.abs(backend(mels.numpy(), faces.numpy()) - ref).max())


def load_openvino(network: LazyModel, warm_batch: int = 8, timings: dict[str, float] | None = None,
                  precision: str = "fp32") -> OpenVINOBackend:
    """OpenVINO for this network, from the disk cache (the PyTorch model is not loaded then) or converted now
    (raises on any failure). A fresh conversion is checked against PyTorch in fp32, whatever `precision`."""
    import openvino as ov

    timings = timings if timings is not None else {}
    version = ov.__version__.split("-")[0]
    threads = cpu_threads()
    checkpoint_path = network.checkpoint_path
    root = cache_root()
    folder = None
    if checkpoint_path and os.path.isfile(checkpoint_path):
        t = time.perf_counter()
        folder = _entry_dir(checkpoint_sha256(checkpoint_path, root), ov.__version__.replace("/", "_"), root)
        timings["sha256_s"] = time.perf_counter() - t
    core = ov.Core()
    state = "converted now"
    backend = None
    if folder is not None and (folder / IR_NAME).is_file():
        try:
            t = time.perf_counter()
            backend = OpenVINOBackend(core.read_model(str(folder / IR_NAME)), core, threads, precision=precision)
            backend.requests(-(-warm_batch // backend.streams))
            timings["read_compile_s"] = time.perf_counter() - t
            state = "cached"
        except Exception as err:  # noqa: BLE001  (a damaged entry: convert again)
            log.info("Converted model at %s unreadable (%s); converting again", folder, _one_line(err))
            backend = None
            state = "converted again, the cached copy was damaged"
    fresh = backend is None
    if fresh:
        model = network.get()
        t = time.perf_counter()
        ov_model = _convert(model, ov)
        timings["convert_s"] = time.perf_counter() - t
        if folder is not None:
            t = time.perf_counter()
            try:
                _save(ov_model, ov, folder)
                ov_model = core.read_model(str(folder / IR_NAME))  # run what is cached, as later starts will
            except OSError as err:
                log.info("Could not cache the converted model in %s (%s)", folder, err)
            timings["save_s"] = time.perf_counter() - t
        t = time.perf_counter()
        backend = OpenVINOBackend(ov_model, core, threads)
        chunk = -(-warm_batch // backend.streams)
        backend.requests(chunk)
        timings["compile_s"] = time.perf_counter() - t
        t = time.perf_counter()
        err = _self_check(backend, model, chunk)
        timings["self_check_s"] = time.perf_counter() - t
        if err > SELF_CHECK_TOLERANCE:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(f"its output differs from PyTorch's by {err * 255:.1f} levels")
        if precision != "fp32":
            backend = OpenVINOBackend(ov_model, core, threads, precision=precision)
            backend.requests(chunk)
    arithmetic = backend.ran if backend.ran == precision else f"{backend.ran} (this CPU has no {precision} arithmetic)"
    backend.reason = (f"OpenVINO {version} {arithmetic}, {backend.streams} streams x "
                      f"{max(1, threads // backend.streams)} thread{'s' if threads // backend.streams > 1 else ''}, "
                      f"{state}")
    return backend


def choose_backend(network: LazyModel | Any, device: str, precision: str = "fp32", choice: str = "auto",
                   warm_batch: int = 8, timings: dict[str, float] | None = None) -> SafeBackend:
    """The backend this network runs on, with why, as a SafeBackend (never raises for OpenVINO's sake).

    `network` is a LazyModel, or a loaded Wav2Lip module (wrapped in one)."""
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}")
    network = LazyModel.of(network, str(device))

    def pytorch(reason: str) -> SafeBackend:
        return SafeBackend(TorchBackend(network, device, precision, reason), network, device, precision)

    if choice == "pytorch":
        return pytorch("chosen with --backend pytorch")
    if str(device).split(":")[0] != "cpu":
        return pytorch(f"OpenVINO runs on a CPU only; {device} uses PyTorch" if choice == "openvino" else "")
    if precision not in ("fp32", "bf16"):
        return pytorch(f"{precision} runs on PyTorch")
    try:
        import openvino  # noqa: F401
    except Exception as err:  # noqa: BLE001  (ImportError, or a broken native library)
        return pytorch(f"OpenVINO not available ({_one_line(err)}); pip install openvino for about 1.7x the speed "
                       "on a CPU")
    try:
        return SafeBackend(load_openvino(network, warm_batch, timings, precision), network, device, precision)
    except LipSyncError:
        raise  # the checkpoint itself is bad (missing, damaged, not Wav2Lip): the user's error, not OpenVINO's
    except Exception as err:  # noqa: BLE001
        log.warning("OpenVINO could not run the model (%s); using PyTorch", _one_line(err))
        return pytorch(f"OpenVINO failed ({_one_line(err)})")


def backend_for(network: LazyModel, device: str, precision: str = "fp32", choice: str = "auto",
                warm_batch: int = 8) -> SafeBackend:
    """choose_backend once per (device, precision, choice) for this network: an engine converts once, not per job."""
    key = (str(device), precision, choice)
    with network.lock:
        if key not in network.backends:
            network.backends[key] = choose_backend(network, device, precision, choice, warm_batch)
        return network.backends[key]
