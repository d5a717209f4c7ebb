"""The one switch between the two layers of ops: the reference kernels and the fast ones.

- ``"reference"``: :mod:`minidann.functions`, the textbook ops the docs quote (conv2d as im2col, one matrix
  product and col2im; max-pool by windows with argmax routing), and a training step that is one forward and one
  backward pass over the whole batch.
- ``"fast"`` (the default): :mod:`minidann.fast`, the same functions computed faster (on the CPU: stride-1
  convolutions without im2col's columns, tiled max-pool, the batch as two halves on two cores). Tests prove every
  fast route equal to its reference, forward and every gradient.

Choose with ``minidann.kernels("reference")`` as a context manager, or :func:`set_kernels` for the rest of the
process; the example, ``python -m minidann.bench`` and ``python -m minidann.gradcheck`` take ``--kernels``.
The route an op takes depends on this switch and on the shapes, never on the dtype, so a float64 gradient check
runs the same code as float32 training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from . import functions as F
from .core import Tensor

#: The two layers of ops, in the order --help lists them.
KERNELS = ("fast", "reference")

_active = "fast"  # a process-wide setting (not per thread): the halves' worker thread must see it too


def check_kernels(name: str) -> str:
    """``name`` if it is one of :data:`KERNELS`, else a ValueError naming the choices."""
    if name not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {name!r}")
    return name


def active_kernels() -> str:
    """The layer of ops that runs now: "fast" or "reference"."""
    return _active


def set_kernels(name: str) -> str:
    """Run ``name``'s ops from now on; return the layer that ran before."""
    global _active
    before, _active = _active, check_kernels(name)
    return before


@contextlib.contextmanager
def kernels(name: str) -> Iterator[str]:
    """``with minidann.kernels("reference"): ...`` runs the block on that layer of ops, then restores the last."""
    before = set_kernels(name)
    try:
        yield name
    finally:
        set_kernels(before)


def conv2d(x, W, b=None, stride=1, pad=0) -> Tensor:
    """:func:`minidann.functions.conv2d` on the active layer: x (N, C, H, W), W (OC, C, KH, KW) -> (N, OC, OH, OW)."""
    if _active == "fast":
        from .fast import conv

        return conv.conv2d(x, W, b, stride, pad)
    return F.conv2d(x, W, b, stride, pad)


def max_pool2d(x, kernel=2, stride=2) -> Tensor:
    """:func:`minidann.functions.max_pool2d` on the active layer: x (N, C, H, W) -> (N, C, OH, OW)."""
    if _active == "fast":
        from .fast import pool

        return pool.max_pool2d(x, kernel, stride)
    return F.max_pool2d(x, kernel, stride)


def relu(x) -> Tensor:
    """:func:`minidann.functions.relu` on the active layer: max(x, 0) elementwise, any shape."""
    if _active == "fast":
        from .fast import activation

        return activation.relu(x)
    return F.relu(x)


def softmax_cross_entropy(logits, labels) -> Tensor:
    """:func:`minidann.functions.softmax_cross_entropy` on the active layer: logits (N, K), labels (N,) -> scalar."""
    if _active == "fast":
        from .fast import loss

        return loss.softmax_cross_entropy(logits, labels)
    return F.softmax_cross_entropy(logits, labels)


def linear(x, W, b=None) -> Tensor:
    """:func:`minidann.functions.linear` on the active layer: x (N, D_in) @ W (D_in, D_out) + b -> (N, D_out)."""
    if _active == "fast":
        from .fast import linear as fast_linear

        return fast_linear.linear(x, W, b)
    return F.linear(x, W, b)
