"""The host's fp32 peak, measured, and the generator's work per face: what "fraction of peak" is quoted against.

The peak is the best rate of a large fp32 matrix multiply (4096 x 4096, all threads)
among the libraries installed: torch (MKL or OpenBLAS), numpy (OpenBLAS) and OpenVINO
(oneDNN). One library alone can mislead: on an AMD EPYC (Zen 5, AVX-512) torch's sgemm
reached 135-165 GFLOP/s where OpenVINO's reached 330-340 on the same two cores, and the
Wav2Lip generator itself ran at about 320 on OpenVINO, "190% of the peak" against torch's.
"""

from __future__ import annotations

import time
from typing import Callable

N = 4096


def _best_rate(run: Callable[[], object], reps: int) -> float:
    run()  # warm-up: thread pools, kernel choice
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * N ** 3 / best / 1e9


def _torch_mm() -> Callable[[], object]:
    import torch

    a, b = torch.randn(N, N), torch.randn(N, N)
    return lambda: torch.mm(a, b)


def _numpy_matmul() -> Callable[[], object]:
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((N, N), dtype=np.float32), rng.random((N, N), dtype=np.float32)
    return lambda: a @ b


def _openvino_matmul(threads: int) -> Callable[[], object]:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    left, right = ops.parameter([N, N], np.float32), ops.parameter([N, N], np.float32)
    model = ov.Model([ops.matmul(left, right, False, False)], [left, right])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1,
                                                      "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    inputs = [rng.random((N, N), dtype=np.float32), rng.random((N, N), dtype=np.float32)]
    return lambda: request.infer(inputs)


def fp32_peaks(threads: int, reps: int = 3) -> dict[str, float]:
    """GFLOP/s of each installed library's fp32 matrix multiply on this host now (best of `reps`)."""
    makers = {"torch": _torch_mm, "numpy": _numpy_matmul, "openvino": lambda: _openvino_matmul(threads)}
    rates = {}
    for name, make in makers.items():
        try:
            rates[name] = _best_rate(make(), reps)
        except ImportError:
            continue
    return rates


def fp32_peak(threads: int, reps: int = 3) -> tuple[float, str]:
    """The best fp32 matrix-multiply rate on this host now, and the library that reached it."""
    rates = fp32_peaks(threads, reps)
    best = max(rates, key=rates.get)
    return rates[best], best


def gflop_per_face(model) -> float:
    """Floating-point work of one forward pass of the generator on one face, counted by torch (7.93 for Wav2Lip)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mels, faces = torch.randn(1, 1, 80, 16), torch.rand(1, 6, 96, 96)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(mels, faces)
    return counter.get_total_flops() / 1e9
