"""The Wav2Lip generator and checkpoint loading.

The layer layout reproduces the official `models/wav2lip.py` so that its checkpoints
(`wav2lip.pth`, `wav2lip_gan.pth`) load with no key renamed: every parameter name and
shape matches `shared/wav2lip_state_dict.json`. Checkpoints are read with
`torch.load(weights_only=True)`: a file that tries to run code is refused, not run.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import torch
from torch import nn

from .errors import LipSyncError
from .geometry import IMG_SIZE  # noqa: F401  (re-exported: callers import it from here too)


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


STATE_FORMAT = 1  # the layout of the cached state dict below


def _cached_state_path(path: str) -> str | None:
    """Where the zip-format copy of this checkpoint's weights is cached (keyed by its SHA256), or None."""
    try:
        from .files import cache_root, checkpoint_sha256

        root = cache_root()
        return str(root / f"{checkpoint_sha256(path, root)}-state-f{STATE_FORMAT}.pt")
    except OSError:
        return None


def _load_cached(cached: str | None, path: str) -> Wav2Lip | None:
    """The generator from the cached copy, memory-mapped and assigned without a copy; None if absent or unusable."""
    if cached is None or not os.path.isfile(cached):
        return None
    try:
        state = torch.load(cached, map_location="cpu", weights_only=True, mmap=True)
        with torch.device("meta"):
            model = Wav2Lip()
        model.load_state_dict(state, assign=True)
        return model
    except Exception:  # noqa: BLE001  (a damaged cache entry: read the checkpoint itself and write it again)
        try:
            os.remove(cached)
        except OSError:
            pass
        return None


def _store_cached(cached: str | None, state: dict[str, torch.Tensor]) -> None:
    if cached is None:
        return
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = f"{cached}.tmp-{os.getpid()}"
        torch.save(state, tmp)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the slower load next time


def load_model(path: str, device: str | torch.device = "cpu", cache: bool = True) -> Wav2Lip:
    """Build the generator, load an official checkpoint into it and put it in eval mode on `device`.

    With `cache`, the weights are also kept as a zip-format state dict in the model cache
    (lipsync.files.cache_root, keyed by the checkpoint's SHA256), which later starts
    memory-map instead of unpickling the official file (0.15 s instead of about 1 s).
    """
    if not os.path.isfile(path):
        _read_checkpoint(path)  # the one-sentence error
    cached = _cached_state_path(path) if cache else None
    model = _load_cached(cached, path)
    if model is not None:
        model.checkpoint_path = path
        return model.to(device).eval()
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
    _store_cached(cached, {key: value.contiguous() for key, value in model.state_dict().items()})
    model.checkpoint_path = path  # the key of its converted copies (lipsync.backends)
    return model.to(device).eval()
