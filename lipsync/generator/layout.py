"""The Wav2Lip generator's architecture as data: every layer once, read by both builders.

The PyTorch module (lipsync.generator.network) and the OpenVINO graph built straight
from a checkpoint's weights (lipsync.generator.graph) are both made from the tables
below, so the two cannot drift apart; the checkpoint reader (lipsync.generator.checkpoint)
checks a file's names and shapes against them without importing torch. The tables
reproduce the official `models/wav2lip.py`; the names and shapes they give are those of
`shared/wav2lip_state_dict.json`, in its order (a test compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which the official model keeps


@dataclass(frozen=True)
class Conv:
    """One Conv2d (or ConvTranspose2d) + BatchNorm2d + ReLU block, optionally residual (out + x before the ReLU).

    In the checkpoint it is `<prefix>.conv_block.0.*` (the convolution) and
    `<prefix>.conv_block.1.*` (the batch norm)."""

    cin: int
    cout: int
    kernel: int
    stride: tuple[int, int]
    padding: int
    residual: bool = False
    transposed: bool = False
    output_padding: int = 0


def conv(cin: int, cout: int, kernel: int, stride: int | tuple[int, int], padding: int) -> Conv:
    return Conv(cin, cout, kernel, stride if isinstance(stride, tuple) else (stride, stride), padding)


def res(channels: int) -> Conv:
    """The residual 3x3 block that keeps size and channels."""
    return Conv(channels, channels, 3, (1, 1), 1, residual=True)


def up(cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0) -> Conv:
    return Conv(cin, cout, kernel, (stride, stride), padding, transposed=True, output_padding=output_padding)


# face_encoder_blocks.<i>.<j>: each block's output is also a skip connection to the decoder
FACE_ENCODER: tuple[tuple[Conv, ...], ...] = (
    (conv(6, 16, 7, 1, 3),),  # 96x96
    (conv(16, 32, 3, 2, 1), res(32), res(32)),  # 48x48
    (conv(32, 64, 3, 2, 1), res(64), res(64), res(64)),  # 24x24
    (conv(64, 128, 3, 2, 1), res(128), res(128)),  # 12x12
    (conv(128, 256, 3, 2, 1), res(256), res(256)),  # 6x6
    (conv(256, 512, 3, 2, 1), res(512)),  # 3x3
    (conv(512, 512, 3, 1, 0), conv(512, 512, 1, 1, 0)),  # 1x1
)
# audio_encoder.<j>: the 1x80x16 mel window down to 512x1x1
AUDIO_ENCODER: tuple[Conv, ...] = (
    conv(1, 32, 3, 1, 1), res(32), res(32),
    conv(32, 64, 3, (3, 1), 1), res(64), res(64),
    conv(64, 128, 3, 3, 1), res(128), res(128),
    conv(128, 256, 3, (3, 2), 1), res(256),
    conv(256, 512, 3, 1, 0), conv(512, 512, 1, 1, 0),
)
# face_decoder_blocks.<i>.<j>: each block's output is concatenated with the encoder's skip of the same size
FACE_DECODER: tuple[tuple[Conv, ...], ...] = (
    (conv(512, 512, 1, 1, 0),),  # 1x1
    (up(1024, 512, 3, 1, 0), res(512)),  # 3x3
    (up(1024, 512, 3, 2, 1, 1), res(512), res(512)),  # 6x6
    (up(768, 384, 3, 2, 1, 1), res(384), res(384)),  # 12x12
    (up(512, 256, 3, 2, 1, 1), res(256), res(256)),  # 24x24
    (up(320, 128, 3, 2, 1, 1), res(128), res(128)),  # 48x48
    (up(160, 64, 3, 2, 1, 1), res(64), res(64)),  # 96x96
)
# output_block.0 is a block as above; output_block.1 a plain 1x1 convolution with bias, then a sigmoid
OUTPUT_BLOCK = conv(80, 32, 3, 1, 1)
OUTPUT_CONV = (32, 3)  # (cin, cout) of output_block.1


def blocks() -> Iterator[tuple[str, Conv]]:
    """(checkpoint prefix, block) for every Conv block, in state_dict order."""
    for i, group in enumerate(FACE_ENCODER):
        for j, block in enumerate(group):
            yield f"face_encoder_blocks.{i}.{j}", block
    for j, block in enumerate(AUDIO_ENCODER):
        yield f"audio_encoder.{j}", block
    for i, group in enumerate(FACE_DECODER):
        for j, block in enumerate(group):
            yield f"face_decoder_blocks.{i}.{j}", block
    yield "output_block.0", OUTPUT_BLOCK


def state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Every name of the generator's state dict with its shape, in the order torch's state_dict() gives them."""
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, block in blocks():
        k = block.kernel
        weight = (block.cin, block.cout, k, k) if block.transposed else (block.cout, block.cin, k, k)
        shapes[f"{prefix}.conv_block.0.weight"] = weight
        shapes[f"{prefix}.conv_block.0.bias"] = (block.cout,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.conv_block.1.{name}"] = (block.cout,)
        shapes[f"{prefix}.conv_block.1.num_batches_tracked"] = ()
    cin, cout = OUTPUT_CONV
    shapes["output_block.1.weight"] = (cout, cin, 1, 1)
    shapes["output_block.1.bias"] = (cout,)
    return shapes
