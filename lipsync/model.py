"""The Wav2Lip generator and checkpoint loading.

The layer layout reproduces the official `models/wav2lip.py` so that its checkpoints
(`wav2lip.pth`, `wav2lip_gan.pth`) load with no key renamed: every parameter name and
shape matches `shared/wav2lip_state_dict.json`. Checkpoints are read with
`torch.load(weights_only=True)`: a file that tries to run code is refused, not run.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile

import numpy as np
import torch
from torch import nn

from .errors import LipSyncError

IMG_SIZE = 96  # the generator's face crops are 96x96


class ConvBlock(nn.Module):
    """Conv + BatchNorm + ReLU, optionally residual. Attribute names follow the checkpoint."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride, padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpConvBlock(nn.Module):
    """Transposed conv + BatchNorm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(channels: int) -> ConvBlock:
    return ConvBlock(channels, channels, 3, 1, 1, residual=True)


class Wav2Lip(nn.Module):
    """Generator: a 6-channel 96x96 face (masked + reference) and an 80x16 mel window -> a 3x96x96 face."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),  # 96x96
            nn.Sequential(ConvBlock(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48x48
            nn.Sequential(ConvBlock(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24x24
            nn.Sequential(ConvBlock(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12x12
            nn.Sequential(ConvBlock(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6x6
            nn.Sequential(ConvBlock(256, 512, 3, 2, 1), _res(512)),  # 3x3
            nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1x1
        ])
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 32, 3, 1, 1), _res(32), _res(32),
            ConvBlock(32, 64, 3, (3, 1), 1), _res(64), _res(64),
            ConvBlock(64, 128, 3, 3, 1), _res(128), _res(128),
            ConvBlock(128, 256, 3, (3, 2), 1), _res(256),
            ConvBlock(256, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),  # 1x1
            nn.Sequential(UpConvBlock(1024, 512, 3, 1, 0), _res(512)),  # 3x3
            nn.Sequential(UpConvBlock(1024, 512, 3, 2, 1, 1), _res(512), _res(512)),  # 6x6
            nn.Sequential(UpConvBlock(768, 384, 3, 2, 1, 1), _res(384), _res(384)),  # 12x12
            nn.Sequential(UpConvBlock(512, 256, 3, 2, 1, 1), _res(256), _res(256)),  # 24x24
            nn.Sequential(UpConvBlock(320, 128, 3, 2, 1, 1), _res(128), _res(128)),  # 48x48
            nn.Sequential(UpConvBlock(160, 64, 3, 2, 1, 1), _res(64), _res(64)),  # 96x96
        ])
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

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


def _read_checkpoint(path: str) -> dict:
    """torch.load with weights_only=True, every failure turned into one sentence the user can act on."""
    if not os.path.isfile(path):
        raise LipSyncError(f"Checkpoint not found: '{path}'. Check --checkpoint_path, or put wav2lip_gan.pth "
                           "in the weights/ folder (see weights/README.md).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "Unsupported global" in str(err):  # a class or function reference: code
            raise LipSyncError(
                f"Refused to load '{path}': it holds Python objects or code, not just weights, and loading it "
                "could run that code. Use an official Wav2Lip checkpoint (see weights/README.md).") from None
        raise LipSyncError(_damaged(path)) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, IndexError):
        raise LipSyncError(_damaged(path)) from None


def _damaged(path: str) -> str:
    size = os.path.getsize(path)
    return (f"'{path}' is not a readable PyTorch checkpoint ({size:,} bytes: truncated, damaged or another "
            "kind of file). Download it again (the official files are about 436 MB); see weights/README.md.")


def extract_state_dict(checkpoint: object, path: str) -> dict[str, torch.Tensor]:
    """The generator's weights from an official checkpoint ({'state_dict': {'module.…': tensor}, …})."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LipSyncError(f"'{path}' is a PyTorch file but holds no model weights. "
                           "Use wav2lip.pth or wav2lip_gan.pth (see weights/README.md).")
    return {key.removeprefix("module."): value for key, value in state.items()}


def load_model(path: str, device: str | torch.device = "cpu") -> Wav2Lip:
    """Build the generator, load an official checkpoint into it and put it in eval mode on `device`."""
    state = extract_state_dict(_read_checkpoint(path), path)
    model = Wav2Lip()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or wrong_shape or len(state) != len(expected):
        kind = "a SyncNet (lip-sync expert) checkpoint" if any(k.startswith("face_encoder.") for k in state) \
            else "not the Wav2Lip generator"
        raise LipSyncError(
            f"'{path}' is {kind}: {len(missing)} of its {len(expected)} weights are missing and "
            f"{len(wrong_shape)} have the wrong shape. Use wav2lip.pth or wav2lip_gan.pth (see weights/README.md).")
    model.load_state_dict(state)
    return model.to(device).eval()


PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_BATCH = {"cuda": 128, "mps": 64, "cpu": 8}  # faces per model call; on a CPU small batches run faster


class Generator:
    """Runs the generator over batches of (96x96 face crop, mel window) on one device.

    fp32 reproduces the official numbers; fp16/bf16 run the convolutions in half
    precision (autocast) for speed, at the cost of small differences in the mouth
    (bench/RESULTS.md gives the measured size). On CUDA the input goes through pinned
    memory with non-blocking copies and the network runs channels-last. A batch that
    runs out of GPU memory is retried in halves, as the official code does for detection.
    """

    def __init__(self, model: Wav2Lip, device: str, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise LipSyncError(f"Unknown precision '{precision}'. Choose one of: {', '.join(PRECISIONS)}.")
        if precision == "fp16" and not str(device).startswith(("cuda", "mps")):
            raise LipSyncError("fp16 runs on a GPU only. Use --precision fp32, or bf16 on a recent CPU.")
        self.model = model
        self.device = str(device)
        self.precision = precision
        self.cuda = self.device.startswith("cuda")
        if self.cuda:
            self.model = model.to(memory_format=torch.channels_last)
        self.max_batch: int | None = None  # lowered after an out-of-memory error

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
            pred = self.model(m, x)
        return (pred.float().permute(0, 2, 3, 1) * 255.0).to(torch.uint8).cpu().numpy()

    def __call__(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """crops (B, 96, 96, 3) uint8 BGR, mels (B, 80, 16) float32 -> (B, 96, 96, 3) uint8 BGR faces."""
        step = min(len(crops), self.max_batch or len(crops))
        outputs, start = [], 0
        while start < len(crops):
            try:
                outputs.append(self._run(crops[start: start + step], mels[start: start + step]))
            except torch.OutOfMemoryError:
                if step == 1:
                    raise LipSyncError("The lip-sync model ran out of GPU memory even one face at a time. Close "
                                       "other programs using the GPU, or use --device cpu.") from None
                step = self.max_batch = max(1, step // 2)
                if self.cuda:
                    torch.cuda.empty_cache()
                print(f"Lip-sync model out of memory; retrying with batch size {step}", file=sys.stderr)
                continue
            start += step
        return np.concatenate(outputs)
