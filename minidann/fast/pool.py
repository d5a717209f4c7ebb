"""Fast max-pool: the function of the reference :mod:`minidann.functions.pool`, faster for windows that tile.

When the kernel equals the stride (every CNN here), the k-th entry of every window is one strided view of x,
x[:, :, i::KH, j::KW]: a running max over the KH*KW views finds the maxima with no copy of the windows, and the
winners fit in uint8. Overlapping (or gapped) windows take the reference op. :func:`routes` names the route;
tests/test_fast_kernels.py proves both equal to the reference, forward and gradient, ties included.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Tensor
from ..functions import pool as reference
from ..functions.conv import _pair

#: Every route name :func:`routes` can give.
ROUTES = {"forward": ("tiled", "im2col"), "input_grad": ("tiled", "col2im")}


def routes(kernel=2, stride=2) -> dict[str, str]:
    """The route a fast max_pool2d takes: "tiled" views when kernel == stride, else the reference's im2col/col2im."""
    tiled = _pair(kernel) == _pair(stride)
    return {"forward": "tiled" if tiled else "im2col", "input_grad": "tiled" if tiled else "col2im"}


class MaxPool2d(reference.MaxPool2d):
    """Windows that tile the image (kernel == stride). Shapes: x (N, C, H, W) -> y (N, C, OH, OW).

    Forward remembers, for every output, which of the KH*KW window entries won (``self.winner``, uint8), and x,
    whose memory layout the gradient gets.
    """

    def __init__(self, kernel=2, stride=2):
        super().__init__(kernel, stride)
        if (self.KH, self.KW) != (self.SH, self.SW):
            raise ValueError(f"fast MaxPool2d: takes windows that tile the image (kernel == stride), got kernel "
                             f"{(self.KH, self.KW)} and stride {(self.SH, self.SW)}: use max_pool2d, which falls "
                             "back to the reference op")

    def forward(self, x):
        OH, OW = reference.check_pool_args(x, self.KH, self.KW, self.SH, self.SW)
        self.x = x  # kept (already alive as the previous op's output) so backward can match its memory layout
        # A running max over the KH*KW views; a strict ">" keeps the first winner on ties.
        # (Arrays are copied with order="K", keeping x's memory layout, so later elementwise ops stay contiguous.)
        xp = get_array_module(x)
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
    if routes(kernel, stride)["forward"] == "tiled":
        return MaxPool2d(kernel, stride)(x)
    return reference.max_pool2d(x, kernel, stride)
