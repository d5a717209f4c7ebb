"""2-D convolution by im2col / col2im.

Notation (as in Chainer and CS231n):
    N batch, C input channels, H W input height and width, OC output channels,
    KH KW kernel size, SH SW stride, PH PW zero padding, OH OW output height and width:
    OH = (H + 2 PH - KH) // SH + 1,  OW = (W + 2 PW - KW) // SW + 1.

im2col copies every KH x KW window of the (padded) input into one column of a matrix, so that the
convolution becomes a single matrix product. Our ``col`` has shape (C, KH, KW, N, OH, OW): read as a
matrix it has one row per kernel entry (c, kh, kw) and one column per output pixel (n, oh, ow), so

    y[oc, (n, oh, ow)] = sum_{(c, kh, kw)} W[oc, (c, kh, kw)] * col[(c, kh, kw), (n, oh, ow)] + b[oc].

col2im is the adjoint (transpose) of im2col: it adds every column back onto the pixels it was copied from.
Overlapping windows receive the sum, which is exactly what the chain rule asks for. Both loop only over the
KH x KW kernel offsets, each step a strided slice of the whole batch: no Python loop over samples or pixels.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a window of size ``k``, stride ``s``, padding ``p`` sliding over ``size`` pixels."""
    return (size + 2 * p - k) // s + 1


def im2col(x, KH: int, KW: int, SH: int = 1, SW: int = 1, PH: int = 0, PW: int = 0):
    """Unfold the windows of ``x`` into columns.

    Args:
        x: (N, C, H, W) input.
    Returns:
        col: (C, KH, KW, N, OH, OW), with col[c, kh, kw, n, oh, ow] = x_pad[n, c, SH*oh + kh, SW*ow + kw].
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    if PH or PW:
        x = xp.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    x_cn = x.transpose(1, 0, 2, 3)  # (C, N, Hp, Wp), a view
    col = xp.empty((C, KH, KW, N, OH, OW), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            # every window's (kh, kw) entry at once: a strided slice over all n, oh, ow
            col[:, kh, kw] = x_cn[:, :, kh : kh + SH * OH : SH, kw : kw + SW * OW : SW]
    return col


def col2im(col, x_shape, SH: int = 1, SW: int = 1, PH: int = 0, PW: int = 0):
    """Fold columns back onto the image, adding where windows overlap: the adjoint of :func:`im2col`.

    Args:
        col: (C, KH, KW, N, OH, OW).
        x_shape: (N, C, H, W), the shape of the image im2col was applied to.
    Returns:
        x: (N, C, H, W) with x = im2col^T(col), i.e. vdot(im2col(x'), col) == vdot(x', col2im(col)) for all x'.
    """
    xp = get_array_module(col)
    C, KH, KW, N, OH, OW = col.shape
    _, _, H, W = x_shape
    img = xp.zeros((C, N, H + 2 * PH, W + 2 * PW), dtype=col.dtype)
    for kh in range(KH):
        for kw in range(KW):
            img[:, :, kh : kh + SH * OH : SH, kw : kw + SW * OW : SW] += col[:, kh, kw]
    img = img[:, :, PH : PH + H, PW : PW + W]  # padding received gradient too: drop it
    return xp.ascontiguousarray(img.transpose(1, 0, 2, 3))


class Conv2d(Function):
    """y = W * x + b (cross-correlation, as in every deep-learning library).

    Shapes: x (N, C, H, W), W (OC, C, KH, KW), b (OC,) -> y (N, OC, OH, OW).
    """

    def __init__(self, stride=1, pad=0):
        self.SH, self.SW = _pair(stride)
        self.PH, self.PW = _pair(pad)

    def forward(self, x, W, b=None):
        xp = get_array_module(x, W)
        if x.ndim != 4 or W.ndim != 4 or x.shape[1] != W.shape[1]:
            raise ValueError(
                f"conv2d: expected x (N, C, H, W) and W (OC, C, KH, KW) with the same C, got x {x.shape} "
                f"and W {W.shape}"
            )
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"conv2d: expected b of shape ({W.shape[0]},), got {b.shape}")
        N, C, H, Wd = x.shape
        OC, _, KH, KW = W.shape
        OH, OW = conv_output_size(H, KH, self.SH, self.PH), conv_output_size(Wd, KW, self.SW, self.PW)
        if OH < 1 or OW < 1:
            raise ValueError(f"conv2d: a {KH}x{KW} kernel does not fit input {H}x{Wd} with padding {self.PH}")
        col = im2col(x, KH, KW, self.SH, self.SW, self.PH, self.PW)
        y = W.reshape(OC, -1) @ col.reshape(C * KH * KW, N * OH * OW)  # (OC, N*OH*OW), one GEMM
        if b is not None:
            y += b[:, None]
        self.x_shape, self.W, self.col = x.shape, W, col
        return xp.ascontiguousarray(y.reshape(OC, N, OH, OW).transpose(1, 0, 2, 3))

    def backward(self, gy):
        OC, C, KH, KW = self.W.shape
        col2d = self.col.reshape(C * KH * KW, -1)
        gy2d = gy.transpose(1, 0, 2, 3).reshape(OC, -1)  # (OC, N*OH*OW)
        gx = gW = gb = None
        if self.needs_grad[0]:
            # gcol = W^T gy, then gx = col2im(gcol): every pixel collects from each window it appeared in
            gcol = self.W.reshape(OC, -1).T @ gy2d
            gx = col2im(gcol.reshape(self.col.shape), self.x_shape, self.SH, self.SW, self.PH, self.PW)
        if self.needs_grad[1]:
            # gW = gy col^T
            gW = (gy2d @ col2d.T).reshape(self.W.shape)
        if len(self.needs_grad) == 3 and self.needs_grad[2]:
            # gb[oc] = sum over n, oh, ow of gy
            gb = gy2d.sum(axis=1)
        return (gx, gW) if len(self.needs_grad) == 2 else (gx, gW, gb)


def conv2d(x, W, b=None, stride=1, pad=0) -> Tensor:
    """x (N, C, H, W) conv W (OC, C, KH, KW) + b (OC,) -> (N, OC, OH, OW); ``stride`` and ``pad`` int or pair."""
    f = Conv2d(stride, pad)
    return f(x, W) if b is None else f(x, W, b)
