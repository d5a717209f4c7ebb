"""CPU tuning for fast training: BLAS threads and glibc's malloc, applied only while fast training runs.

Nothing here runs at ``import minidann``. :func:`tuned` is the one place that changes process-wide settings:
the training loop and the benchmark enter it when the fast kernels train on the CPU, and it puts everything
back when they leave. :mod:`minidann.fast.parallel` sets BLAS to one thread around each two-halves step.
"""

from __future__ import annotations

import contextlib
import functools

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_host_memory(mmap_threshold_mb: int = 32, trim_threshold_mb: int = 128) -> bool:
    """Ask glibc's malloc to keep freed memory for the next step instead of handing it back to the OS.

    A training step allocates and frees the same arrays every time (a DANN step: a few dozen of 0.5 to 7 MB).
    By default glibc serves large blocks with fresh ``mmap`` calls and trims the top of its heap as soon as
    it is free, so each step gets its memory back from the kernel page by page, zero-filled: about 3,900 page
    faults per DANN step, a quarter of its time on the CPU. With blocks up to ``mmap_threshold_mb`` served
    from the heap, and up to ``trim_threshold_mb`` of free heap kept, the next step reuses the same pages.
    Peak memory does not grow (the same blocks are reused); only the return of freed memory is delayed.

    Process-wide: call it through :func:`tuned`, which sets glibc's defaults back afterwards. It changes nothing
    off Linux/glibc, and returns whether it applied.
    """
    return _mallopt(mmap_threshold_mb << 20, trim_threshold_mb << 20)


def restore_malloc_defaults() -> bool:
    """glibc's documented defaults again: 128 KiB for both thresholds (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).

    (glibc starts with a threshold that adapts to the blocks freed; once set, it stays fixed at the value given.)
    """
    return _mallopt(_GLIBC_DEFAULT, _GLIBC_DEFAULT)


_GLIBC_DEFAULT = 128 << 10


def _mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):  # not the glibc we expected: leave malloc as it is
        return False


@contextlib.contextmanager
def tuned():
    """While the block runs, glibc's malloc keeps freed memory for the next step (:func:`keep_freed_host_memory`).

    The training loop (fast kernels on the CPU) and the benchmark's minidann steps run inside this; on leaving,
    malloc gets glibc's default thresholds back. Nested uses restore only at the outermost exit.
    """
    global _depth
    applied = keep_freed_host_memory() if _depth == 0 else False
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if applied and _depth == 0:
            restore_malloc_defaults()


_depth = 0


@functools.lru_cache(maxsize=1)  # looked up once: set_blas_threads runs twice per data-parallel step
def _openblas():
    """(library, get_corename, get_num_threads, set_num_threads) of the OpenBLAS NumPy loaded, or None.

    Found through the process's memory map (Linux only); NumPy's wheels name its functions
    ``scipy_openblas_*64_``, other builds ``openblas_*``.
    """
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:  # not Linux
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", ""), ("scipy_openblas", "")):
            try:
                names = ("get_corename", "get_num_threads", "set_num_threads")
                funcs = [getattr(lib, f"{prefix}_{name}{suffix}") for name in names]
            except AttributeError:
                continue
            funcs[0].restype = ctypes.c_char_p
            return (lib, *funcs)
    return None


def blas_kernel() -> str:
    """Which kernels NumPy's OpenBLAS runs, e.g. 'OpenBLAS SkylakeX, 2 threads' ('unknown' if it cannot tell).

    OpenBLAS picks its kernels for the processor at load time unless ``OPENBLAS_CORETYPE`` forces a family. On an
    AVX-512 machine forced to 'Haswell' (AVX2) its matrix products run at about half speed, while PyTorch (MKL,
    oneDNN) ignores the variable. Some machines set it on purpose (older OpenBLAS builds crash or compute wrong
    results on some processors), so minidann only reports it and never changes it.
    """
    import os

    found = _openblas()
    if found is None:
        return "unknown"
    _, corename, threads, _ = found
    forced = os.environ.get("OPENBLAS_CORETYPE")
    note = f" (forced by OPENBLAS_CORETYPE={forced})" if forced else ""
    return f"OpenBLAS {corename().decode()}{note}, {threads()} threads"


def set_blas_threads(n: int) -> int | None:
    """Let NumPy's OpenBLAS use ``n`` threads from now on; return how many it used before (None: not OpenBLAS).

    :mod:`minidann.fast.parallel` runs two halves of a batch on two Python threads and sets BLAS to one thread
    meanwhile, so that two cores are not shared by four BLAS threads.
    """
    found = _openblas()
    if found is None:
        return None
    _, _, get_threads, set_threads = found
    before = int(get_threads())
    set_threads(int(n))
    return before
