"""Which array module holds the data: NumPy on the CPU, CuPy on a GPU.

Every op in minidann calls :func:`get_array_module` on its inputs and uses the module it gets back
(``xp``), so one code path serves both devices. This is the only file that imports CuPy.
"""

from __future__ import annotations

import os
import sys

import numpy as np

_cupy = None  # the cupy module once imported
_cupy_error: str | None = None  # why importing CuPy failed, kept for the error message
_kernel_error: str | None = None  # "" once a tiny kernel and product ran on the GPU


class GPUUnavailableError(RuntimeError):
    """Raised when a GPU was asked for and cannot be used; the message names the cause and the fix."""


def _import_cupy():
    """Import CuPy once; return the module or None (and remember why not)."""
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy  # the one place minidann imports CuPy

            _cupy = cupy
        except ImportError as e:
            _cupy_error = f"ModuleNotFoundError: {e}" if isinstance(e, ModuleNotFoundError) else f"ImportError: {e}"
        except Exception as e:  # a broken CUDA install can raise anything at import time
            _cupy_error = f"{type(e).__name__}: {e}"
    return _cupy


def gpu_unavailable_reason() -> str | None:
    """Return None when a CUDA device can be used through CuPy, else a message naming the cause and the fix."""
    cupy = _import_cupy()
    if cupy is None:
        if _cupy_error and _cupy_error.startswith("ModuleNotFoundError") and "cupy" in _cupy_error:
            return (
                "CuPy is not installed, so minidann cannot use a GPU. Fix: install the CuPy build for your CUDA "
                "version, e.g. `pip install -e '.[cuda12]'` (cupy-cuda12x) or `pip install -e '.[cuda13]'` "
                "(cupy-cuda13x), or run on the CPU with --device cpu."
            )
        return (
            f"CuPy is installed but failed to import ({_cupy_error}). Fix: install the CuPy package that matches "
            "your CUDA driver (cupy-cuda12x or cupy-cuda13x, only one of them), or run with --device cpu."
        )
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or a driver too old for this CuPy build
        return (
            f"CuPy is installed but cannot reach a CUDA device ({type(e).__name__}: {e}). Fix: check `nvidia-smi` "
            "and that the CuPy build matches the driver, or run with --device cpu."
        )
    if n == 0:
        return "CuPy is installed but no CUDA device is visible (0 devices). Fix: check CUDA_VISIBLE_DEVICES and "\
            "`nvidia-smi`, or run with --device cpu."
    error = _cannot_run_kernels(cupy)
    if error and "OutOfMemory" in error:
        return (f"CuPy sees {n} CUDA device(s) but could not compute a tiny test on them ({error}): the GPU is "
                "out of memory. Fix: free it (`nvidia-smi` shows who holds it), or run with --device cpu.")
    if error:
        return (
            f"CuPy sees {n} CUDA device(s) but cannot compute on them ({error}). The CUDA libraries CuPy loads "
            "when it first computes (NVRTC, which compiles its kernels, and cuBLAS, for matrix products) are "
            "probably missing. Fix: install them as wheels with `pip install 'cupy-cuda12x[ctk]'` (or "
            "'cupy-cuda13x[ctk]', the build you have), or install the CUDA Toolkit; or run with --device cpu."
        )
    return None


def _cannot_run_kernels(cupy) -> str | None:
    """Run one tiny kernel and one tiny product on the GPU: None if they work (remembered), else the error.

    A CuPy that imports and counts the devices has not yet loaded NVRTC or cuBLAS: without this check a missing
    library would surface as an error inside the first training step instead of here, with its fix. Only success
    is remembered: a failure (a GPU busy and out of memory, say) is tried again on the next call.
    """
    global _kernel_error
    if _kernel_error is None:
        try:
            x = cupy.arange(4, dtype=cupy.float32).reshape(2, 2)
            float(((x + 1) @ x).sum())  # an elementwise kernel, a cuBLAS product, a reduction; float() waits for them
            _kernel_error = ""
        except Exception as e:  # CuPy raises its own types (CompileException, CUDARuntimeError, ...) or OSError
            return f"{type(e).__name__}: {e}"
    return _kernel_error or None


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return gpu_unavailable_reason() is None


def require_gpu():
    """Return the cupy module, or raise :class:`GPUUnavailableError` saying why there is no GPU and what to do."""
    reason = gpu_unavailable_reason()
    if reason is not None:
        raise GPUUnavailableError(reason)
    return _cupy


def resolve_device(device: str) -> tuple[str, str]:
    """Turn ``'cpu' | 'gpu' | 'auto'`` into ``'cpu'`` or ``'gpu'`` plus a one-line note of what was chosen.

    ``gpu`` fails loudly (:class:`GPUUnavailableError`); only ``auto`` may fall back to the CPU, and it says so.
    """
    if device == "cpu":
        return "cpu", "device: cpu (NumPy)"
    if device == "gpu":
        require_gpu()
        return "gpu", "device: gpu (CuPy)"
    if device == "auto":
        reason = gpu_unavailable_reason()
        if reason is None:
            return "gpu", "device: gpu (CuPy), chosen by --device auto"
        return "cpu", "device: cpu (NumPy), chosen by --device auto because no GPU is usable: " + reason
    raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")


def is_cupy_array(x) -> bool:
    """True for a cupy.ndarray (without importing CuPy when nobody imported it).

    An array made by a program that imported CuPy before minidann did counts too: minidann then takes the
    already-imported module, instead of treating the array as host data (np.asarray would refuse it).
    """
    cupy = _cupy
    if cupy is None:
        if "cupy" not in sys.modules:  # no cupy.ndarray can exist
            return False
        cupy = _import_cupy()
        if cupy is None:
            return False
    return isinstance(x, cupy.ndarray)


def get_array_module(*arrays):
    """Return ``numpy`` or ``cupy``: the module that holds ``arrays``.

    Python scalars and None are ignored. Mixing NumPy and CuPy arrays raises TypeError: silently copying one
    side would hide a host-device transfer in every step.
    """
    n_cupy = n_numpy = 0
    for a in arrays:
        if is_cupy_array(a):
            n_cupy += 1
        elif isinstance(a, np.ndarray):
            n_numpy += 1
    if n_cupy and n_numpy:
        raise TypeError(
            "an op got both NumPy (CPU) and CuPy (GPU) arrays. Fix: move everything to one device first, "
            "e.g. model.to('gpu') and minidann.to_device(batch, 'gpu'), or keep all on 'cpu'."
        )
    return _cupy if n_cupy else np


def to_device(x, device: str):
    """Copy an array to ``'cpu'`` (NumPy) or ``'gpu'`` (CuPy); an array already there is returned as is."""
    if device == "cpu":
        return to_numpy(x)
    if device == "gpu":
        cupy = require_gpu()
        return cupy.asarray(x)
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


def to_numpy(x) -> np.ndarray:
    """Return a host NumPy array (copying from the GPU when needed)."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def device_of(x) -> str:
    """``'gpu'`` for a CuPy array, else ``'cpu'``."""
    return "gpu" if is_cupy_array(x) else "cpu"


def synchronize(x=None) -> None:
    """Wait for queued GPU work (for timing); a no-op on the CPU."""
    if _cupy is not None and (x is None or is_cupy_array(x)):
        _cupy.cuda.get_current_stream().synchronize()


def cupy_tf32_enabled(environ=None) -> bool:
    """Whether CuPy computes float32 products in TF32: CuPy reads ``int(CUPY_TF32) > 0`` (so "1", "2"... all count).

    Raises:
        ValueError: CUPY_TF32 is not an integer (CuPy itself would fail at its first product).
    """
    value = (os.environ if environ is None else environ).get("CUPY_TF32", "0")
    try:
        return int(value) > 0
    except ValueError:
        raise ValueError(f"CUPY_TF32={value!r} is not an integer; CuPy reads it as int(CUPY_TF32) > 0. Fix: set "
                         "CUPY_TF32=1 for TF32 products, or CUPY_TF32=0 (or unset it) for IEEE float32") from None
