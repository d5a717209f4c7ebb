"""Max pooling: each output is the largest input of its window, and its gradient goes back to that one input.

Notation as in :mod:`minidann.functions.conv`. When several inputs of a window tie for the maximum (after a
ReLU, zeros tie often), the gradient goes to exactly one of them, the first in row-major window order, as
the argmax picks it. (A ``x == max`` mask would hand the full gradient to every tie and so multiply it.)
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor
from .conv import _pair, col2im, conv_output_size, im2col


class MaxPool2d(Function):
    """Shapes: x (N, C, H, W) -> y (N, C, OH, OW)."""

    def __init__(self, kernel=2, stride=2):
        self.KH, self.KW = _pair(kernel)
        self.SH, self.SW = _pair(stride)

    def forward(self, x):
        xp = get_array_module(x)
        if x.ndim != 4:
            raise ValueError(f"max_pool2d: expected x of shape (N, C, H, W), got {x.shape}")
        N, C, H, W = x.shape
        KH, KW, SH, SW = self.KH, self.KW, self.SH, self.SW
        OH, OW = conv_output_size(H, KH, SH, 0), conv_output_size(W, KW, SW, 0)
        if OH < 1 or OW < 1:
            raise ValueError(f"max_pool2d: a {KH}x{KW} window does not fit input {H}x{W}")
        self.x_shape = x.shape
        self.tiled = (KH, KW) == (SH, SW) and H % KH == 0 and W % KW == 0
        if self.tiled:
            # Non-overlapping windows tile the image: a reshape exposes each window, no im2col needed.
            win = x.reshape(N, C, OH, KH, OW, KW).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, OH, OW, KH * KW)
            self.argmax = win.argmax(axis=-1)  # (N, C, OH, OW): the one winner per window
            return xp.take_along_axis(win, self.argmax[..., None], axis=-1)[..., 0]
        # General windows: im2col over each channel separately (channels treated as batch entries)
        col = im2col(x.reshape(N * C, 1, H, W), KH, KW, SH, SW).reshape(KH * KW, N * C, OH, OW)
        self.argmax = col.argmax(axis=0)  # (N*C, OH, OW)
        return xp.take_along_axis(col, self.argmax[None], axis=0)[0].reshape(N, C, OH, OW)

    def backward(self, gy):
        # gx[window winner] = gy; every other input of the window gets 0
        xp = get_array_module(gy)
        N, C, H, W = self.x_shape
        KH, KW = self.KH, self.KW
        OH, OW = gy.shape[2:]
        if self.tiled:
            gwin = (self.argmax[..., None] == xp.arange(KH * KW)) * gy[..., None]  # (N, C, OH, OW, KH*KW)
            return gwin.reshape(N, C, OH, OW, KH, KW).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, H, W)
        gcol = (xp.arange(KH * KW)[:, None, None, None] == self.argmax) * gy.reshape(1, N * C, OH, OW)
        gx = col2im(gcol.reshape(1, KH, KW, N * C, OH, OW), (N * C, 1, H, W), self.SH, self.SW)
        return gx.reshape(N, C, H, W)


def max_pool2d(x, kernel=2, stride=2) -> Tensor:
    """Max over each ``kernel`` window moved by ``stride``: x (N, C, H, W) -> (N, C, OH, OW)."""
    return MaxPool2d(kernel, stride)(x)
