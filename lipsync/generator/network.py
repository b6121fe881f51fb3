"""The Wav2Lip generator as a PyTorch module, and loading a checkpoint into it.

The modules are made from the layout tables (lipsync.generator.layout), so every
parameter name and shape is that of the official `models/wav2lip.py` and its
checkpoints load with no key renamed. The weights come from the torch-free reader
(lipsync.generator.checkpoint), which never runs code from the file.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .checkpoint import Weights, read_weights
from .layout import AUDIO_ENCODER, FACE_DECODER, FACE_ENCODER, OUTPUT_BLOCK, OUTPUT_CONV, Conv


class ConvBlock(nn.Module):
    """Conv (or transposed conv) + BatchNorm + ReLU, optionally residual. Attribute names follow the checkpoint."""

    def __init__(self, spec: Conv) -> None:
        super().__init__()
        if spec.transposed:
            layer: nn.Module = nn.ConvTranspose2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding,
                                                  spec.output_padding)
        else:
            layer = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding)
        self.conv_block = nn.Sequential(layer, nn.BatchNorm2d(spec.cout))
        self.act = nn.ReLU()
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def _sequence(specs: tuple[Conv, ...]) -> nn.Sequential:
    return nn.Sequential(*(ConvBlock(spec) for spec in specs))


class Wav2Lip(nn.Module):
    """Generator: a 6-channel 96x96 face (masked + reference) and an 80x16 mel window -> a 3x96x96 face."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([_sequence(block) for block in FACE_ENCODER])
        self.audio_encoder = _sequence(AUDIO_ENCODER)
        self.face_decoder_blocks = nn.ModuleList([_sequence(block) for block in FACE_DECODER])
        self.output_block = nn.Sequential(ConvBlock(OUTPUT_BLOCK), nn.Conv2d(*OUTPUT_CONV, 1, 1, 0), nn.Sigmoid())
        self.checkpoint_path: str | None = None  # the file it was loaded from: the key of its OpenVINO cache

    def forward(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """mels (B, 1, 80, 16), faces (B, 6, 96, 96) in [0, 1] -> (B, 3, 96, 96) in [0, 1]."""
        x = self.audio_encoder(mels)
        skips = []
        feat = faces
        for block in self.face_encoder_blocks:
            feat = block(feat)
            skips.append(feat)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


def build_model(weights: Weights, device: str | torch.device = "cpu", checkpoint_path: str | None = None) -> Wav2Lip:
    """The generator holding `weights` (checked names and shapes, e.g. from read_weights), in eval mode on `device`.

    The module is made on the meta device and the arrays assigned without a copy."""
    with torch.device("meta"):
        model = Wav2Lip()
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, assign=True)
    model.checkpoint_path = checkpoint_path
    return model.to(device).eval()


def load_model(path: str, device: str | torch.device = "cpu") -> Wav2Lip:
    """Build the generator, load an official checkpoint into it and put it in eval mode on `device`."""
    return build_model(read_weights(path), device, path)


def state_as_numpy(model: nn.Module) -> Weights:
    """A loaded module's weights as numpy arrays (what the OpenVINO graph is built from)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
