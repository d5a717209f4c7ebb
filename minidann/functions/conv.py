"""2-D convolution, the reference: im2col, one matrix product, col2im.

Notation (as in Chainer and CS231n):
    N batch, C input channels, H W input height and width, OC output channels,
    KH KW kernel size, SH SW stride, PH PW zero padding, OH OW output height and width:
    OH = (H + 2 PH - KH) // SH + 1,  OW = (W + 2 PW - KW) // SW + 1;
    x_pad is x with PH rows of zeros above and below and PW columns of zeros left and right.

im2col copies every KH x KW window of x_pad into one row of a matrix,

    col[(n, oh, ow), (kh, kw, c)] = x_pad[n, c, SH*oh + kh, SW*ow + kw]     (N*OH*OW rows, KH*KW*C columns),

and with W_mat[(kh, kw, c), oc] = W[oc, c, kh, kw] the convolution is one matrix product, a linear layer on col:

    Y = col W_mat + b,        y[n, oc, oh, ow] = Y[(n, oh, ow), oc].

So the backward pass is the linear layer's, and one more step for the input: col2im, the adjoint (transpose) of
im2col, adds every row back onto the pixels it was copied from (a pixel in several windows collects the sum):

    gW_mat = col^T gY,        gb = sum over the rows of gY,        gx = col2im(gY W_mat^T).

These are the ops of ``minidann.kernels("reference")`` and the code docs/backprop.md derives. minidann.fast.conv
computes the same function by faster routes, each tested equal to this one (tests/test_fast_kernels.py).
``col`` is stored as (N, OH, OW, KH, KW, C), channels innermost, so that reshaped to a matrix its columns are in
the (kh, kw, c) order above.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a window of size ``k``, stride ``s``, padding ``p`` sliding over ``size`` pixels."""
    return (size + 2 * p - k) // s + 1


def pad_channels_last(x, PH: int, PW: int):
    """(N, C, H, W) -> zero-padded channels-last copy (N, H + 2 PH, W + 2 PW, C)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    x_pad = xp.zeros((N, H + 2 * PH, W + 2 * PW, C), dtype=x.dtype)
    x_pad[:, PH : PH + H, PW : PW + W, :] = x.transpose(0, 2, 3, 1)
    return x_pad


def im2col(x, KH: int, KW: int, SH: int = 1, SW: int = 1, PH: int = 0, PW: int = 0):
    """Unfold every window of ``x`` into a row.

    Args:
        x: (N, C, H, W) input.
    Returns:
        col: (N, OH, OW, KH, KW, C), col[n, oh, ow, kh, kw, c] = x_pad[n, c, SH*oh + kh, SW*ow + kw].
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    x_pad = pad_channels_last(x, PH, PW)  # (N, H + 2 PH, W + 2 PW, C)
    col = xp.empty((N, OH, OW, KH, KW, C), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            # entry (kh, kw) of every window at once: rows kh, kh + SH, ... and columns kw, kw + SW, ... of x_pad
            col[:, :, :, kh, kw, :] = x_pad[:, kh : kh + SH * OH : SH, kw : kw + SW * OW : SW, :]
    return col


def col2im(col, x_shape, SH: int = 1, SW: int = 1, PH: int = 0, PW: int = 0):
    """Add every row back onto the pixels it was copied from: the adjoint of :func:`im2col`.

    Args:
        col: (N, OH, OW, KH, KW, C).
        x_shape: (N, C, H, W), the shape of the image im2col was applied to.
    Returns:
        x: (N, C, H, W) with vdot(im2col(x'), col) == vdot(x', col2im(col)) for every x'.
    """
    xp = get_array_module(col)
    N, C, H, W = x_shape
    OH, OW, KH, KW = col.shape[1:5]
    x_pad = xp.zeros((N, H + 2 * PH, W + 2 * PW, C), dtype=col.dtype)
    for kh in range(KH):
        for kw in range(KW):
            # within one kernel entry no two windows meet the same pixel, so += adds each of them once
            x_pad[:, kh : kh + SH * OH : SH, kw : kw + SW * OW : SW, :] += col[:, :, :, kh, kw, :]
    # the padding received gradient too; it is not part of x, so it is dropped
    return x_pad[:, PH : PH + H, PW : PW + W, :].transpose(0, 3, 1, 2)


def check_conv_args(x, W, b, SH: int, SW: int, PH: int, PW: int) -> tuple[int, int]:
    """Refuse inputs conv2d cannot take, with the problem and the fix; return (OH, OW)."""
    get_array_module(x, W)  # refuses x and W on different devices, with a clear message
    if x.dtype.kind != "f":
        raise TypeError(f"conv2d: x must be floating point, got {x.dtype}: convert the images, e.g. "
                        "x.astype(np.float32) (minidann.dann.preprocess does)")
    if x.ndim != 4 or W.ndim != 4 or x.shape[1] != W.shape[1]:
        raise ValueError(f"conv2d: expected x (N, C, H, W) and W (OC, C, KH, KW) with the same C, got x {x.shape} "
                         f"and W {W.shape}")
    if b is not None and b.shape != (W.shape[0],):
        raise ValueError(f"conv2d: expected b of shape ({W.shape[0]},), got {b.shape}")
    if min(SH, SW) < 1 or min(PH, PW) < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and pad >= 0, got stride {(SH, SW)} and pad {(PH, PW)}")
    (H, Wd), (KH, KW) = x.shape[2:], W.shape[2:]
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(Wd, KW, SW, PW)
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: a {KH}x{KW} kernel does not fit input {H}x{Wd} with padding {PH}: pad more "
                         "or use a smaller kernel")
    return OH, OW


class Conv2d(Function):
    """y = W * x + b (cross-correlation, as in every deep-learning library), by im2col and one matrix product.

    Shapes: x (N, C, H, W), W (OC, C, KH, KW), b (OC,) -> y (N, OC, OH, OW).
    """

    def __init__(self, stride=1, pad=0):
        self.SH, self.SW = _pair(stride)
        self.PH, self.PW = _pair(pad)

    def forward(self, x, W, b=None):
        OH, OW = check_conv_args(x, W, b, self.SH, self.SW, self.PH, self.PW)
        (N, C), (OC, _, KH, KW) = x.shape[:2], W.shape
        col = im2col(x, KH, KW, self.SH, self.SW, self.PH, self.PW).reshape(N * OH * OW, KH * KW * C)
        W_mat = W.transpose(2, 3, 1, 0).reshape(KH * KW * C, OC)  # W_mat[(kh, kw, c), oc] = W[oc, c, kh, kw]
        Y = col @ W_mat                                            # Y = col W_mat
        if b is not None:
            Y += b                                                 #     + b
        self.x_shape, self.W_shape, self.col, self.W_mat = x.shape, W.shape, col, W_mat
        return Y.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2)      # y[n, oc, oh, ow] = Y[(n, oh, ow), oc]

    def backward(self, gy):
        # BEGIN SOLUTION conv2d
        (N, OC, OH, OW), (_, C, KH, KW) = gy.shape, self.W_shape
        gY = gy.transpose(0, 2, 3, 1).reshape(N * OH * OW, OC)     # gY[(n, oh, ow), oc] = gy[n, oc, oh, ow]
        gW = gb = gx = None
        if self.needs_grad[1]:
            gW_mat = self.col.T @ gY                               # gW_mat = col^T gY
            gW = gW_mat.reshape(KH, KW, C, OC).transpose(3, 2, 0, 1)  # gW[oc, c, kh, kw] = gW_mat[(kh, kw, c), oc]
        if len(self.needs_grad) == 3 and self.needs_grad[2]:
            gb = gY.sum(axis=0)                                    # gb = sum over the rows of gY
        if self.needs_grad[0]:
            gcol = (gY @ self.W_mat.T).reshape(N, OH, OW, KH, KW, C)  # gcol = gY W_mat^T
            gx = col2im(gcol, self.x_shape, self.SH, self.SW, self.PH, self.PW)  # gx = col2im(gcol)
        return (gx, gW) if len(self.needs_grad) == 2 else (gx, gW, gb)
        # END SOLUTION conv2d


def conv2d(x, W, b=None, stride=1, pad=0) -> Tensor:
    """x (N, C, H, W) conv W (OC, C, KH, KW) + b (OC,) -> (N, OC, OH, OW); ``stride`` and ``pad`` int or pair."""
    f = Conv2d(stride, pad)
    return f(x, W) if b is None else f(x, W, b)
