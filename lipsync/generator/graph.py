"""The Wav2Lip generator as an OpenVINO graph, built straight from the checkpoint's numpy weights (no torch).

Each block of the layout (lipsync.generator.layout) becomes one convolution (or
transposed convolution, with its output padding) whose weights and bias already hold
the batch norm: w * gamma / sqrt(var + eps) and (b - mean) * gamma / sqrt(var + eps) + beta.
Then the residual add, the ReLU, the decoder's concatenated skips and the final 1x1
convolution with its sigmoid, as in the official forward(). The inputs are those of
`Wav2Lip.forward`: mels (B, 1, 80, 16) and faces (B, 6, 96, 96), batch left dynamic (the
backend compiles static shapes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checkpoint import Weights
from .layout import AUDIO_ENCODER, BN_EPS, FACE_DECODER, FACE_ENCODER, Conv, blocks


def folded(weights: Weights, prefix: str, block: Conv) -> tuple[np.ndarray, np.ndarray]:
    """The convolution's weight and bias with the batch norm after it folded in (float32).

    The per-channel scale and the bias are computed in float64; the weights are multiplied
    in float32 by the rounded scale (one rounding each: five times quicker than float64 over
    36 M weights, and the output still within 1e-7 of eager PyTorch)."""
    bn = {name: weights[f"{prefix}.conv_block.1.{name}"].astype(np.float64)
          for name in ("weight", "bias", "running_mean", "running_var")}
    scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
    bias = (weights[f"{prefix}.conv_block.0.bias"].astype(np.float64) - bn["running_mean"]) * scale + bn["bias"]
    # output channels are axis 0 of a Conv2d weight (out, in, kh, kw), axis 1 of a ConvTranspose2d's (in, out, kh, kw)
    shape = (1, -1, 1, 1) if block.transposed else (-1, 1, 1, 1)
    weight = weights[f"{prefix}.conv_block.0.weight"] * scale.astype(np.float32).reshape(shape)
    return weight.astype(np.float32, copy=False), bias.astype(np.float32)


def build_graph(weights: Weights) -> Any:
    """An openvino.Model computing the generator with these weights (names and shapes as read_weights checks)."""
    import openvino as ov
    import openvino.opset13 as ops

    specs = dict(blocks())

    def block(x: Any, prefix: str) -> Any:
        spec = specs[prefix]
        w, b = folded(weights, prefix, spec)
        stride, pad = list(spec.stride), [spec.padding] * 2
        if spec.transposed:
            y = ops.convolution_backprop_data(x, ops.constant(w), stride, pads_begin=pad, pads_end=pad,
                                              dilations=[1, 1], output_padding=[spec.output_padding] * 2)
        else:
            y = ops.convolution(x, ops.constant(w), stride, pad, pad, [1, 1])
        y = ops.add(y, ops.constant(b.reshape(1, -1, 1, 1)))
        if spec.residual:
            y = ops.add(y, x)
        return ops.relu(y)

    def sequence(x: Any, prefix: str, count: int) -> Any:
        for j in range(count):
            x = block(x, f"{prefix}.{j}")
        return x

    mels = ops.parameter([-1, 1, 80, 16], np.float32, name="mels")
    faces = ops.parameter([-1, 6, 96, 96], np.float32, name="faces")
    x = sequence(mels, "audio_encoder", len(AUDIO_ENCODER))
    skips, feat = [], faces
    for i, group in enumerate(FACE_ENCODER):
        feat = sequence(feat, f"face_encoder_blocks.{i}", len(group))
        skips.append(feat)
    for i, group in enumerate(FACE_DECODER):
        x = ops.concat([sequence(x, f"face_decoder_blocks.{i}", len(group)), skips.pop()], 1)
    x = block(x, "output_block.0")
    x = ops.convolution(x, ops.constant(weights["output_block.1.weight"].astype(np.float32)), [1, 1], [0, 0], [0, 0],
                        [1, 1])
    x = ops.add(x, ops.constant(weights["output_block.1.bias"].astype(np.float32).reshape(1, -1, 1, 1)))
    out = ops.sigmoid(x)
    out.output(0).get_tensor().set_names({"faces_out"})
    return ov.Model([out], [mels, faces], "wav2lip")
