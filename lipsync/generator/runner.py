"""Running the generator over batches of faces: its input and output arrays, the backend, out-of-memory retries.

This module imports no torch: a CPU job runs on OpenVINO (lipsync.generator.openvino_backend)
without the PyTorch module ever being loaded (LazyModel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import LipSyncError
from ..geometry import IMG_SIZE
from ..runtime.devices import map_batches
from .choice import backend_for
from .lazy import LazyModel

if TYPE_CHECKING:
    from .network import Wav2Lip


def network_input(crops: np.ndarray) -> np.ndarray:
    """(B, 96, 96, 3) uint8 crops -> the network's (B, 6, 96, 96) float32 input in [0, 1].

    The first three channels are the face with its lower half blanked (where the model draws
    the mouth), the last three the whole face as the pose reference: the official order.
    """
    faces = crops.transpose(0, 3, 1, 2)
    x = np.empty((len(crops), 6, IMG_SIZE, IMG_SIZE), np.float32)
    x[:, :3] = faces
    x[:, :3, IMG_SIZE // 2:] = 0
    x[:, 3:] = faces
    x /= np.float32(255.0)
    return x


def network_output(pred: np.ndarray) -> np.ndarray:
    """(B, 3, 96, 96) float32 in [0, 1] -> (B, 96, 96, 3) uint8 faces, truncated as the official code does."""
    return (pred.transpose(0, 2, 3, 1) * np.float32(255.0)).astype(np.uint8)


class ModelRunner:
    """Runs the Wav2Lip network over batches of (96x96 face crop, mel window) on one device.

    fp32 reproduces the official numbers; fp16/bf16 run the convolutions in half
    precision for speed (PyTorch's autocast; OpenVINO's bf16 on a CPU), at the cost of
    small differences in the mouth (bench/RESULTS.md gives the measured size). A batch
    that runs out of GPU memory is retried in halves, as the official code does for
    detection. On a CPU in fp32 the network runs on OpenVINO when it is installed
    (`backend`: auto, openvino or pytorch; lipsync.generator.choice), built once per
    checkpoint and cached on disk.
    """

    def __init__(self, model: Wav2Lip | LazyModel, device: str, precision: str = "fp32",
                 backend: str = "auto", latency: bool = False) -> None:
        if precision == "fp16" and not str(device).startswith(("cuda", "mps")):
            raise LipSyncError("fp16 runs on a GPU only. Use --precision fp32, or bf16 on a recent CPU.")
        self.network = LazyModel.of(model, str(device))
        self.device = str(device)
        self.max_batch: int | None = None  # lowered after an out-of-memory error, for the rest of this job
        self.backend = backend_for(self.network, self.device, precision, backend, latency=latency)

    @property
    def backend_label(self) -> str:
        """Which library runs the network, and why (one line for the stats)."""
        return self.backend.label

    def _run(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        pred = self.backend(np.ascontiguousarray(mels[:, None], dtype=np.float32), network_input(crops))
        return network_output(pred)

    def __call__(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """crops (B, 96, 96, 3) uint8 BGR, mels (B, 80, 16) float32 -> (B, 96, 96, 3) uint8 BGR faces."""
        outputs, self.max_batch = map_batches(
            lambda start, stop: self._run(crops[start:stop], mels[start:stop]), len(crops),
            min(len(crops), self.max_batch or len(crops)), self.device,
            "The lip-sync model ran out of GPU memory even one face at a time. Close other programs using the GPU, "
            "or use --device cpu.")
        return np.concatenate(outputs)
