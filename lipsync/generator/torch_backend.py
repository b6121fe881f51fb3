"""The generator on PyTorch: the path on CUDA and MPS, for fp16, and where OpenVINO is missing or fails."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .lazy import LazyModel

if TYPE_CHECKING:
    import torch


class TorchBackend:
    """The PyTorch module itself, called like every backend on numpy arrays.

    fp16/bf16 run the convolutions in half precision (autocast). On CUDA the input goes
    through pinned memory with non-blocking copies and the network runs channels-last.
    On a CPU it uses torch's own thread count (set process-wide by whoever owns the process,
    e.g. a batch worker).
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
