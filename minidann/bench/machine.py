"""The machine a figure was measured on: the processor, and what handing memory between its cores costs."""

from __future__ import annotations

import statistics
import time

import numpy as np


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


