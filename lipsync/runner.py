"""Running the Wav2Lip network over batches of faces: the device, the precision, out-of-memory retries."""

from __future__ import annotations

import numpy as np
import torch

from .backends import backend_for
from .devices import map_batches
from .errors import LipSyncError
from .model import IMG_SIZE, Wav2Lip


class ModelRunner:
    """Runs the Wav2Lip network over batches of (96x96 face crop, mel window) on one device.

    fp32 reproduces the official numbers; fp16/bf16 run the convolutions in half
    precision (autocast) for speed, at the cost of small differences in the mouth
    (bench/RESULTS.md gives the measured size). On CUDA the input goes through pinned
    memory with non-blocking copies and the network runs channels-last. A batch that
    runs out of GPU memory is retried in halves, as the official code does for detection.
    On a CPU in fp32 the network runs on OpenVINO when it is installed (`backend`: auto,
    openvino or pytorch; lipsync.backends), converted once per model and cached on disk.
    """

    def __init__(self, model: Wav2Lip, device: str, precision: str = "fp32", backend: str = "auto") -> None:
        if precision == "fp16" and not str(device).startswith(("cuda", "mps")):
            raise LipSyncError("fp16 runs on a GPU only. Use --precision fp32, or bf16 on a recent CPU.")
        self.model = model
        self.device = str(device)
        self.precision = precision
        self.cuda = self.device.startswith("cuda")
        if self.cuda:
            self.model = model.to(memory_format=torch.channels_last)
        self.max_batch: int | None = None  # lowered after an out-of-memory error, for the rest of this job
        self.backend = backend_for(self.model, self.device, precision, backend)

    @property
    def backend_label(self) -> str:
        """Which library runs the network, and why (one line for the stats)."""
        return self.backend.label

    def _autocast(self):
        if self.precision == "fp32":
            return torch.autocast(device_type=self.device.split(":")[0], enabled=False)
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.cuda:
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    @torch.inference_mode()
    def _run(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        faces = self._to_device(crops)
        masked = faces.clone()
        masked[:, IMG_SIZE // 2:] = 0
        x = torch.cat((masked, faces), dim=3).permute(0, 3, 1, 2).float() / 255.0
        m = self._to_device(mels).unsqueeze(1)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            pred = self.backend(m, x)
        return (pred.float().permute(0, 2, 3, 1) * 255.0).to(torch.uint8).cpu().numpy()

    def __call__(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """crops (B, 96, 96, 3) uint8 BGR, mels (B, 80, 16) float32 -> (B, 96, 96, 3) uint8 BGR faces."""
        outputs, self.max_batch = map_batches(
            lambda start, stop: self._run(crops[start:stop], mels[start:stop]), len(crops),
            min(len(crops), self.max_batch or len(crops)), self.device,
            "The lip-sync model ran out of GPU memory even one face at a time. Close other programs using the GPU, "
            "or use --device cpu.")
        return np.concatenate(outputs)
