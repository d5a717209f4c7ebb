"""Benchmarks: time ops and the whole DANN training step (never a test: the machine is shared and noisy).

    python -m minidann.bench --device cpu|gpu [--ops] [--batch-size 64] [--steps N] [--compare-torch]

Prints one JSON line per measurement. Times are medians of several repeats after a warm-up; compare ratios
measured side by side in one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

import minidann.functions as F
from minidann.backend import GPUUnavailableError, resolve_device, synchronize, to_device
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


def op_benchmarks(device: str, batch: int, repeats: int) -> list[dict]:
    """Forward + backward of conv2d, max_pool2d and linear at the DANN shapes."""
    rng = np.random.default_rng(0)

    def tensor(shape, grad=True):
        return Tensor(to_device(rng.standard_normal(shape).astype(np.float32), device), requires_grad=grad)

    cases = {
        "conv2d 3->32 28x28 5x5 pad 2 (no input grad)": (
            lambda x, W, b: F.conv2d(x, W, b, pad=2),
            [tensor((batch, 3, 28, 28), grad=False), tensor((32, 3, 5, 5)), tensor((32,))]),
        "conv2d 32->48 14x14 5x5 pad 2": (
            lambda x, W, b: F.conv2d(x, W, b, pad=2),
            [tensor((batch, 32, 14, 14)), tensor((48, 32, 5, 5)), tensor((48,))]),
        "max_pool2d 2x2 on (N,32,28,28)": (F.max_pool2d, [tensor((batch, 32, 28, 28))]),
        "max_pool2d 2x2 on (N,48,14,14)": (F.max_pool2d, [tensor((batch, 48, 14, 14))]),
        "linear 2352->100": (F.linear, [tensor((batch, 2352)), tensor((2352, 100)), tensor((100,))]),
    }
    rows = []
    for name, (fn, inputs) in cases.items():
        y = fn(*inputs)
        gy = to_device(rng.standard_normal(y.shape).astype(np.float32), device)

        def call(fn=fn, inputs=inputs, gy=gy):
            for t in inputs:
                t.grad = None
            fn(*inputs).backward(gy)

        rows.append({"op": name, "device": device, "batch": batch, "ms_per_call": round(median_ms(call, repeats), 3)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidann.bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement (median reported)")
    args = parser.parse_args(argv)
    try:
        device, _ = resolve_device(args.device)
    except GPUUnavailableError as e:
        print(f"error: {e}")
        return 2
    for row in op_benchmarks(device, args.batch_size, args.repeats):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
