"""SyncNet as a PyTorch module, made from the layout tables: the official names, shapes and arithmetic.

`SyncNet` is joonson/syncnet_python's `S(num_layers_in_fc_layers=1024)` rebuilt from
lipsync.scoring.layout, so its state_dict() has exactly the release file's names and
shapes (plus the counters a current torch adds) and `forward_aud` / `forward_lip` compute
what the official methods compute. It is the GPU path, and the CPU path where OpenVINO
is missing; the weights come from the torch-free reader (lipsync.scoring.checkpoint).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .checkpoint import Weights
from .layout import (
    AUDIO_CNN,
    BN_EPS,
    FC,
    LIP_CNN,
    Conv,
    Layer,
    Linear,
    Norm,
    Pool,
    Relu,
)


def _module(layer: Layer, dims: int) -> nn.Module:
    """The torch module for one layer; `dims` (1, 2 or 3) picks BatchNorm1d/2d/3d."""
    if isinstance(layer, Conv):
        conv = nn.Conv3d if len(layer.kernel) == 3 else nn.Conv2d
        return conv(layer.cin, layer.cout, layer.kernel, layer.stride, layer.padding)
    if isinstance(layer, Norm):
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](layer.channels, eps=BN_EPS)
    if isinstance(layer, Relu):
        return nn.ReLU()
    if isinstance(layer, Pool):
        pool = nn.MaxPool3d if len(layer.kernel) == 3 else nn.MaxPool2d
        return pool(layer.kernel, layer.stride, layer.padding)
    if isinstance(layer, Linear):
        return nn.Linear(layer.fin, layer.fout)
    raise TypeError(f"unknown layer {layer!r}")


def _sequential(table: tuple[Layer, ...], dims: int) -> nn.Sequential:
    return nn.Sequential(*(_module(layer, dims) for layer in table))


class SyncNet(nn.Module):
    """Audio tower (13x20 MFCC window -> 1024) and lip tower (five 224x224 BGR frames, 0..255 -> 1024)."""

    def __init__(self) -> None:
        super().__init__()
        # registered in the official order, which is the order of state_dict()
        self.netcnnaud = _sequential(AUDIO_CNN, 2)
        self.netfcaud = _sequential(FC, 1)
        self.netfclip = _sequential(FC, 1)
        self.netcnnlip = _sequential(LIP_CNN, 3)

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) float MFCC windows -> (B, 1024)."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) float BGR frames in 0..255 -> (B, 1024)."""
        return self.netfclip(self.netcnnlip(x).flatten(1))

    def forward(self, lips: torch.Tensor, mfcc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_lip(lips), self.forward_aud(mfcc)


def build_syncnet(weights: Weights, device: str | torch.device = "cpu") -> SyncNet:
    """The network holding `weights` (names and shapes checked, e.g. by read_syncnet_weights), in eval mode, on
    `device`."""
    with torch.device("meta"):
        model = SyncNet()
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, assign=True)
    return model.to(device).eval()
