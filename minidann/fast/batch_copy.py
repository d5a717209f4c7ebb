"""A training batch to the GPU in one host-to-device copy: its uint8 pixels and its labels in one buffer.

On a GPU the training loop copies a batch's pixels, not its preprocessed images (a quarter of the bytes), with the
labels behind them in the same host buffer, then preprocesses on the device with one fused kernel
(:data:`minidann.fast.fused.preprocess_pixels`), whose arithmetic is the host's :func:`minidann.dann.preprocess`:
the images on the device are the same bit for bit. One copy and one launch per step, instead of two copies of
four times the bytes.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_device
from . import fused

#: The labels start at a multiple of this many bytes in the buffer, so that their view is aligned for any dtype.
ALIGN = 16


def batch_to_device(pixels: np.ndarray, labels: np.ndarray, mean_on_device, device: str = "gpu"):
    """(x, labels) on ``device`` from host pixels (N, 3, H, W) uint8 and labels (n,) ints, in one copy.

    ``mean_on_device``: the (3,) float32 pixel mean, already on the device (made once by the caller).
    Returns x (N, 3, H, W) float32 preprocessed, and the labels, both device arrays (views and one new array).
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
        raise ValueError(f"batch_to_device: pixels must be uint8 of shape (N, 3, H, W), not preprocessed already, got "
                         f"{pixels.dtype} {pixels.shape}")
    pixels, labels = np.ascontiguousarray(pixels), np.ascontiguousarray(labels)
    n_pixels = pixels.nbytes
    start = -(-n_pixels // ALIGN) * ALIGN
    buffer = np.empty(start + labels.nbytes, np.uint8)
    buffer[:n_pixels] = pixels.reshape(-1)
    buffer[start:] = labels.view(np.uint8)
    on_device = to_device(buffer, device)  # the step's one host -> device copy
    xp = get_array_module(on_device)
    x = xp.empty(pixels.shape, mean_on_device.dtype)
    fused.preprocess_pixels(on_device[:n_pixels].reshape(pixels.shape), mean_on_device,
                            pixels.shape[2] * pixels.shape[3], x)
    return x, on_device[start:].view(labels.dtype)
