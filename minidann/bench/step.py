"""The interleaved step benchmark: minidann's DANN step (each layer of kernels asked for) and PyTorch's, in one process.

The unit is :func:`minidann.dann.train_step` in ``dann`` mode on the paper's network at one fixed batch. The
implementations take turns in blocks of :data:`BLOCK` steps, so all see the same machine load; each reports the
median of its timed steps, and the ratios come from the same run.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from minidann.backend import synchronize, to_device
from minidann.core import Tensor
from minidann.dispatch import active_kernels, kernels
from minidann.fast.tuning import blas_kernel, tuned

from .machine import cpu_summary

#: steps per interleaved block, and the pause before each block (see :func:`run_block`)
BLOCK, PAUSE_S = 10, 0.3


def synthetic_batch(batch: int, seed: int):
    """A preprocessed-looking batch (N, 3, 28, 28) float32 and host labels for the source half."""
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, 3, 28, 28), dtype=np.float32) - 0.5).astype(np.float32)
    y_src = rng.integers(0, 10, size=batch // 2)
    return x, y_src


def minidann_step(device: str, batch: int, seed: int = 0, threads: int = 1, kernels_name: str = "fast"):
    """Return (step function, model) for one DANN training step of minidann on ``device``.

    ``threads``: 1 or 2 (the two halves at once, fast kernels on the CPU only). ``kernels_name``: the layer of ops
    the step runs on, "fast" or "reference". The switch is process-wide and other implementations' steps run in
    between, so the step sets it around its own call, and checks it (a reference row timed on the fast kernels
    would be a wrong figure, not a slow one).
    """
    from minidann.dann import build_model, build_optimizer, train_step

    model = build_model(np.random.default_rng(seed), device)
    opt = build_optimizer(model)
    x_host, y_src = synthetic_batch(batch, seed)
    x = Tensor(to_device(x_host, device))

    def step():
        with kernels(kernels_name):
            assert active_kernels() == kernels_name, (active_kernels(), kernels_name)
            return train_step(model, opt, x, y_src, "dann", lambd=0.5, lr=0.01, threads=threads)

    step.kernels = kernels_name
    return step, model


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_block(step, n: int, times: list[float]) -> int:
    """Time ``n`` calls of ``step`` (appended to ``times``, ms) after a pause and one untimed call; return page faults.

    Both libraries keep worker threads spinning for a while after each parallel region (OpenBLAS about 0.1 s,
    PyTorch's OpenMP pool too), which slows the other library's next steps if they alternate closely; the pause
    lets those threads fall asleep, and the untimed call refills the caches the other library's data had taken.
    """
    time.sleep(PAUSE_S)
    step()
    return timed_steps(step, n, times)


def timed_steps(step, n: int, times: list[float]) -> int:
    """Run ``step()`` n times, appending each wall time in ms to ``times`` (waiting for a GPU after each);
    return the minor page faults meanwhile."""
    synchronize()
    f0 = _minor_faults()
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return _minor_faults() - f0


def step_benchmark(device: str, batch: int, steps: int, compare_torch: bool, threads=(1,),
                   torch_tf32: bool = False, kernel_layers=("fast",)) -> list[dict]:
    """Time the DANN step of minidann for each layer of kernels and thread count (and torch), interleaved.

    ``kernel_layers``: "fast" (timed once per count in ``threads``) and/or "reference" (one whole-batch step on one
    thread, the way ``--kernels reference`` trains). ``torch_tf32``: on a GPU, leave PyTorch's TF32 convolutions
    on (see :func:`minidann.bench.torch_twin.set_torch_cuda_float32`). Returns the JSON rows.
    """
    with tuned():  # malloc keeps freed memory for the next step, as in fast training (every implementation gets it)
        return _step_benchmark(device, batch, steps, compare_torch, threads, torch_tf32, kernel_layers)


def _step_benchmark(device, batch, steps, compare_torch, threads, torch_tf32, kernel_layers) -> list[dict]:
    import tracemalloc

    from .torch_twin import cupy_float32, torch_step

    impls = {}  # name -> (step, thread count; None for torch)
    model = None
    if "reference" in kernel_layers:
        ref_step, model = minidann_step(device, batch, threads=1, kernels_name="reference")
        impls["reference/1"] = (ref_step, 1)
    if "fast" in kernel_layers:
        for n in threads:
            md_step, model = minidann_step(device, batch, threads=n)
            impls[f"fast/{n}"] = (md_step, n)
    t_step = torch_step(device, batch, model, tf32=torch_tf32) if compare_torch else None
    if t_step:
        impls["torch"] = (t_step, None)
    for _ in range(5):  # warm-up: allocator, BLAS threads, CuPy kernel compilation
        for step, _ in impls.values():
            step()
    synchronize()
    times = {name: [] for name in impls}
    block_ms = {name: [] for name in impls}  # the median of each block: one ratio per block, for the spread
    faults = dict.fromkeys(impls, 0)  # minor page faults: memory the kernel had to map (and zero) anew
    for start in range(0, steps, BLOCK):
        n = min(BLOCK, steps - start)
        for name, (step, _) in impls.items():
            faults[name] += run_block(step, n, times[name])
            block_ms[name].append(statistics.median(times[name][-n:]))
    med = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for name, (step, n) in impls.items():
        if n is None:
            continue
        # Memory of minidann's arrays, traced over a few extra steps (tracing slows Python, so not while timing).
        tracemalloc.start()  # NumPy reports its array allocations to tracemalloc
        for _ in range(3):
            step()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        row = {"impl": "minidann", "kernels": step.kernels, "device": device, "batch": batch, "steps": steps,
               "threads": n, "ms_per_step": round(med[name], 2),
               "page_faults_per_step": round(faults[name] / steps, 1)}
        if device == "cpu":
            row["blas"] = blas_kernel()
            row["cpu"] = cpu_summary()
            row["peak_numpy_mb_during_steps"] = round(traced_peak / 2**20, 1)
        else:
            from minidann.backend import require_gpu

            row["gpu_pool_mb"] = round(require_gpu().get_default_memory_pool().total_bytes() / 2**20, 1)
            row["float32"] = cupy_float32()
        rows.append(row)
    if compare_torch and t_step is None:
        rows.append({"note": "torch is not importable (or has no CUDA): comparison skipped. "
                             "`pip install torch==2.13.0` installs the CPU build."})
    if t_step:
        row = {"impl": "torch", "device": device, "batch": batch, "steps": steps, "ms_per_step": round(med["torch"], 2),
               "page_faults_per_step": round(faults["torch"] / steps, 1)}
        if t_step.float32:
            row["float32"] = t_step.float32
        if device == "gpu":  # what PyTorch's caching allocator held at most (as CuPy's pool: gpu_pool_mb above)
            import torch

            row["gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
            row["gpu_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        rows.append(row)
        for name, (step, n) in impls.items():
            if n is not None:
                rows.append({"ratio": round(med[name] / med["torch"], 3), "kernels": step.kernels, "threads": n,
                             "what": f"minidann ({step.kernels} kernels) / torch ms_per_step, interleaved in blocks "
                                     f"of {BLOCK} steps in one process",
                             **block_ratio_spread(block_ms[name], block_ms["torch"])})
    for n in threads if "reference/1" in impls else ():
        if f"fast/{n}" not in impls:
            continue
        row = {"summary": "ratios of one interleaved run", "threads": n,
               "reference/fast": round(med["reference/1"] / med[f"fast/{n}"], 3)}
        if t_step:
            row["fast/torch"] = round(med[f"fast/{n}"] / med["torch"], 3)
        row["what"] = (f"the reference step (whole batch, one thread) / the fast step (threads={n})"
                       + (", and the fast step / PyTorch's" if t_step else ""))
        rows.append(row)
    return rows


def block_ratio_spread(md_block_ms: list[float], torch_block_ms: list[float]) -> dict:
    """How much the ratio moved within one run: the ratio of each block's medians, summarised.

    Args:
        md_block_ms, torch_block_ms: (blocks,) the median step time of each interleaved block, in run order.
    Returns:
        ``block_ratios``: min, quartiles and max of md / torch block by block; ``blocks_at_or_below_1``: how many
        blocks minidann was at least as fast in, of ``blocks``. A noisy machine moves single blocks a lot; the
        overall ``ratio`` (of the medians of all steps) is the figure to quote, this says how far to trust it.
    """
    ratios = sorted(m / t for m, t in zip(md_block_ms, torch_block_ms, strict=True))
    if len(ratios) >= 2:
        q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    else:
        q1 = q2 = q3 = ratios[0]
    spread = {"min": ratios[0], "q1": q1, "median": q2, "q3": q3, "max": ratios[-1]}
    return {"block_ratios": {k: round(v, 3) for k, v in spread.items()},
            "blocks_at_or_below_1": sum(r <= 1.0 for r in ratios), "blocks": len(ratios)}
