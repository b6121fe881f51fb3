"""SyncNet as one OpenVINO graph, built straight from the numpy weights (no torch): the CPU path of the lean install.

Two inputs and two outputs, the official `forward_lip` and `forward_aud` side by side:
lips (B, 3, 5, 224, 224) -> lip (B, 1024) and mfcc (B, 1, 13, 20) -> audio (B, 1024).
Every batch norm is folded into the convolution or linear layer before it (in float64,
then rounded once), as lipsync.generator.graph does. The lip tower's first Conv3d spans
all five frames (kernel depth 5 over a depth of 5), so it is a Conv2d over the 15
channel-frames (channel-major, the order a reshape of (3, 5) gives), and every later
layer has a kernel depth of 1: the whole tower runs as 2D layers, which OpenVINO's CPU
plugin runs faster than their 3D forms, with the same sums.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checkpoint import Weights
from .layout import (
    AUDIO_CNN,
    BN_EPS,
    FC,
    LIP_CNN,
    LIP_FRAMES,
    LIP_SIZE,
    MFCC_BANDS,
    MFCC_STEPS,
    Conv,
    Layer,
    Linear,
    Norm,
    Pool,
    Relu,
)


def folded(weights: Weights, prefix: str, norm_prefix: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The weight and bias of layer `prefix` with the batch norm `norm_prefix` after it folded in (float32)."""
    weight = weights[f"{prefix}.weight"].astype(np.float64)
    bias = weights[f"{prefix}.bias"].astype(np.float64)
    if norm_prefix is not None:
        bn = {n: weights[f"{norm_prefix}.{n}"].astype(np.float64) for n in ("weight", "bias", "running_mean",
                                                                           "running_var")}
        scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPS)
        weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        bias = (bias - bn["running_mean"]) * scale + bn["bias"]
    return weight.astype(np.float32), bias.astype(np.float32)


def _tower(x: Any, weights: Weights, section: str, table: tuple[Layer, ...]) -> Any:
    """The layers of one Sequential on `x` (2D layers: a 3-tuple kernel's depth, always 1 here, is dropped)."""
    import openvino.opset13 as ops

    for position, layer in enumerate(table):
        prefix = f"{section}.{position}"
        if isinstance(layer, (Conv, Linear)):
            following = table[position + 1] if position + 1 < len(table) else None
            w, b = folded(weights, prefix, f"{section}.{position + 1}" if isinstance(following, Norm) else None)
            if isinstance(layer, Linear):
                x = ops.add(ops.matmul(x, ops.constant(w), False, True), ops.constant(b.reshape(1, -1)))
                continue
            if w.ndim == 5:  # (out, in, depth, kh, kw): depth 5 spans the frames (see the docstring), or 1
                w = w.reshape(w.shape[0], -1, *w.shape[3:])
            stride, pad = list(layer.stride[-2:]), list(layer.padding[-2:])
            x = ops.convolution(x, ops.constant(w), stride, pad, pad, [1, 1])
            x = ops.add(x, ops.constant(b.reshape(1, -1, 1, 1)))
        elif isinstance(layer, Relu):
            x = ops.relu(x)
        elif isinstance(layer, Pool):
            pad = list(layer.padding[-2:])
            x = ops.max_pool(x, list(layer.stride[-2:]), [1, 1], pad, pad, list(layer.kernel[-2:])).output(0)
        # a Norm was folded into the layer before it
    return x


def build_graph(weights: Weights) -> Any:
    """An openvino.Model computing both embeddings with these weights (batch left dynamic)."""
    import openvino as ov
    import openvino.opset13 as ops

    lips = ops.parameter([-1, 3, LIP_FRAMES, LIP_SIZE, LIP_SIZE], np.float32, name="lips")
    mfcc = ops.parameter([-1, 1, MFCC_BANDS, MFCC_STEPS], np.float32, name="mfcc")
    frames = ops.reshape(lips, ops.constant(np.array([0, 3 * LIP_FRAMES, LIP_SIZE, LIP_SIZE], np.int64)), True)
    flat = ops.constant(np.array([0, -1], np.int64))
    lip = _tower(ops.reshape(_tower(frames, weights, "netcnnlip", LIP_CNN), flat, True), weights, "netfclip", FC)
    aud = _tower(ops.reshape(_tower(mfcc, weights, "netcnnaud", AUDIO_CNN), flat, True), weights, "netfcaud", FC)
    lip.output(0).get_tensor().set_names({"lip"})
    aud.output(0).get_tensor().set_names({"audio"})
    return ov.Model([lip, aud], [lips, mfcc], "syncnet")
