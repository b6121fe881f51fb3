"""The generator on OpenVINO's CPU plugin: built from the checkpoint's weights (no torch), cached, compiled in fp32.

- The graph is built straight from the numpy weights (lipsync.generator.graph), not
  converted from the PyTorch module: the same model for an install with or without torch,
  within float rounding of eager PyTorch (1.2e-7 on the [0, 1] output, as the torch
  conversion gave), in about a second instead of the conversion's tracing.
- It is cached on disk by lipsync.weights.openvino_cache: keyed by the checkpoint's SHA256 (remembered
  per path, size, mtime, inode and ctime: lipsync.storage.files.file_sha256), the OpenVINO version
  and FORMAT, its files verified against the hashes in its meta.json; a CPU job on a cached
  model reads neither the checkpoint nor torch.
- A freshly built model is compared with eager PyTorch when torch is importable (the
  self-check; a difference over SELF_CHECK_TOLERANCE removes the entry and PyTorch runs
  the job); without torch it is used as built, and its label says so.
- fp32, enforced and checked on every compiled model; `--precision bf16` asks for bf16.
  Two streams, each batch split across them as async requests; one static shape per chunk
  size, compiled on first use (a shorter last chunk is padded, not recompiled).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.devices import import_torch, torch_available
from ..storage.files import cache_root, checkpoint_sha256
from ..weights import openvino_cache as ovmodels
from .graph import build_graph
from .lazy import LazyModel

FORMAT = 2  # bump when the graph or the file layout changes: old entries are then ignored (1: torch-converted)
SELF_CHECK_TOLERANCE = 1.0 / 255  # largest |OpenVINO - PyTorch| on the [0, 1] output accepted after building
IR_NAME = "wav2lip.xml"


class OpenVINOBackend:
    """Wav2Lip on OpenVINO's CPU plugin in fp32 (bf16 when asked): one static-shape compiled model per chunk size."""

    name = "openvino"
    MAX_PADDING = 8  # faces of padding accepted to reuse a compiled shape (compiling one costs about 10 faces)

    def __init__(self, ov_model: Any, core: Any, threads: int, streams: int = 0, precision: str = "fp32") -> None:
        self.ov_model = ov_model
        self.core = core
        self.threads = threads
        self.streams = max(1, min(streams or 2, threads))
        self.precision = precision
        self.ran = precision  # what the compiled model computes in: bf16 asked can be fp32 on an older CPU
        self._compiled: dict[int, list] = {}  # chunk size -> one infer request per stream
        self._lock = threading.Lock()  # the requests are shared: one batch at a time
        self.made = ""  # how the model came to be: from the disk cache, built now, ... ('' until described)
        self.reason = ""

    def describe(self, made: str) -> None:
        """Word `reason` from what this backend holds: OpenVINO's version, what it computes in (bf16 asked runs in
        fp32 on a CPU without bf16 arithmetic), its streams and threads, and `made`."""
        import openvino as ov

        self.made = made
        arithmetic = self.ran if self.ran == self.precision else \
            f"{self.ran} (this CPU has no {self.precision} arithmetic)"
        per_stream = max(1, self.threads // self.streams)
        self.reason = (f"OpenVINO {ov.__version__.split('-')[0]} {arithmetic}, {self.streams} "
                       f"stream{'s' if self.streams > 1 else ''} x {per_stream} thread{'s' if per_stream > 1 else ''}, "
                       f"{made}")

    def single_stream(self) -> "OpenVINOBackend":
        """This model compiled as one stream on all the threads: a single face runs on every core (a live session's
        frame of speech), where two streams give each face one core (a job's batches, split over both)."""
        backend = OpenVINOBackend(self.ov_model, self.core, self.threads, 1, self.precision)
        backend.ran = self.ran
        if self.reason:
            backend.describe(self.made)
        return backend

    def requests(self, chunk: int) -> list:
        """The infer requests for `chunk` faces, compiling that shape on first use (its precision checked)."""
        if chunk not in self._compiled:
            model = self.ov_model.clone()
            model.reshape({0: [chunk, 1, 80, 16], 1: [chunk, 6, 96, 96]})
            compiled, self.ran = ovmodels.compile_cpu(self.core, model, self.threads, self.streams, self.precision)
            self._compiled[chunk] = [compiled.create_infer_request() for _ in range(self.streams)]
        return self._compiled[chunk]

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
                m, f = mels[lo:lo + size], faces[lo:lo + size]
                if chunk > size:  # pad with copies of the last face (real values, no denormals)
                    m = np.concatenate([m, np.repeat(m[-1:], chunk - size, axis=0)])
                    f = np.concatenate([f, np.repeat(f[-1:], chunk - size, axis=0)])
                req = self.requests(chunk)[k % self.streams]
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


def example_inputs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth, real-looking inputs for the self-check (never zeros: an untrained model hits denormals)."""
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(0, 1, 96), np.linspace(0, 1, 96), indexing="ij")
    base = 0.35 + 0.3 * np.sin(6 * xx + 3 * yy) * np.cos(4 * yy)
    faces = np.clip(base + 0.1 * rng.random((n, 6, 96, 96)), 0, 1).astype(np.float32)
    faces[:, :3, 48:] = 0  # the masked lower half, as the runner makes it
    t = np.linspace(0, 1, 16)
    mels = np.clip(-2 + 1.5 * np.sin(20 * t)[None, None, None, :] * rng.random((n, 1, 80, 1)), -4, 4)
    return mels.astype(np.float32), faces


def self_check(backend: OpenVINOBackend, model: Any, chunk: int) -> float:
    """Largest |OpenVINO - PyTorch| on one chunk of real-looking inputs, on the [0, 1] scale."""
    import torch

    mels, faces = example_inputs(chunk)
    with torch.inference_mode():
        ref = model(torch.from_numpy(mels), torch.from_numpy(faces)).numpy()
    return float(np.abs(backend(mels, faces) - ref).max())


def remove_superseded(root: Path, sha: str) -> None:
    """Delete what earlier versions cached for this checkpoint and no longer read (about 145 MB each): converted
    models of an older FORMAT, and the torch-format copy of the weights that load_model used to keep."""
    old = [p for p in root.glob(f"{sha}-openvino*-f*") if p.is_dir() and p.name.rsplit("-f", 1)[-1].isdigit()
           and int(p.name.rsplit("-f", 1)[-1]) < FORMAT]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob(f"{sha}-state-f*.pt"):
        path.unlink(missing_ok=True)


def load_openvino(network: LazyModel, warm_batch: int = 8, timings: dict[str, float] | None = None,
                  precision: str = "fp32") -> OpenVINOBackend:
    """OpenVINO for this network, from the disk cache (nothing else is loaded then) or built now from its weights
    (raises on any failure). A fresh model is checked against PyTorch in fp32, whatever `precision`, when torch
    imports; the chunk of `warm_batch` faces is compiled before returning."""
    import openvino as ov

    timings = timings if timings is not None else {}
    threads = network.threads
    folder = sha = None
    root = cache_root()
    if network.checkpoint_path and os.path.isfile(network.checkpoint_path):
        t = time.perf_counter()
        sha = checkpoint_sha256(network.checkpoint_path, root)
        folder = ovmodels.entry_dir(sha, FORMAT, root)
        timings["sha256_s"] = time.perf_counter() - t
    core = ov.Core()
    streams = max(1, min(2, threads))
    chunk = -(-warm_batch // streams)
    held: dict[str, Any] = {}  # the weights read for the graph, kept for the self-check's PyTorch model

    def build() -> Any:
        weights = network.weights()
        if torch_available():
            held["weights"] = weights
        return build_graph(weights)

    def prepare(ov_model: Any, wanted: str = precision) -> OpenVINOBackend:
        backend = OpenVINOBackend(ov_model, core, threads, streams, wanted)
        backend.requests(chunk)
        return backend

    def check(backend: OpenVINOBackend) -> None:
        if import_torch() is None:
            held["unchecked"] = True
            return
        fp32 = backend if precision == "fp32" else prepare(backend.ov_model, "fp32")
        err = self_check(fp32, network.get(held.pop("weights", None)), chunk)
        if err > SELF_CHECK_TOLERANCE:
            raise RuntimeError(f"its output differs from PyTorch's by {err * 255:.1f} levels")

    made = ovmodels.load_or_build(folder, IR_NAME, build, prepare, check, timings=timings, core=core,
                                  meta={"format": FORMAT, "precision": "f32", "built": "from the weights"})
    unchecked = held.get("unchecked", False)
    held.clear()
    if sha is not None and made.state != "cached":
        remove_superseded(root, sha)
    backend = made.value
    backend.describe(made.state + (", not compared with PyTorch (not installed)" if unchecked else ""))
    return backend
