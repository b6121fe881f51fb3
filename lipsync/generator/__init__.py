"""Running the Wav2Lip generator: everything between face crops + mel windows and generated faces.

    layout.py           the architecture as data, read by both builders and the checkpoint check
    checkpoint.py       the generator's checkpoint, read by lipsync.weights.reader and checked against the layout
    network.py          the PyTorch module built from the layout; load_model (imports torch)
    graph.py            the OpenVINO graph built from the numpy weights (batch norm folded; no torch)
    lazy.py             LazyModel: one checkpoint on one device, loaded only as far as a backend needs
    torch_backend.py    PyTorch: CUDA, MPS, fp16, and the fallback
    openvino_backend.py OpenVINO on a CPU: built, cached on disk (lipsync.weights.openvino_cache), self-checked, fp32
    choice.py           which backend runs, the fallback to PyTorch, one choice per engine
    runner.py           ModelRunner: crops -> network input -> backend -> faces, out-of-memory retries

Importing this package imports neither torch nor OpenVINO: `load_model` and `Wav2Lip`
load torch when first used.
"""

from __future__ import annotations

from typing import Any

from .choice import backend_for, choose_backend
from .lazy import LazyModel
from .runner import ModelRunner, network_input, network_output

__all__ = ["LazyModel", "ModelRunner", "backend_for", "choose_backend", "network_input", "network_output",
           "load_model", "Wav2Lip"]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "Wav2Lip"):
        from . import network

        return getattr(network, name)
    raise AttributeError(f"module 'lipsync.generator' has no attribute '{name}'")
