"""Fast max-pool: the function of the reference :mod:`minidann.functions.pool`, faster for windows that tile.

When the kernel equals the stride (every CNN here), the k-th entry of every window is one strided view of x,
x[:, :, i::KH, j::KW]. On the CPU ("tiled") a running max over the KH*KW views finds the maxima with no copy of
the windows, and the winners fit in uint8. On a GPU ("fused") the same maxima and winners come from one fused
kernel, and the gradient from another (:mod:`minidann.fast.fused`): 2 launches instead of some 25 array ops.
Overlapping (or gapped) windows, and windows of more than 256 entries, take the reference op. :func:`routes`
names the route; tests/test_fast_kernels.py proves every route equal to the reference, forward and gradient, ties
included.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..core import Tensor
from ..functions import pool as reference
from ..functions.conv import _pair
from . import fused

#: Every route name :func:`routes` can give.
ROUTES = {"forward": ("tiled", "fused", "im2col"), "input_grad": ("tiled", "fused", "col2im")}


def routes(kernel=2, stride=2, device: str = "cpu") -> dict[str, str]:
    """The route a fast max_pool2d takes on ``device`` ("cpu" or "gpu").

    Windows that tile (kernel == stride): "tiled" strided views on the CPU, "fused" kernels on a GPU; any other
    windows: the reference's "im2col" forward and "col2im" gradient.
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"routes: device must be 'cpu' or 'gpu', got {device!r}")
    name = ("tiled" if device == "cpu" else "fused") if _tiles(kernel, stride) else None
    return {"forward": name or "im2col", "input_grad": name or "col2im"}


def _tiles(kernel, stride) -> bool:
    """Whether the windows tile the image (kernel == stride) with winners that fit in uint8 (KH*KW <= 256)."""
    KH, KW = _pair(kernel)
    return (KH, KW) == _pair(stride) and KH * KW <= 256


class MaxPool2d(reference.MaxPool2d):
    """Windows that tile the image (kernel == stride). Shapes: x (N, C, H, W) -> y (N, C, OH, OW).

    Forward remembers, for every output, which of the KH*KW window entries won (``self.winner``, uint8), and x,
    whose memory layout the gradient gets.
    """

    def __init__(self, kernel=2, stride=2):
        super().__init__(kernel, stride)
        if not _tiles(kernel, stride):
            raise ValueError(f"fast MaxPool2d: takes windows that tile the image (kernel == stride) of at most 256 "
                             f"entries, got kernel {(self.KH, self.KW)} and stride {(self.SH, self.SW)}: use "
                             "max_pool2d, which falls back to the reference op")

    def forward(self, x):
        OH, OW = reference.check_pool_args(x, self.KH, self.KW, self.SH, self.SW)
        self.x = x  # kept (already alive as the previous op's output) so backward can match its memory layout
        xp = get_array_module(x)
        if xp is not np:  # the "fused" route: one kernel
            N, C, H, W = x.shape
            y, self.winner = xp.empty((N, C, OH, OW), x.dtype), xp.empty((N, C, OH, OW), xp.uint8)
            fused.max_pool_tiled(x, H, W, OH, OW, self.KH, self.KW, y, self.winner)
            return y
        # The "tiled" route: a running max over the KH*KW views; a strict ">" keeps the first winner on ties.
        # (Arrays are copied with order="K", keeping x's memory layout, so later elementwise ops stay contiguous.)
        y = winner = None
        for k, (i, j) in enumerate(self._offsets()):
            v = x[:, :, i : i + self.SH * OH : self.SH, j : j + self.SW * OW : self.SW]
            if y is None:
                y = v.copy(order="K")
                winner = xp.zeros_like(y, dtype=xp.uint8)
            else:
                better = v > y
                xp.maximum(y, v, out=y)
                # where better, winner becomes k (uint8 arithmetic; ~50x faster than a masked copy of bytes)
                winner -= better * (winner - xp.uint8(k))
        self.winner = winner
        return y

    def _offsets(self):
        return [(i, j) for i in range(self.KH) for j in range(self.KW)]

    def backward(self, gy):
        # gx[window winner] = gy; every other input of the window gets 0
        xp = get_array_module(gy)
        N, C, H, W = self.x.shape
        OH, OW = gy.shape[2:]
        if xp is not np:  # the "fused" route: one kernel, writing gx in x's memory order (see forward)
            channels_last = not self.x.flags.c_contiguous and self.x.transpose(0, 2, 3, 1).flags.c_contiguous
            gx = xp.empty((N, H, W, C) if channels_last else (N, C, H, W), gy.dtype)
            fused.max_pool_tiled_grad(gy, self.winner, C, H, W, OH, OW, self.KH, self.KW, int(channels_last), gx)
            return gx.transpose(0, 3, 1, 2) if channels_last else gx
        # The KH*KW strided views write every element of gx once, except the rows and columns that no window
        # covers (when KH does not divide H, say): only then does gx need zeroing first.
        covered = OH * self.KH == H and OW * self.KW == W
        # same memory layout as x (see forward)
        gx = (xp.empty_like if covered else xp.zeros_like)(self.x, dtype=gy.dtype)
        if _element_strides(gy) != _element_strides(self.winner):
            # gy in winner's memory order (one copy of the small array), so the KH*KW products below walk
            # all three arrays in step instead of striding across one of them (10x slower)
            gy_aligned = xp.empty_like(self.winner, dtype=gy.dtype)
            gy_aligned[...] = gy
            gy = gy_aligned
        for k, (i, j) in enumerate(self._offsets()):
            win = gx[:, :, i : i + self.SH * OH : self.SH, j : j + self.SW * OW : self.SW]
            xp.multiply(gy, self.winner == k, out=win)  # gy where entry k won its window, else 0
        return gx


def _element_strides(a) -> tuple[int, ...]:
    """Strides in elements, not bytes: equal for two arrays of the same shape and memory order."""
    return tuple(s // a.itemsize for s in a.strides)


def max_pool2d(x, kernel=2, stride=2) -> Tensor:
    """:func:`minidann.functions.max_pool2d` by the fast route: x (N, C, H, W) -> (N, C, OH, OW)."""
    if _tiles(kernel, stride):  # routes(): "tiled" or "fused"
        return MaxPool2d(kernel, stride)(x)
    return reference.max_pool2d(x, kernel, stride)
