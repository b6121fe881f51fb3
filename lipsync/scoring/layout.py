"""SyncNet's architecture as data: every layer once, read by the PyTorch module, the OpenVINO graph and the checker.

The network is the one of joonson/syncnet_python's `SyncNetModel.S(num_layers_in_fc_layers=1024)`
(MIT), the model behind the Wav2Lip paper's LSE-D and LSE-C: four `nn.Sequential`s, an audio
CNN over a 13x20 MFCC window, a lip CNN over five 224x224 BGR frames, and one small MLP
after each that ends in a 1024-d embedding. A state-dict name is `<section>.<position>.<param>`,
so the position of every layer (ReLUs and pools included) is kept here, and the checkpoint's
names and shapes follow from these tables alone, without torch (`state_dict_shapes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..weights.reader import COUNTER

BN_EPS = 1e-5  # the batch norms' epsilon: torch's default, which the official model keeps
EMBEDDING = 1024  # num_layers_in_fc_layers: the width of both embeddings
LIP_FRAMES = 5  # video frames per lip window (0.2 s at 25 fps)
LIP_SIZE = 224  # px: the side of the square lip crop
MFCC_BANDS = 13  # cepstral coefficients per MFCC frame
MFCC_STEPS = 20  # MFCC frames per audio window (0.2 s at 100 per second)


@dataclass(frozen=True)
class Conv:
    """A Conv2d (2-tuple kernel) or Conv3d (3-tuple kernel) with a bias."""

    cin: int
    cout: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]


@dataclass(frozen=True)
class Norm:
    """A BatchNorm (1d, 2d or 3d: the same five tensors) over `channels`."""

    channels: int


@dataclass(frozen=True)
class Relu:
    """A ReLU: no weights, but it holds a position in the Sequential."""


@dataclass(frozen=True)
class Pool:
    """A MaxPool2d (2-tuple kernel) or MaxPool3d (3-tuple), floor rounding."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]


@dataclass(frozen=True)
class Linear:
    fin: int
    fout: int


Layer = Conv | Norm | Relu | Pool | Linear


def _conv(cin: int, cout: int, kernel: tuple[int, ...], stride: tuple[int, ...] | None = None,
          padding: tuple[int, ...] | None = None) -> Conv:
    return Conv(cin, cout, kernel, stride or (1,) * len(kernel), padding or (0,) * len(kernel))


# netcnnaud: (B, 1, 13, 20) MFCC window -> (B, 512, 1, 1)
AUDIO_CNN: tuple[Layer, ...] = (
    _conv(1, 64, (3, 3), padding=(1, 1)), Norm(64), Relu(), Pool((1, 1), (1, 1), (0, 0)),  # 13x20
    _conv(64, 192, (3, 3), padding=(1, 1)), Norm(192), Relu(), Pool((3, 3), (1, 2), (0, 0)),  # 11x9
    _conv(192, 384, (3, 3), padding=(1, 1)), Norm(384), Relu(),
    _conv(384, 256, (3, 3), padding=(1, 1)), Norm(256), Relu(),
    _conv(256, 256, (3, 3), padding=(1, 1)), Norm(256), Relu(), Pool((3, 3), (2, 2), (0, 0)),  # 5x4
    _conv(256, 512, (5, 4)), Norm(512), Relu(),  # 1x1
)
# netcnnlip: (B, 3, 5, 224, 224) five BGR frames in 0..255 -> (B, 512, 1, 1, 1); only the first layer spans time
LIP_CNN: tuple[Layer, ...] = (
    _conv(3, 96, (5, 7, 7), stride=(1, 2, 2)), Norm(96), Relu(), Pool((1, 3, 3), (1, 2, 2), (0, 0, 0)),  # 109 -> 54
    _conv(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), Norm(256), Relu(),  # 26
    Pool((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # 13
    _conv(256, 256, (1, 3, 3), padding=(0, 1, 1)), Norm(256), Relu(),
    _conv(256, 256, (1, 3, 3), padding=(0, 1, 1)), Norm(256), Relu(),
    _conv(256, 256, (1, 3, 3), padding=(0, 1, 1)), Norm(256), Relu(), Pool((1, 3, 3), (1, 2, 2), (0, 0, 0)),  # 6
    _conv(256, 512, (1, 6, 6)), Norm(512), Relu(),  # 1x1
)
# netfcaud and netfclip: 512 -> 512 -> EMBEDDING, the same shape each
FC: tuple[Layer, ...] = (Linear(512, 512), Norm(512), Relu(), Linear(512, EMBEDDING))

# In the order the official module registers them, which is the order of its state_dict()
SECTIONS: tuple[tuple[str, tuple[Layer, ...]], ...] = (
    ("netcnnaud", AUDIO_CNN), ("netfcaud", FC), ("netfclip", FC), ("netcnnlip", LIP_CNN))

# COUNTER (lipsync.weights.reader): the batch norms' step counters; torch >= 0.4.1 saves them, older files lack them


def layers() -> Iterator[tuple[str, Layer]]:
    """(state-dict prefix, layer) for every layer, weightless ones included, in state_dict order."""
    for section, table in SECTIONS:
        for position, layer in enumerate(table):
            yield f"{section}.{position}", layer


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Every name of the official module's state_dict() with its shape, in its order (counters included)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, layer in layers():
        if isinstance(layer, Conv):
            shapes[f"{prefix}.weight"] = (layer.cout, layer.cin, *layer.kernel)
            shapes[f"{prefix}.bias"] = (layer.cout,)
        elif isinstance(layer, Linear):
            shapes[f"{prefix}.weight"] = (layer.fout, layer.fin)
            shapes[f"{prefix}.bias"] = (layer.fout,)
        elif isinstance(layer, Norm):
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{name}"] = (layer.channels,)
            shapes[f"{prefix}.{COUNTER}"] = ()
    return shapes


def parameter_count() -> int:
    """Floats in the weights (counters excluded): 13.6 M, 54.5 MB in float32, the size of syncnet_v2.model."""
    total = 0
    for name, shape in state_dict_shapes().items():
        if not name.endswith(COUNTER):
            size = 1
            for n in shape:
                size *= n
            total += size
    return total
