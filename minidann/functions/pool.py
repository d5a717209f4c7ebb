"""Max pooling, the reference: windows by im2col, the maximum by argmax, the gradient routed back by col2im.

Notation as in :mod:`minidann.functions.conv`; here without padding, any kernel KH x KW and stride SH, SW. With
every channel taken as an image of its own, im2col gives one row per output, the KH*KW entries of its window:

    col[(n, c, oh, ow), k] = x[n, c, SH*oh + k // KW, SW*ow + k % KW],     k = 0 .. KH*KW - 1,
    k*[(n, c, oh, ow)] = argmax_k col[(n, c, oh, ow), k],     y[n, c, oh, ow] = col[(n, c, oh, ow), k*].

The derivative of a maximum is 1 for the entry that won and 0 for the others, so backward hands gy to the winner:

    gcol[(n, c, oh, ow), k] = gy[n, c, oh, ow] if k == k* else 0,     gx = col2im(gcol),

and col2im adds up the gradients of a pixel that wins several overlapping windows. When several entries of a
window tie for the maximum (after a ReLU, zeros tie often), argmax picks the first in row-major window order, so
the gradient goes to exactly one of them. (A ``x == max`` mask would hand the full gradient to every tie and so
multiply it.) minidann.fast.pool computes the same function faster for windows that tile the image.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor
from .conv import _pair, col2im, conv_output_size, im2col


def check_pool_args(x, KH: int, KW: int, SH: int, SW: int) -> tuple[int, int]:
    """Refuse inputs max_pool2d cannot take, with the problem and the fix; return (OH, OW)."""
    if x.ndim != 4:
        raise ValueError(f"max_pool2d: expected x of shape (N, C, H, W), got {x.shape}")
    if min(KH, KW, SH, SW) < 1:
        raise ValueError(f"max_pool2d: kernel and stride must be >= 1, got kernel {(KH, KW)} and stride {(SH, SW)}")
    H, W = x.shape[2:]
    OH, OW = conv_output_size(H, KH, SH, 0), conv_output_size(W, KW, SW, 0)
    if OH < 1 or OW < 1:
        raise ValueError(f"max_pool2d: a {KH}x{KW} window does not fit input {H}x{W}: use a smaller kernel")
    return OH, OW


class MaxPool2d(Function):
    """Shapes: x (N, C, H, W) -> y (N, C, OH, OW).

    Forward remembers, for every output, which of the KH*KW window entries won (``self.winner``).
    """

    def __init__(self, kernel=2, stride=2):
        self.KH, self.KW = _pair(kernel)
        self.SH, self.SW = _pair(stride)

    def forward(self, x):
        xp = get_array_module(x)
        OH, OW = check_pool_args(x, self.KH, self.KW, self.SH, self.SW)
        N, C, H, W = x.shape
        col = im2col(x.reshape(N * C, 1, H, W), self.KH, self.KW, self.SH, self.SW)  # a row per window, channels
        col = col.reshape(N, C, OH, OW, self.KH * self.KW)  # as images: col[n, c, oh, ow, k]
        self.winner = col.argmax(axis=-1)                     # k* = argmax_k col[..., k], the first on ties
        self.x_shape = x.shape
        return xp.take_along_axis(col, self.winner[..., None], axis=-1)[..., 0]  # y = col[..., k*]

    def backward(self, gy):
        # BEGIN SOLUTION max_pool2d
        xp = get_array_module(gy)
        N, C, H, W = self.x_shape
        OH, OW = gy.shape[2:]
        gcol = (self.winner[..., None] == xp.arange(self.KH * self.KW)) * gy[..., None]  # gy where k == k*, else 0
        gcol = gcol.reshape(N * C, OH, OW, self.KH, self.KW, 1)
        return col2im(gcol, (N * C, 1, H, W), self.SH, self.SW).reshape(N, C, H, W)  # gx = col2im(gcol)
        # END SOLUTION max_pool2d


def max_pool2d(x, kernel=2, stride=2) -> Tensor:
    """Max over each ``kernel`` window moved by ``stride``: x (N, C, H, W) -> (N, C, OH, OW)."""
    return MaxPool2d(kernel, stride)(x)
