"""Softmax cross-entropy, the loss of both the label predictor and the domain classifier."""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module, is_cupy_array
from ..core import Function, Tensor, as_tensor


def check_labels(labels, num_classes: int, what: str = "labels"):
    """Validate integer class labels, shape (N,), values in [0, num_classes); ``what`` names them in the error.

    Meant for host labels, where it is free. On CuPy labels the value check costs a device sync, which is why
    :func:`softmax_cross_entropy` checks only the shape and dtype of device labels (:func:`check_label_array`).
    It must come before any indexing, because CuPy wraps out-of-range indices instead of raising.
    """
    check_label_array(labels)
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{what} must lie in [0, {num_classes - 1}] for {num_classes} classes, got values from {lo} to {hi}"
            )


def check_label_array(labels):
    """Validate the shape (N,) and the integer dtype of class labels: free on either device (no values read)."""
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers (class indices), got dtype {labels.dtype}")


class SoftmaxCrossEntropy(Function):
    """L = -(1/N) sum_n log softmax(z_n)[t_n].

    Shapes: logits z (N, K) float, labels t (N,) int (a constant, no gradient) -> scalar.
    """

    def __init__(self, labels):
        self.labels = labels

    def forward(self, z):
        xp = get_array_module(z)
        N = z.shape[0]
        # log softmax with the row max subtracted: exp never overflows
        z_shift = z - z.max(axis=1, keepdims=True)
        log_p = z_shift - xp.log(xp.exp(z_shift).sum(axis=1, keepdims=True))
        self.log_p = log_p
        return -log_p[xp.arange(N), self.labels].mean()

    def backward(self, gy):
        # BEGIN SOLUTION softmax_cross_entropy
        # dL/dz = (softmax(z) - onehot(t)) / N, times the upstream scalar gy
        xp = get_array_module(gy)
        N = self.log_p.shape[0]
        gz = xp.exp(self.log_p)
        gz[xp.arange(N), self.labels] -= 1
        gz *= gy / N
        return gz
        # END SOLUTION softmax_cross_entropy


def softmax_cross_entropy(logits, labels) -> Tensor:
    """Mean softmax cross-entropy of ``logits`` (N, K) against integer ``labels`` (N,); returns a scalar.

    Labels may live on either device:

    - host NumPy labels are checked on the host (shape, dtype and values, free) and then copied: to the device
      when the logits live on a GPU, to a private array on the CPU;
    - device (CuPy) labels are trusted: only their shape and dtype are checked. Checking their values would make
      the host wait for the device at every call, and an out-of-range label would not raise but wrap around (a
      wrong loss). The caller checks them on the host before copying them, as the training loop does
      (:class:`minidann.train.Trainer` checks its data's labels once, when it is made).
    """
    logits, labels = checked_inputs(logits, labels)
    return SoftmaxCrossEntropy(labels)(logits)


def checked_inputs(logits, labels) -> tuple[Tensor, object]:
    """:func:`softmax_cross_entropy`'s checks: (logits as a Tensor, labels as an array on the logits' device)."""
    logits = as_tensor(logits)
    if isinstance(labels, Tensor):
        labels = labels.data
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy: logits must have shape (N, K), got {logits.shape}")
    if not hasattr(labels, "ndim"):
        labels = np.asarray(labels)
    if is_cupy_array(labels):
        check_label_array(labels)  # trusted values: see the docstring
    else:
        check_labels(labels, logits.shape[1])
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"softmax_cross_entropy: {logits.shape[0]} rows of logits but {labels.shape[0]} labels"
        )
    if is_cupy_array(logits.data) and not is_cupy_array(labels):
        xp = get_array_module(logits.data)
        labels = xp.asarray(labels)  # a copy on the device
    elif not is_cupy_array(logits.data) and is_cupy_array(labels):
        raise TypeError("softmax_cross_entropy: logits are on the CPU but labels on the GPU; move both to one device")
    elif not is_cupy_array(labels):
        labels = np.array(labels)  # a copy: backward reads the labels, and the caller may reuse its array before
    return logits, labels
