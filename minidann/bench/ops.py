"""Single ops at the DANN shapes: forward + backward of conv2d, max_pool2d and linear (``--ops``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

import minidann.functions as F
from minidann import dispatch
from minidann.backend import synchronize, to_device
from minidann.core import Tensor


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds, waiting for the GPU after each call."""
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def op_benchmarks(device: str, batch: int, repeats: int, kernel_layers=("fast",)) -> list[dict]:
    """Forward + backward of conv2d, max_pool2d and linear at the DANN shapes, on each layer of kernels asked for.

    conv2d and max_pool2d go through :mod:`minidann.dispatch`, as the layers call them, so ``kernel_layers``
    ("fast", "reference") picks the code that runs; linear has one implementation.
    """
    rng = np.random.default_rng(0)

    def tensor(shape, grad=True):
        return Tensor(to_device(rng.standard_normal(shape).astype(np.float32), device), requires_grad=grad)

    cases = {
        "conv2d 3->32 28x28 5x5 pad 2 (no input grad)": (
            lambda x, W, b: dispatch.conv2d(x, W, b, pad=2),
            [tensor((batch, 3, 28, 28), grad=False), tensor((32, 3, 5, 5)), tensor((32,))]),
        "conv2d 32->48 14x14 5x5 pad 2": (
            lambda x, W, b: dispatch.conv2d(x, W, b, pad=2),
            [tensor((batch, 32, 14, 14)), tensor((48, 32, 5, 5)), tensor((48,))]),
        "max_pool2d 2x2 on (N,32,28,28)": (dispatch.max_pool2d, [tensor((batch, 32, 28, 28))]),
        "max_pool2d 2x2 on (N,48,14,14)": (dispatch.max_pool2d, [tensor((batch, 48, 14, 14))]),
        "linear 2352->100": (F.linear, [tensor((batch, 2352)), tensor((2352, 100)), tensor((100,))]),
    }
    rows = []
    for name, (fn, inputs) in cases.items():
        gy = to_device(rng.standard_normal(fn(*inputs).shape).astype(np.float32), device)
        for layer in kernel_layers if fn is not F.linear else ("fast",):

            def call(fn=fn, inputs=inputs, gy=gy, layer=layer):
                for t in inputs:
                    t.grad = None
                with dispatch.kernels(layer):
                    fn(*inputs).backward(gy)

            rows.append({"op": name, "kernels": layer if fn is not F.linear else "one for both", "device": device,
                         "batch": batch, "ms_per_call": round(median_ms(call, repeats), 3)})
    return rows


