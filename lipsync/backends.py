"""Which library runs the Wav2Lip generator: OpenVINO on a CPU (measured 1.4-1.7x PyTorch there), else PyTorch.

Every backend is called like `Wav2Lip.forward(mels, faces)`: (B, 1, 80, 16) and
(B, 6, 96, 96) float32 tensors in, (B, 3, 96, 96) float32 in [0, 1] out.

- `auto` (the default) takes OpenVINO on a CPU when it imports, PyTorch otherwise;
  CUDA, MPS and the bf16/fp16 precisions always run on PyTorch.
- OpenVINO runs fp32, enforced: INFERENCE_PRECISION_HINT=f32 (its default on CPUs with
  AMX or AVX512-BF16 is bf16) and EXECUTION_MODE_HINT=ACCURACY, checked on every compiled
  model. Two streams, each batch split across them as async requests; one static shape
  per chunk size, compiled on first use (a shorter last chunk is padded, not recompiled).
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
from typing import Any

import numpy as np
import torch

from .files import sha256_file

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openvino", "pytorch")
FORMAT = 1  # bump when the conversion or the file layout below changes: old entries are then ignored
SELF_CHECK_TOLERANCE = 1.0 / 255  # largest |OpenVINO - PyTorch| on the [0, 1] output accepted after converting
IR_NAME = "wav2lip.xml"


def cache_root() -> Path:
    """Where converted models live: $LIPSYNC_MODEL_CACHE, else models/ in $LIPSYNC_CACHE_DIR when that is set
    (the tests' temporary cache), else ~/.cache/lipsync/models. Read at each call."""
    env = os.environ.get("LIPSYNC_MODEL_CACHE")
    if env:
        return Path(env)
    shared = os.environ.get("LIPSYNC_CACHE_DIR")
    return Path(shared) / "models" if shared else Path.home() / ".cache" / "lipsync" / "models"


def checkpoint_sha256(path: str | os.PathLike, root: Path | None = None) -> str:
    """SHA256 of a checkpoint, memoised by (real path, size, mtime) so a 436 MB file is hashed once, not per start."""
    root = root or cache_root()
    st = os.stat(path)
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = root / "sha256.json"
    try:
        memo = json.loads(memo_file.read_text())
        if key in memo:
            return memo[key]
    except (OSError, ValueError, TypeError):
        memo = {}
    digest = sha256_file(path)
    try:
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = digest
        atomic_write_text(memo_file, json.dumps(memo))
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return digest


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cpu_threads() -> int:
    return max(1, torch.get_num_threads())


class TorchBackend:
    """The PyTorch model itself (the path on CUDA and MPS, for bf16/fp16, and the fallback)."""

    name = "pytorch"

    def __init__(self, model: torch.nn.Module, reason: str = "") -> None:
        self.model = model
        self.reason = reason

    def __call__(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return self.model(mels, faces)

    @property
    def label(self) -> str:
        return f"pytorch ({self.reason})" if self.reason else "pytorch"


class OpenVINOBackend:
    """Wav2Lip on OpenVINO's CPU plugin in fp32: one static-shape compiled model per chunk size."""

    name = "openvino"

    def __init__(self, ov_model: Any, core: Any, threads: int, streams: int = 0) -> None:
        self.ov_model = ov_model
        self.core = core
        self.threads = threads
        self.streams = max(1, min(streams or 2, threads))
        self.config = {"INFERENCE_PRECISION_HINT": "f32", "EXECUTION_MODE_HINT": "ACCURACY",
                       "NUM_STREAMS": self.streams, "INFERENCE_NUM_THREADS": threads}
        self._compiled: dict[int, list] = {}  # chunk size -> one infer request per stream
        self._lock = threading.Lock()  # the requests are shared: one batch at a time
        self.reason = ""

    def requests(self, chunk: int) -> list:
        """The infer requests for `chunk` faces, compiling that shape on first use (fp32 checked)."""
        if chunk not in self._compiled:
            model = self.ov_model.clone()
            model.reshape({0: [chunk, 1, 80, 16], 1: [chunk, 6, 96, 96]})
            compiled = self.core.compile_model(model, "CPU", self.config)
            precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
            if "f32" not in precision and "float32" not in precision:
                raise RuntimeError(f"OpenVINO compiled the model in {precision}, not fp32")
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

    def __call__(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.infer(mels.detach().cpu().float().numpy(),
                                           faces.detach().cpu().float().numpy()))

    @property
    def label(self) -> str:
        return f"openvino ({self.reason})" if self.reason else "openvino"


class SafeBackend:
    """A backend that switches to PyTorch for good if it fails at inference (the job goes on)."""

    def __init__(self, backend: Any, model: torch.nn.Module) -> None:
        self.backend = backend
        self.model = model

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def label(self) -> str:
        return self.backend.label

    def __call__(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        try:
            return self.backend(mels, faces)
        except Exception as err:  # noqa: BLE001  (any failure of the fast path: PyTorch takes over)
            if isinstance(self.backend, TorchBackend):
                raise
            reason = f"OpenVINO failed at inference ({_one_line(err)}); PyTorch took over"
            log.warning("Model backend: %s", reason)
            self.backend = TorchBackend(self.model, reason)
            return self.backend(mels, faces)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _example_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth, real-looking inputs for tracing and the self-check (never zeros: an untrained model hits denormals)."""
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
    with torch.inference_mode():
        ov_model = ov.convert_model(model.eval(), example_input=_example_inputs(1))
    ov_model.reshape({0: [-1, 1, 80, 16], 1: [-1, 6, 96, 96]})  # dynamic batch on disk, static when compiled
    return ov_model


def _save(ov_model: Any, ov: Any, target: Path) -> None:
    """Save the IR (fp32 weights) into `target` atomically: a reader sees the whole entry or none."""
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
    mels, faces = _example_inputs(chunk)
    with torch.inference_mode():
        ref = model(mels, faces)
    return float((backend(mels, faces) - ref).abs().max())


def load_openvino(model: torch.nn.Module, checkpoint_path: str | None, warm_batch: int = 8,
                  timings: dict[str, float] | None = None) -> OpenVINOBackend:
    """OpenVINO for this model, from the disk cache or converted now (raises on any failure)."""
    import openvino as ov

    timings = timings if timings is not None else {}
    version = ov.__version__.split("-")[0]
    threads = _cpu_threads()
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
            backend = OpenVINOBackend(core.read_model(str(folder / IR_NAME)), core, threads)
            backend.requests(-(-warm_batch // backend.streams))
            timings["read_compile_s"] = time.perf_counter() - t
            state = "cached"
        except Exception as err:  # noqa: BLE001  (a damaged entry: convert again)
            log.info("Converted model at %s unreadable (%s); converting again", folder, _one_line(err))
            backend = None
            state = "converted again, the cached copy was damaged"
    fresh = backend is None
    if fresh:
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
    backend.reason = (f"OpenVINO {version} fp32, {backend.streams} streams x "
                      f"{max(1, threads // backend.streams)} thread{'s' if threads // backend.streams > 1 else ''}, "
                      f"{state}")
    return backend


def choose_backend(model: torch.nn.Module, device: str, precision: str = "fp32", choice: str = "auto",
                   checkpoint_path: str | None = None, warm_batch: int = 8,
                   timings: dict[str, float] | None = None) -> SafeBackend:
    """The backend this job's model runs on, with why, as a SafeBackend (never raises for OpenVINO's sake)."""
    if choice not in BACKENDS:
        raise ValueError(f"unknown backend {choice!r}")
    on_cpu = str(device).split(":")[0] == "cpu"
    if choice == "pytorch":
        return SafeBackend(TorchBackend(model, "chosen with --backend pytorch"), model)
    if not on_cpu:
        return SafeBackend(TorchBackend(model, f"OpenVINO runs on a CPU only; {device} uses PyTorch"
                                        if choice == "openvino" else ""), model)
    if precision != "fp32":
        return SafeBackend(TorchBackend(model, f"{precision} runs on PyTorch"), model)
    try:
        import openvino  # noqa: F401
    except Exception as err:  # noqa: BLE001  (ImportError, or a broken native library)
        return SafeBackend(TorchBackend(model, f"OpenVINO not available ({_one_line(err)}); "
                                        "pip install openvino for about 1.5x the speed on a CPU"), model)
    try:
        return SafeBackend(load_openvino(model, checkpoint_path, warm_batch, timings), model)
    except Exception as err:  # noqa: BLE001
        log.warning("OpenVINO could not run the model (%s); using PyTorch", _one_line(err))
        return SafeBackend(TorchBackend(model, f"OpenVINO failed ({_one_line(err)})"), model)


_chosen_lock = threading.Lock()


def backend_for(model: torch.nn.Module, device: str, precision: str = "fp32", choice: str = "auto",
                warm_batch: int = 8) -> SafeBackend:
    """choose_backend once per (device, precision, choice) for this model: an engine converts once, not per job."""
    key = (str(device), precision, choice)
    with _chosen_lock:
        chosen = model.__dict__.setdefault("_lipsync_backends", {})
        if key not in chosen:
            chosen[key] = choose_backend(model, device, precision, choice, getattr(model, "checkpoint_path", None),
                                         warm_batch)
        return chosen[key]
