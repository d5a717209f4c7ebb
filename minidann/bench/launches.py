"""What one DANN step asks of a GPU (``--launches``): kernels, memsets and copies per step, minidann's and PyTorch's.

The count comes from PyTorch's profiler, which traces the GPU through CUPTI: it sees every kernel the process
launches, CuPy's as well as PyTorch's. Both libraries' steps are traced the same way, one after the other, each
after warm-up steps (CuPy compiles its kernels on first use). The rows name the most frequent kernels too, so a
count can be traced back to its ops. (On the CuPy stand-in of the tests, ``tests/test_gpu_standin.py`` counts the
same launches without a GPU.)
"""

from __future__ import annotations

import collections
import json
import os
import tempfile

from minidann.backend import synchronize

from .step import minidann_step
from .torch_twin import torch_step

#: Chrome-trace categories of what the GPU ran, as the profiler names them -> the row's key.
DEVICE_WORK = {"kernel": "kernels", "gpu_memset": "memsets", "gpu_memcpy": "copies"}


def device_work_per_step(trace_events: list[dict], steps: int, top: int = 12) -> dict:
    """Count the GPU's work in a profiler trace of ``steps`` steps.

    Args:
        trace_events: the ``traceEvents`` of a Chrome trace (``prof.export_chrome_trace``): dicts with "cat" and
            "name"; other categories (CPU ops, runtime calls) are ignored.
    Returns:
        {"kernels": per step, "memsets": per step, "copies": per step, "top_kernels": [[name, per step], ...]}
        (the ``top`` most frequent kernel names).
    """
    counts = collections.Counter()
    names = collections.Counter()
    for event in trace_events:
        key = DEVICE_WORK.get(event.get("cat"))
        if key is None or event.get("ph") not in (None, "X"):  # (complete events only: no flow arrows)
            continue
        counts[key] += 1
        if key == "kernels":
            names[event.get("name", "?")] += 1
    row = {key: round(counts[key] / steps, 2) for key in DEVICE_WORK.values()}
    row["top_kernels"] = [[name, round(n / steps, 2)] for name, n in names.most_common(top)]
    return row


def launch_counts(device: str, batch: int, steps: int = 10, torch_tf32: bool = False) -> list[dict]:
    """Rows of :func:`device_work_per_step` for minidann's DANN step and, where torch has CUDA, PyTorch's."""
    if device != "gpu":
        raise ValueError("--launches counts what a GPU runs: use it with --device gpu")
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return [{"note": "torch is not importable: its profiler counts the launches, so none were counted"}]
    if not torch.cuda.is_available():
        return [{"note": "torch has no CUDA here: its profiler cannot trace the GPU, so no launches were counted"}]
    md_step, model = minidann_step(device, batch)
    t_step = torch_step(device, batch, model, tf32=torch_tf32)
    rows = []
    for impl, step in (("minidann", md_step), ("torch", t_step)):
        if step is None:  # (torch_step found no usable torch)
            rows.append({"impl": impl, "note": "PyTorch's step could not be built: its launches are not counted"})
            continue
        for _ in range(3):  # warm-up: kernels compiled, momentum buffers made, memory pools filled
            step()
        synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                step()
            synchronize()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "trace.json")
            prof.export_chrome_trace(path)
            with open(path) as f:
                events = json.load(f).get("traceEvents", [])
        row = {"impl": impl, "device": device, "batch": batch, "steps": steps, **device_work_per_step(events, steps)}
        if not row["kernels"]:  # a step always launches kernels: this profiler did not see them
            row["note"] = "the profiler traced no kernels of this step: these counts are not valid here"
        rows.append(row)
    return rows
