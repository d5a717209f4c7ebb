"""Preprocessing as tf-dann does it, and the domain labels.

Binarise MNIST and repeat it to 3 channels; subtract the per-channel pixel mean of MNIST-train + MNIST-M-train;
divide by 255. Images are kept on the host as uint8 (N, 3, 28, 28) and turned into float32 one batch at a time,
so even full MNIST needs only 2 x 141 MB of host memory.
"""

from __future__ import annotations

import numpy as np


def prepare_mnist(images: np.ndarray) -> np.ndarray:
    """Binarised MNIST repeated to 3 channels, as tf-dann feeds it: (N, 28, 28) uint8 -> (N, 3, 28, 28) uint8.

    Every pixel > 0 becomes 255, so the digit strokes look like the {0, 255} masks MNIST-M was blended with.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28):  # (any dtype: binarised to uint8 0/255 below)
        raise ValueError(f"MNIST images must have shape (N, 28, 28), got {images.shape}")
    binary = np.where(images > 0, np.uint8(255), np.uint8(0))
    return np.ascontiguousarray(np.broadcast_to(binary[:, None], (len(images), 3, 28, 28)))


def prepare_mnistm(images: np.ndarray) -> np.ndarray:
    """MNIST-M from NHWC to NCHW: (N, 28, 28, 3) uint8 -> (N, 3, 28, 28) uint8."""
    if images.ndim != 4 or images.shape[1:] != (28, 28, 3) or images.dtype != np.uint8:
        raise ValueError(f"MNIST-M images must be uint8 of shape (N, 28, 28, 3), got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def pixel_mean(*image_sets: np.ndarray) -> np.ndarray:
    """Per-channel mean of the pooled (N, 3, 28, 28) uint8 sets: (3,) float32, in pixel units (0-255).

    tf-dann pools MNIST-train and MNIST-M-train (one mean for both domains; per-domain normalisation would
    hand the network a shortcut around the domain shift).
    """
    for s in image_sets:
        _check_pixels(s, "pixel_mean")
    total = sum(s.sum(axis=(0, 2, 3), dtype=np.float64) for s in image_sets)
    count = sum(s.shape[0] * s.shape[2] * s.shape[3] for s in image_sets)
    return (total / count).astype(np.float32)


def preprocess(images_u8: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(x - mean) / 255 in float32: (N, 3, 28, 28) uint8 -> (N, 3, 28, 28) float32, on the host."""
    _check_pixels(images_u8, "preprocess")
    x = images_u8.astype(np.float32)
    x -= mean.reshape(1, 3, 1, 1)
    x /= np.float32(255.0)
    return x


def _check_pixels(images: np.ndarray, where: str) -> None:
    """uint8 (N, 3, H, W): float images here would be preprocessed a second time without a word."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{where}: images must be uint8 pixels of shape (N, 3, H, W) (from prepare_mnist or "
                         f"prepare_mnistm, not preprocessed already), got {images.dtype} {images.shape}")


def domain_labels(n_src: int, n_tgt: int) -> np.ndarray:
    """Host int64 labels (n_src + n_tgt,): 0 for the source rows, which come first, then 1 for the target rows."""
    if n_src < 0 or n_tgt < 0:
        raise ValueError(f"domain_labels: row counts must be >= 0, got {n_src} and {n_tgt}")
    return np.concatenate([np.zeros(n_src, np.int64), np.ones(n_tgt, np.int64)])
