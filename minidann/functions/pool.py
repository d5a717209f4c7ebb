"""Max pooling: each output is the largest input of its window, and its gradient goes back to that one input.

Notation as in :mod:`minidann.functions.conv`. When several inputs of a window tie for the maximum (after a
ReLU, zeros tie often), the gradient goes to exactly one of them, the first in row-major window order.
(A ``x == max`` mask would hand the full gradient to every tie and so multiply it.)
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor
from .conv import _pair, col2im, conv_output_size, im2col


class MaxPool2d(Function):
    """Shapes: x (N, C, H, W) -> y (N, C, OH, OW).

    Forward remembers, for every output, which of the KH*KW window positions won (``self.winner``).
    """

    def __init__(self, kernel=2, stride=2):
        self.KH, self.KW = _pair(kernel)
        self.SH, self.SW = _pair(stride)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"max_pool2d: expected x of shape (N, C, H, W), got {x.shape}")
        N, C, H, W = x.shape
        KH, KW, SH, SW = self.KH, self.KW, self.SH, self.SW
        OH, OW = conv_output_size(H, KH, SH, 0), conv_output_size(W, KW, SW, 0)
        if OH < 1 or OW < 1:
            raise ValueError(f"max_pool2d: a {KH}x{KW} window does not fit input {H}x{W}")
        self.x = x  # kept (already alive as the previous op's output) so backward can match its memory layout
        self.tiled = (KH, KW) == (SH, SW)
        if self.tiled:
            return self._forward_tiled(x, OH, OW)
        # Overlapping windows: im2col over each channel separately (channels become batch entries).
        col = im2col(x.reshape(N * C, 1, H, W), KH, KW, SH, SW).reshape(N, C, OH, OW, KH * KW)
        self.winner = col.argmax(axis=-1)  # the first maximum: exactly one winner per window
        xp = get_array_module(x)
        return xp.take_along_axis(col, self.winner[..., None], axis=-1)[..., 0]

    def _forward_tiled(self, x, OH, OW):
        # Windows that tile the image (kernel == stride, the case of every CNN here): the k-th entry of every
        # window is the strided view x[:, :, i::KH, j::KW], so a running max over KH*KW views finds the maxima
        # with no copy of the windows. A strict ">" keeps the first winner on ties.
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
        if self.tiled:
            # The KH*KW strided views write every element of gx once, except the rows and columns that no window
            # covers (when KH does not divide H, say): only then does gx need zeroing first.
            covered = OH * self.KH == H and OW * self.KW == W
            # same memory layout as x (see _forward_tiled)
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
        KK = self.KH * self.KW
        gcol = (self.winner[..., None] == xp.arange(KK)) * gy[..., None]  # (N, C, OH, OW, KH*KW)
        gcol = gcol.reshape(N * C, OH, OW, self.KH, self.KW, 1)
        return col2im(gcol, (N * C, 1, H, W), self.SH, self.SW).reshape(N, C, H, W)


def _element_strides(a) -> tuple[int, ...]:
    """Strides in elements, not bytes: equal for two arrays of the same shape and memory order."""
    return tuple(s // a.itemsize for s in a.strides)


def max_pool2d(x, kernel=2, stride=2) -> Tensor:
    """Max over each ``kernel`` window moved by ``stride``: x (N, C, H, W) -> (N, C, OH, OW)."""
    return MaxPool2d(kernel, stride)(x)
