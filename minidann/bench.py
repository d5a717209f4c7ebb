"""Benchmarks: time ops and the whole DANN training step (never a test: the machine is shared and noisy).

    python -m minidann.bench --device cpu|gpu [--batch-size 64] [--steps 30] [--compare-torch] [--ops]
                             [--threads auto|1|2|1,2] [--profile] [--handoff] [--no-memory]
    python -m minidann.bench --example-memory [--steps N]       (N steps per mode; docs/performance.md uses 300)

The step is the example's: :func:`minidann.dann.train_step` in ``dann`` mode (half source, half target;
forward, backward through the GRL, SGD with momentum) on the paper's network. Prints JSON lines: one with
``"impl": "minidann"`` and ``ms_per_step`` (median over ``--steps`` timed steps after a warm-up) and memory;
with ``--compare-torch`` and torch importable, the same step in PyTorch timed side by side in the same process
(interleaved in blocks of 10 steps, so both see the same machine load), an ``"impl": "torch"`` line and a last
line with ``"ratio"`` (minidann / torch; ``block_ratios``: its spread block by block). ``--threads 1,2`` times
minidann's one-thread and data-parallel steps (:mod:`minidann.parallel`) in the same interleaving, with a row
and a ratio each. Peak memory of each implementation is measured in a fresh subprocess (``peak_rss_mb``: the
whole process, libraries included).
``--profile`` adds the time per op and input shape of minidann's one-thread step, and with ``--compare-torch``
PyTorch's per aten op beside it. Compare ratios from one run, not absolute times. ``--example-memory`` times
nothing: it measures the peak resident memory of the example's whole CPU run (``--steps`` per mode) against
the least a PyTorch version of that run must hold (:func:`example_memory`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import minidann.functions as F
from minidann.backend import GPUUnavailableError, resolve_device, synchronize, to_device
from minidann.core import Tensor
from minidann.dann import halves_evenly
from minidann.fast.parallel import auto_threads
from minidann.fast.tuning import blas_kernel, tuned


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


def _synthetic_batch(batch: int, seed: int):
    """A preprocessed-looking batch (N, 3, 28, 28) float32 and host labels for the source half."""
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, 3, 28, 28), dtype=np.float32) - 0.5).astype(np.float32)
    y_src = rng.integers(0, 10, size=batch // 2)
    return x, y_src


def minidann_step(device: str, batch: int, seed: int = 0, threads: int = 1):
    """Return (step function, model) for one DANN training step of minidann on ``device`` (``threads``: 1 or 2)."""
    from .dann import build_model, build_optimizer, train_step

    model = build_model(np.random.default_rng(seed), device)
    opt = build_optimizer(model)
    x_host, y_src = _synthetic_batch(batch, seed)
    x = Tensor(to_device(x_host, device))

    def step():
        return train_step(model, opt, x, y_src, "dann", lambd=0.5, lr=0.01, threads=threads)

    return step, model


def _torch_network(model, dev: str):
    """PyTorch's version of the paper's network with ``model``'s weights: (features, label head, domain head, GRL).

    ``dev`` is "cpu" or "cuda"; the GRL is a torch.autograd.Function taking (x, lambd).
    """
    import torch

    from .backend import to_numpy

    class GradReverse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, lambd):
            ctx.lambd = lambd
            return x.view_as(x)

        @staticmethod
        def backward(ctx, gy):
            return -ctx.lambd * gy, None

    nn = torch.nn
    feat = nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 48, 5, padding=2),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    label = nn.Sequential(nn.Linear(2352, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    domain = nn.Sequential(nn.Linear(2352, 100), nn.ReLU(), nn.Linear(100, 2))
    torch_params = [p for m in (feat, label, domain) for p in m.parameters()]
    with torch.no_grad():  # same starting weights; minidann's Linear W is (in, out), torch's (out, in)
        for tp, mp in zip(torch_params, model.parameters(), strict=True):
            w = to_numpy(mp.data)
            tp.copy_(torch.from_numpy(w.T.copy() if w.ndim == 2 else w))
    for m in (feat, label, domain):
        m.to(dev)
    return feat, label, domain, GradReverse.apply


def set_torch_cuda_float32(torch, tf32: bool) -> str:
    """Choose the arithmetic of PyTorch's float32 CUDA convolutions and matmuls; return it in words.

    PyTorch's default lets cuDNN run float32 convolutions in TF32 (products of inputs rounded to 10 mantissa
    bits) on Ampere and later GPUs, while CuPy's matmul, and so every minidann product, computes in IEEE float32
    unless ``CUPY_TF32=1`` is set. ``tf32=False`` makes PyTorch compute in IEEE float32 too, the same arithmetic
    as minidann's; ``tf32=True`` leaves PyTorch's defaults. The setting is process-wide, like PyTorch's flags.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    new_api = conv is not None and hasattr(conv, "fp32_precision")  # PyTorch 2.9 and later
    if tf32:
        # (with the new API only its flags are read: reading a legacy one after setting a new one raises)
        conv_mode = conv.fp32_precision if new_api else ("tf32" if torch.backends.cudnn.allow_tf32 else "ieee")
        return f"left as PyTorch has it (convolutions: {conv_mode})"
    if new_api:
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return "ieee"


def cupy_float32() -> str:
    """The arithmetic of minidann's float32 products on a GPU: CuPy's matmul, IEEE unless CUPY_TF32=1."""
    return "tf32 (CUPY_TF32=1)" if os.environ.get("CUPY_TF32", "0") == "1" else "ieee"


def torch_step(device: str, batch: int, model, seed: int = 0, tf32: bool = False):
    """The same step in PyTorch, starting from minidann ``model``'s weights; None if torch is missing.

    On a GPU, PyTorch computes in IEEE float32 like minidann unless ``tf32`` (see :func:`set_torch_cuda_float32`).
    """
    try:
        import torch
    except ImportError:
        return None

    dev = "cuda" if device == "gpu" else "cpu"
    if dev == "cuda" and not torch.cuda.is_available():
        return None
    float32 = set_torch_cuda_float32(torch, tf32) if dev == "cuda" else None
    feat, label, domain, grad_reverse = _torch_network(model, dev)
    opt = torch.optim.SGD([p for m in (feat, label, domain) for p in m.parameters()], lr=0.01, momentum=0.9)
    x_host, y_src = _synthetic_batch(batch, seed)
    x = torch.from_numpy(x_host).to(dev)
    y = torch.from_numpy(y_src).to(dev)
    d = torch.cat([torch.zeros(batch // 2), torch.ones(batch - batch // 2)]).long().to(dev)
    ce = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad()
        f = feat(x)
        loss = ce(label(f[: batch // 2]), y) + ce(domain(grad_reverse(f, 0.5)), d)
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    step.float32 = float32  # what the benchmark reports of PyTorch's GPU arithmetic
    return step


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def step_benchmark(device: str, batch: int, steps: int, compare_torch: bool, threads=(1,),
                   torch_tf32: bool = False) -> list[dict]:
    """Time the DANN step of minidann for each thread count (and torch), interleaved; return the JSON rows.

    ``torch_tf32``: on a GPU, leave PyTorch's TF32 convolutions on (see :func:`set_torch_cuda_float32`).
    """
    with tuned():  # malloc keeps freed memory for the next step, as in training (both libraries get it)
        return _step_benchmark(device, batch, steps, compare_torch, threads, torch_tf32)


def _step_benchmark(device, batch, steps, compare_torch, threads, torch_tf32) -> list[dict]:
    import tracemalloc

    impls = {}  # name -> (step, thread count or None for torch)
    for n in threads:
        md_step, model = minidann_step(device, batch, threads=n)
        impls[f"minidann/{n}"] = (md_step, n)
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
    # Interleaved in blocks of BLOCK steps. Both libraries keep worker threads spinning for a while after each
    # parallel region (OpenBLAS ~0.1 s, PyTorch's OpenMP pool too), which slows the other library's next steps
    # if they alternate closely. So: a pause after every block lets those threads fall asleep, and each block
    # starts with one untimed step (caches full of the other library's data). All then see the same machine
    # load, block by block, without cross-talk.
    BLOCK, PAUSE_S = 10, 0.3

    def run_block(step, n, times):
        time.sleep(PAUSE_S)
        step()
        synchronize()
        f0 = _minor_faults()
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        return _minor_faults() - f0

    for start in range(0, steps, BLOCK):
        n = min(BLOCK, steps - start)
        for name, (step, _) in impls.items():
            faults[name] += run_block(step, n, times[name])
            block_ms[name].append(statistics.median(times[name][-n:]))
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
        row = {"impl": "minidann", "device": device, "batch": batch, "steps": steps, "threads": n,
               "ms_per_step": round(statistics.median(times[name]), 2),
               "page_faults_per_step": round(faults[name] / steps, 1)}
        if device == "cpu":
            row["blas"] = blas_kernel()
            row["cpu"] = cpu_summary()
            row["peak_numpy_mb_during_steps"] = round(traced_peak / 2**20, 1)
        else:
            from .backend import require_gpu

            row["gpu_pool_mb"] = round(require_gpu().get_default_memory_pool().total_bytes() / 2**20, 1)
            row["float32"] = cupy_float32()
        rows.append(row)
    if compare_torch and t_step is None:
        print(json.dumps({"note": "torch is not importable (or has no CUDA): comparison skipped. "
                                  "`pip install torch==2.13.0` installs the CPU build."}))
    if t_step:
        row = {"impl": "torch", "device": device, "batch": batch, "steps": steps,
               "ms_per_step": round(statistics.median(times["torch"]), 2),
               "page_faults_per_step": round(faults["torch"] / steps, 1)}
        if t_step.float32:
            row["float32"] = t_step.float32
        rows.append(row)
        for n in threads:
            ratio = statistics.median(times[f"minidann/{n}"]) / statistics.median(times["torch"])
            rows.append({"ratio": round(ratio, 3), "threads": n,
                         "what": "minidann / torch ms_per_step, interleaved in blocks of 10 steps in one process",
                         **block_ratio_spread(block_ms[f"minidann/{n}"], block_ms["torch"])})
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


def cpu_summary(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor a CPU figure was measured on, e.g. 'AMD EPYC, 2 cores, AVX2'.

    Ratios to PyTorch depend on it: both libraries pick their matrix-product kernels by the widest vector
    instructions the processor has (AVX-512, AVX2, ...), so a figure means little without it.
    """
    import os
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open(cpuinfo) as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:  # not Linux: the model from platform, no instruction set
        pass
    simd = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                                         ("asimd", "NEON"), ("sse2", "SSE2")) if flag in flags), None)
    return ", ".join(part for part in (model, f"{os.cpu_count()} cores", simd) if part)


def core_handoff_probe(repeats: int = 16) -> dict:
    """What it costs this thread to overwrite memory that the BLAS threads have just read (CPU only).

    im2col hands every chunk of columns from the thread that unfolds it to the BLAS threads that multiply it, and
    the buffer back again, about a hundred times per step. On some machines (virtual ones whose cores sit on
    different L3 caches, at least some of the time) that handoff is several times dearer than writing memory no
    other core holds, and minidann's step slows by about 1.6x while PyTorch's does not. The probe times the
    same copy into a buffer that a matrix product has just read (``handoff_ms``) and into one that only this
    thread touches (``local_ms``), alternating; a ``ratio`` near 1 means a quiet machine, 2-3 a slow spell.
    """
    rng = np.random.default_rng(0)
    src = rng.standard_normal((3136, 800), dtype=np.float32)  # 10 MB: the columns of 16 images of DANN's conv2
    W = rng.standard_normal((800, 48), dtype=np.float32)
    handed, local = np.empty_like(src), np.empty_like(src)
    handed[...] = src
    times = {"handoff": [], "local": []}
    for _ in range(repeats + 2):
        for name, buf, product_reads in (("handoff", handed, handed), ("local", local, src)):
            product_reads @ W  # the BLAS threads read `handed` in one case, an unrelated array in the other
            t0 = time.perf_counter()
            buf[...] = src
            times[name].append((time.perf_counter() - t0) * 1e3)
    handoff, local_ms = (statistics.median(times[k][2:]) for k in ("handoff", "local"))
    return {"probe": "core_handoff", "handoff_ms": round(handoff, 3), "local_ms": round(local_ms, 3),
            "ratio": round(handoff / local_ms, 2),
            "what": "copy 10 MB into a buffer the BLAS threads just read / into one only this thread touches"}


def _shape(shape) -> str:
    """'32x3x28x28' for the shape (32, 3, 28, 28); '' for () or None."""
    return "x".join(map(str, shape or ()))


def profile_step(device: str, batch: int, steps: int, compare_torch: bool = False,
                 torch_tf32: bool = False) -> list[dict]:
    """Where the time of a DANN step goes: time spent in each Function's forward and backward, per input shape.

    Every ``forward``/``backward`` of every Function subclass is wrapped with a timer (on a GPU each call then
    waits for its kernels, so the profile shows kernel time per op but the step gets slower than unprofiled).
    Rows are per op *and* the shape of its first input (``"input"``), so the two convolutions get a row each.
    The rest of the step (the optimizer, the graph walk, Python) is reported as ``other``.

    With ``compare_torch`` (and torch importable) PyTorch's same step is profiled too, by ``torch.profiler``,
    in blocks of 10 steps alternating with minidann's, and its rows (``"impl": "torch"``, one per aten op and input
    shape, self time) follow: the same layers, op by op, in the same machine state.
    """
    from .core import Function

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    totals: dict[tuple[str, str], float] = {}
    originals = []
    recording = [False]  # off during each block's untimed first step

    def timed(cls, name, fn):
        op = f"{cls.__name__}.{name}"

        def wrapper(self, *args):
            if not recording[0]:
                return fn(self, *args)
            if name == "forward":
                self._profile_input = _shape(getattr(args[0], "shape", None)) if args else ""  # and backward's
            t0 = time.perf_counter()
            out = fn(self, *args)
            synchronize()
            key = (op, getattr(self, "_profile_input", ""))
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0
            return out

        return wrapper

    md_step, model = minidann_step(device, batch)
    t_step = torch_step(device, batch, model, tf32=torch_tf32) if compare_torch else None
    for _ in range(3):
        md_step()
        if t_step:
            t_step()
    torch_totals: dict[tuple[str, str], float] = {}
    torch_total = 0.0
    for cls in set(subclasses(Function)):
        for name in ("forward", "backward"):
            if name in vars(cls):
                originals.append((cls, name, vars(cls)[name]))
                setattr(cls, name, timed(cls, name, vars(cls)[name]))
    total = 0.0
    try:
        # blocks of 10 steps, each after a pause and one untimed step, as in step_benchmark (the other library's
        # spinning threads and its data in the caches would otherwise slow the first steps of a block)
        for start in range(0, steps, 10):
            n = min(10, steps - start)
            time.sleep(0.3)
            md_step()
            synchronize()
            recording[0] = True
            t0 = time.perf_counter()
            for _ in range(n):
                md_step()
            synchronize()
            total += time.perf_counter() - t0
            recording[0] = False
            if t_step:
                time.sleep(0.3)
                t_step()
                torch_total += _torch_profile_block(t_step, n, device, torch_totals)
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
    rows = [{"impl": "minidann", "op": op, "input": shape, "ms_per_step": round(v / steps * 1e3, 2),
             "share": round(v / total, 3)}
            for (op, shape), v in sorted(totals.items(), key=lambda kv: -kv[1])]
    other = total - sum(totals.values())
    rows.append({"impl": "minidann", "op": "other (SGD update, graph walk, Python)", "input": "",
                 "ms_per_step": round(other / steps * 1e3, 2), "share": round(other / total, 3)})
    if compare_torch and t_step is None:
        rows.append({"note": "torch is not importable (or has no CUDA): its profile is skipped."})
    if t_step:
        shown = {k: v for k, v in torch_totals.items() if v >= 0.005 * torch_total}  # ops of at least 0.5%
        rows += [{"impl": "torch", "op": op, "input": shape, "ms_per_step": round(v / steps * 1e3, 2),
                  "share": round(v / torch_total, 3)}
                 for (op, shape), v in sorted(shown.items(), key=lambda kv: -kv[1])]
        rest = torch_total - sum(shown.values())
        rows.append({"impl": "torch", "op": "other (smaller ops, autograd, Python)", "input": "",
                     "ms_per_step": round(rest / steps * 1e3, 2), "share": round(rest / torch_total, 3)})
    return rows


def _torch_profile_block(step, n: int, device: str, totals: dict) -> float:
    """Run ``step`` n times under torch.profiler; add each aten op's self time (s) to ``totals``; return wall s."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "gpu" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()  # synchronizes on a GPU
        wall = time.perf_counter() - t0
    for event in prof.key_averages(group_by_input_shape=True):
        if not event.key.startswith("aten::"):
            continue
        # on a GPU the op's kernel time, on the CPU its own time without the ops it called (microseconds)
        us = getattr(event, "self_device_time_total", 0) if device == "gpu" else event.self_cpu_time_total
        shapes = [s for s in (event.input_shapes or []) if s]
        shape = _shape(shapes[0]) if shapes else ""
        totals[(event.key, shape)] = totals.get((event.key, shape), 0.0) + us / 1e6
    return wall


def _rss_child(impl: str, device: str, batch: int, steps: int, threads: int = 1) -> None:
    """Run in a fresh process: build one implementation's step, run it, print peak RSS in MB (exit 3: no torch)."""
    step, model = minidann_step(device, batch, threads=threads)
    if impl == "torch":
        step = torch_step(device, batch, model)
        del model  # torch's run should not carry minidann's arrays
        if step is None:
            sys.exit(3)
    for _ in range(steps):
        step()
    print(_vm_hwm_mb())


def _vm_hwm_mb() -> float:
    """This process's resident high-water mark (VmHWM, Linux) in MB.

    (ru_maxrss would include the parent's, inherited at fork.)
    """
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


#: the example whose whole run --example-memory measures (present in a clone of the repository)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_to_mnistm.py"


def _example_child(argv: list[str]) -> None:
    """Run in a fresh process: the example with ``argv``, then print this process's peak RSS in MB."""
    import runpy

    sys.argv = [str(EXAMPLE), *argv]
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    print(_vm_hwm_mb())


def _torch_example_floor_child(steps: int, limit_train: int, limit_test: int) -> None:
    """Run in a fresh process: what any PyTorch version of the example must at least do; print peak RSS in MB.

    That is: import torch, load and preprocess the example's data (its own ``load_data``), train the network
    ``steps`` steps source-only and ``steps`` steps with DANN at batch 64 (32 + 32), and classify both test sets
    once per mode. The example does all of this and more (evaluations every 1,000 steps, the proxy A-distance,
    plots, checkpoints), so a PyTorch version of the whole run needs at least this much memory.
    """
    import importlib.util

    import torch

    from .dann import build_model, preprocess

    spec = importlib.util.spec_from_file_location("mnist_to_mnistm", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = example.parse_args(["--device", "cpu"])
    cfg = {"data": args.data, "data_used": None, "data_dir": args.data_dir, "verify": not args.no_verify,
           "limit_train": limit_train, "limit_test": limit_test}
    _, train, test = example.load_data(cfg)
    rng = np.random.default_rng(0)
    ce = torch.nn.functional.cross_entropy
    d = torch.cat([torch.zeros(32), torch.ones(32)]).long()

    def batch(images, labels, n):
        i = rng.integers(0, len(labels), n)
        return torch.from_numpy(preprocess(images[i], train.mean)), torch.from_numpy(labels[i].astype(np.int64))

    for mode in ("source", "dann"):
        feat, label, domain, grad_reverse = _torch_network(build_model(np.random.default_rng(0)), "cpu")
        opt = torch.optim.SGD([p for m in (feat, label, domain) for p in m.parameters()], lr=0.01, momentum=0.9)
        for _ in range(steps):
            if mode == "source":
                x, y = batch(train.source_images, train.source_labels, 64)
                loss = ce(label(feat(x)), y)
            else:
                (xs, y), (xt, _) = (batch(train.source_images, train.source_labels, 32),
                                    batch(train.target_images, train.target_labels, 32))
                f = feat(torch.cat([xs, xt]))
                loss = ce(label(f[:32]), y) + ce(domain(grad_reverse(f, 0.5)), d)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for images in (test.source_images, test.target_images):
                for i in range(0, len(images), 128):
                    label(feat(torch.from_numpy(preprocess(images[i : i + 128], train.mean)))).argmax(1)
    print(_vm_hwm_mb())


def example_memory(steps: int, limit_train: int = 0, limit_test: int = 0) -> list[dict]:
    """Peak resident memory of the example's run and a lower bound of PyTorch's for the same run (CPU).

    minidann's row is the whole example (``--device cpu --steps steps``: both modes, evaluations, proxy
    A-distance, plots, checkpoints); torch's is :func:`_torch_example_floor_child`, the part of that run any
    PyTorch version must do too. minidann using no more than that floor means no more than PyTorch's whole run.
    """
    import importlib.util
    import subprocess
    import tempfile

    if not EXAMPLE.is_file():
        return [{"error": f"{EXAMPLE} not found: --example-memory runs the example of a clone of the repository"}]
    limits = [f for flag, n in (("--limit-train", limit_train), ("--limit-test", limit_test)) if n
              for f in (flag, str(n))]

    def run(code: str) -> tuple[float | None, str | None]:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode:
            return None, (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return round(float(proc.stdout.split()[-1]), 1), None

    with tempfile.TemporaryDirectory() as out:
        argv = ["--device", "cpu", "--steps", str(steps), "--no-progress", "--out", out, *limits]
        mb, err = run(f"from minidann.bench import _example_child; _example_child({argv!r})")
    rows = [{"impl": "minidann", "peak_rss_mb": mb, **({"error": err} if err else {}),
             "what": "the whole example: python examples/mnist_to_mnistm.py " + " ".join(argv[:4] + limits)}]
    torch_importable = sys.modules["torch"] is not None if "torch" in sys.modules else bool(
        importlib.util.find_spec("torch"))  # (without importing it here: only the child's memory counts)
    if not torch_importable:
        rows.append({"note": "torch is not importable, so PyTorch's run is skipped (pip install torch==2.13.0, "
                             "the CPU build, to compare)"})
        return rows
    mb_t, err = run(f"from minidann.bench import _torch_example_floor_child; "
                    f"_torch_example_floor_child({steps}, {limit_train}, {limit_test})")
    rows.append({"impl": "torch", "peak_rss_mb": mb_t, **({"error": err} if err else {}),
                 "what": f"a lower bound of the same run in PyTorch: torch, the same data, {steps} source-only and "
                         f"{steps} DANN steps, one evaluation of both test sets per mode"})
    if mb and mb_t:
        rows.append({"ratio": round(mb / mb_t, 3), "what": "minidann's whole run / PyTorch's lower bound, peak "
                                                         "resident memory"})
    return rows


def peak_rss_mb(impl: str, device: str, batch: int, steps: int, threads: int = 1) -> float | None:
    """Peak resident memory (MB) of a fresh process running ``impl``'s step ``steps`` times; None if it failed."""
    import subprocess

    code = f"from minidann.bench import _rss_child; _rss_child({impl!r}, {device!r}, {batch}, {steps}, {threads})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return round(float(proc.stdout.split()[-1]), 1) if proc.returncode == 0 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidann.bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps (the median is reported)")
    parser.add_argument("--compare-torch", action="store_true", help="time PyTorch's same step side by side")
    parser.add_argument("--torch-tf32", action="store_true",
                        help="GPU: leave PyTorch's default TF32 convolutions on (otherwise PyTorch computes in IEEE "
                             "float32, as minidann's CuPy products do unless CUPY_TF32=1)")
    parser.add_argument("--ops", action="store_true", help="also time forward + backward of single ops")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per op with --ops")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--profile", action="store_true",
                        help="also print the time per op and input shape of a DANN step (one thread; with "
                             "--compare-torch, PyTorch's per aten op too)")
    parser.add_argument("--threads", default="auto",
                        help="minidann's threads per step: 1, 2 (the batch's two halves at once, CPU only), 1,2 (both, "
                             "interleaved) or auto (2 on a CPU with two cores or more, as the example)")
    parser.add_argument("--handoff", action="store_true",
                        help="also probe what handing memory between CPU cores costs (explains slow spells)")
    parser.add_argument("--example-memory", action="store_true",
                        help="instead of timing: peak memory of the example's whole run (--steps per mode, CPU) "
                             "and of the least a PyTorch version of that run must do")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error(f"--steps and --repeats must be at least 1, got {args.steps} and {args.repeats}")
    if args.batch_size < 2:  # a DANN batch is source rows then target rows: at least one of each
        parser.error(f"--batch-size must be at least 2 (one source and one target image), got {args.batch_size}")
    if args.example_memory:
        for row in example_memory(args.steps):
            print(json.dumps(row))
        return 0
    try:
        device, _ = resolve_device(args.device)
    except GPUUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # checked before anything is timed: "1", "2" or "1,2" (repeats dropped), and 2 only on the CPU
    if args.threads == "auto":
        args.threads = str(auto_threads(device) if halves_evenly(args.batch_size, "dann") else 1)
    threads = tuple(dict.fromkeys(n.strip() for n in args.threads.split(",")))
    if not set(threads) <= {"1", "2"} or (device == "gpu" and threads != ("1",)):
        print(f"error: --threads {args.threads}: takes 1, 2 or 1,2 (2: data parallelism over two CPU cores; "
              f"not on a GPU)", file=sys.stderr)
        return 2
    threads = tuple(int(n) for n in threads)
    if 2 in threads and not halves_evenly(args.batch_size, "dann"):
        print(f"error: --threads 2 splits the batch into two halves of half source and half target images each: "
              f"use a --batch-size divisible by 4 (got {args.batch_size})", file=sys.stderr)
        return 2
    if args.ops:
        for row in op_benchmarks(device, args.batch_size, args.repeats):
            print(json.dumps(row))
    if args.handoff and device == "cpu":
        print(json.dumps(core_handoff_probe()))
    rows = step_benchmark(device, args.batch_size, args.steps, args.compare_torch, threads, args.torch_tf32)
    if not args.no_memory:
        for row in rows:
            if row.get("impl") == "minidann":
                row["peak_rss_mb"] = peak_rss_mb("minidann", device, args.batch_size, args.steps, row["threads"])
            elif row.get("impl") == "torch":
                row["peak_rss_mb"] = peak_rss_mb("torch", device, args.batch_size, args.steps)
    for row in rows:
        print(json.dumps(row))
    if args.profile:
        for row in profile_step(device, args.batch_size, args.steps, args.compare_torch, args.torch_tf32):
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
