"""2-D convolution by im2col / col2im.

Notation (as in Chainer and CS231n):
    N batch, C input channels, H W input height and width, OC output channels,
    KH KW kernel size, SH SW stride, PH PW zero padding, OH OW output height and width:
    OH = (H + 2 PH - KH) // SH + 1,  OW = (W + 2 PW - KW) // SW + 1.

im2col copies every KH x KW window of the (padded) input into one row of a matrix, so that the convolution
becomes a single matrix product. Our ``col`` has shape (N, OH, OW, KH, KW, C): read as a matrix it has one
row per output pixel (n, oh, ow) and one column per kernel entry (kh, kw, c), so with
W_mat[(kh, kw, c), oc] = W[oc, c, kh, kw]:

    y[(n, oh, ow), oc] = sum_{(kh, kw, c)} col[(n, oh, ow), (kh, kw, c)] * W_mat[(kh, kw, c), oc] + b[oc].

col2im is the adjoint (transpose) of im2col: it adds every row back onto the pixels it was copied from.
Overlapping windows receive the sum, which is exactly what the chain rule asks for. im2col is one copy from a
strided view of all windows; col2im loops over the kernel offsets, each step a strided slice of the whole batch:
no Python loop over samples or pixels. For stride 1 the input gradient skips col2im: the same sum, written as a
gather, is a convolution of the padded gy with the flipped kernel (see Conv2d._input_grad_flipped).

On the CPU a stride-1 convolution that does not keep its columns takes a shortcut through im2col: it unfolds the
windows along the width only, multiplies them by all KH kernel rows in one product and adds the KH terms of each
output row from row-shifted views (see _conv_shifted_rows); its weight gradient splits the same way, one product
per kernel row (_weight_grad_shifted_rows). The multiplications are the same; the copy is KH times smaller.

Why channels last inside: with C innermost, the KW x C entries of one kernel row are contiguous in memory
both in the padded input and in ``col``, so im2col moves long contiguous runs instead of single floats. The
API stays (N, C, H, W); only the arrays inside conv2d are channels-last. (Its output is a transposed *view*
of the (N, OH, OW, OC) product, and elementwise ops downstream keep that memory order, so the next conv2d
gets its channels-last input almost for free.)
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..core import Function, Tensor, is_grad_enabled

# On the CPU the batch is processed a few images at a time: the columns just written by im2col are then still
# in cache when the matrix product reads them, which halves the time of a DANN-sized conv. A GPU gets the
# whole batch in one product (fewer, larger kernel launches).
CPU_CHUNK = 4  # measured best of 2, 3, 4, 6, 8, 16 at the DANN shapes on a 2-core machine


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_output_size(size: int, k: int, s: int, p: int) -> int:
    """Output length of a window of size ``k``, stride ``s``, padding ``p`` sliding over ``size`` pixels."""
    return (size + 2 * p - k) // s + 1


def pad_channels_last(x, PH: int, PW: int):
    """(N, C, H, W) -> zero-padded channels-last copy (N, H + 2 PH, W + 2 PW, C)."""
    return _zero_pad_hw(x.transpose(0, 2, 3, 1), PH, PW)


def _zero_pad_hw(a, PH: int, PW: int):
    """Channels-last (N, H, W, C) -> a zero-padded copy (N, H + 2 PH, W + 2 PW, C)."""
    xp = get_array_module(a)
    N, H, W, C = a.shape
    a_pad = xp.zeros((N, H + 2 * PH, W + 2 * PW, C), dtype=a.dtype)
    a_pad[:, PH : PH + H, PW : PW + W, :] = a
    return a_pad


def _windows(x_pad, KH: int, KW: int, SH: int, SW: int):
    """All windows of x_pad (N, HP, WP, C) as a view (N, OH, OW, KH, KW, C).

    windows[n, oh, ow, kh, kw, c] = x_pad[n, SH*oh + kh, SW*ow + kw, c].
    """
    xp = get_array_module(x_pad)
    N, HP, WP, C = x_pad.shape
    OH, OW = (HP - KH) // SH + 1, (WP - KW) // SW + 1
    sN, sH, sW, sC = x_pad.strides
    # Stepping oh moves SH rows of x_pad, stepping kh moves one row, and so on: a view of all the windows at once.
    # Nothing is copied until it is assigned; with SW == 1 each (kw, c) run is KW*C contiguous floats of x_pad.
    strides = (sN, SH * sH, SW * sW, sH, sW, sC)
    return xp.lib.stride_tricks.as_strided(x_pad, shape=(N, OH, OW, KH, KW, C), strides=strides)


def _unfold_into(col, x_pad, SH: int, SW: int) -> None:
    """Fill col (N, OH, OW, KH, KW, C) with col[n, oh, ow, kh, kw, c] = x_pad[n, SH*oh + kh, SW*ow + kw, c]."""
    col[...] = _windows(x_pad, col.shape[3], col.shape[4], SH, SW)


def _fold_add(img, col, SH: int, SW: int) -> None:
    """img[n, SH*oh + kh, SW*ow + kw, c] += col[n, oh, ow, kh, kw, c] for all entries (the adjoint of unfold)."""
    N, OH, OW, KH, KW, C = col.shape
    for kh in range(KH):
        for kw in range(KW):
            # one slice per kernel offset: within it no two windows hit the same pixel, so += is safe
            img[:, kh : kh + SH * OH : SH, kw : kw + SW * OW : SW, :] += col[:, :, :, kh, kw, :]


def im2col(x, KH: int, KW: int, SH: int = 1, SW: int = 1, PH: int = 0, PW: int = 0):
    """Unfold the windows of ``x`` into rows.

    Args:
        x: (N, C, H, W) input.
    Returns:
        col: (N, OH, OW, KH, KW, C), with col[n, oh, ow, kh, kw, c] = x_pad[n, c, SH*oh + kh, SW*ow + kw].
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, KH, SH, PH), conv_output_size(W, KW, SW, PW)
    col = xp.empty((N, OH, OW, KH, KW, C), dtype=x.dtype)
    _unfold_into(col, pad_channels_last(x, PH, PW), SH, SW)
    return col


def col2im(col, x_shape, SH: int = 1, SW: int = 1, PH: int = 0, PW: int = 0):
    """Fold rows back onto the image, adding where windows overlap: the adjoint of :func:`im2col`.

    Args:
        col: (N, OH, OW, KH, KW, C).
        x_shape: (N, C, H, W), the shape of the image im2col was applied to.
    Returns:
        x: (N, C, H, W) with vdot(im2col(x'), col) == vdot(x', col2im(col)) for every x'.
    """
    xp = get_array_module(col)
    N, C, H, W = x_shape
    img = xp.zeros((N, H + 2 * PH, W + 2 * PW, C), dtype=col.dtype)
    _fold_add(img, col, SH, SW)
    # the padding received gradient too; it is not part of x, so it is dropped
    return img[:, PH : PH + H, PW : PW + W, :].transpose(0, 3, 1, 2)


class Conv2d(Function):
    """y = W * x + b (cross-correlation, as in every deep-learning library).

    Shapes: x (N, C, H, W), W (OC, C, KH, KW), b (OC,) -> y (N, OC, OH, OW).
    """

    def __init__(self, stride=1, pad=0):
        self.SH, self.SW = _pair(stride)
        self.PH, self.PW = _pair(pad)

    def forward(self, x, W, b=None):
        get_array_module(x, W)  # refuses x and W on different devices, with a clear message
        if x.dtype.kind != "f":
            raise TypeError(f"conv2d: x must be floating point, got {x.dtype}: convert the images, e.g. "
                            "x.astype(np.float32) (minidann.dann.preprocess does)")
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

        W_mat = W.transpose(2, 3, 1, 0).reshape(KH * KW * C, OC)  # W_mat[(kh, kw, c), oc]
        x_pad = pad_channels_last(x, self.PH, self.PW)
        # Backward needs the columns again for gW. Re-unfolding them from x_pad usually costs less than keeping
        # them (25x the size of the input) and fetching them back from memory, except when the unfold copies runs
        # of KW*C values shorter than a 64-byte cache line (conv1 of DANN: 5 * 3 floats), which is slow per byte.
        keep = KW * C * x.itemsize < 64 and is_grad_enabled() and self.needs_grad[1:2] == (True,)
        y, col = _conv_channels_last(x_pad, W_mat, b, KH, KW, self.SH, self.SW, keep_columns=keep, PH=self.PH)
        self.x_shape, self.W, self.x_pad, self.col = x.shape, W, x_pad, col
        return y.transpose(0, 3, 1, 2)  # (N, OC, OH, OW), a view of the channels-last result

    def backward(self, gy):
        xp = get_array_module(gy)
        N, C, H, Wd = self.x_shape
        OC, _, KH, KW = self.W.shape
        OH, OW = gy.shape[2:]
        gy_cl = gy.transpose(0, 2, 3, 1)  # (N, OH, OW, OC); contiguous when gy came from a channels-last op
        gy_mat = xp.ascontiguousarray(gy_cl).reshape(-1, OC)  # gy[(n, oh, ow), oc]
        need_x, need_W = self.needs_grad[0], self.needs_grad[1]
        need_b = len(self.needs_grad) == 3 and self.needs_grad[2]
        gx = gW = gb = None
        if need_W:
            if self.col is not None:  # columns kept by forward: one product over the whole batch
                gW_matT = gy_mat.T @ self.col.reshape(-1, KH * KW * C)
            elif xp is np and (self.SH, self.SW) == (1, 1):  # the CPU's stride-1 route: no im2col columns
                gW_matT = _weight_grad_shifted_rows(self.x_pad, gy_cl, KH, KW)
            else:
                gW_matT = xp.zeros((OC, KH * KW * C), dtype=gy.dtype)
                for i, col in _chunks(self.x_pad, OH, OW, KH, KW, self.SH, self.SW):
                    # gW_mat = col^T gy, summed over the chunks; computed transposed, (gy^T col), which BLAS runs
                    # faster for these shapes (the long N*OH*OW axis is the contracted one either way)
                    gW_matT += gy_mat[i * OH * OW : (i + len(col)) * OH * OW].T @ col.reshape(-1, KH * KW * C)
            # gW_mat^T[oc, (kh, kw, c)] back to W's layout (OC, C, KH, KW)
            gW = xp.ascontiguousarray(gW_matT.reshape(OC, KH, KW, C).transpose(0, 3, 1, 2))
        if need_x:
            if (self.SH, self.SW) == (1, 1) and self.PH < KH and self.PW < KW:
                gx = self._input_grad_flipped(gy_cl)
            else:
                gx = self._input_grad_col2im(gy_mat, OH, OW)
        if need_b:
            # gb[oc] = sum over n, oh, ow of gy, as the product 1^T gy_mat: one BLAS call, several times faster
            # than NumPy's row-by-row gy_mat.sum(axis=0) on a tall, narrow matrix (0.1 against 0.7 ms for conv1).
            # dot, not @: NumPy's matmul runs a vector-matrix product without releasing the GIL (numpy/numpy#11821),
            # which stalls the other half of a threads=2 step; dot releases it around the BLAS call.
            gb = xp.dot(xp.ones(len(gy_mat), dtype=gy_mat.dtype), gy_mat)
        return (gx, gW) if len(self.needs_grad) == 2 else (gx, gW, gb)

    def _input_grad_col2im(self, gy_mat, OH, OW):
        """Any stride: gcol = gy W_mat^T, then col2im. gy_mat (N*OH*OW, OC) -> gx (N, C, H, W)."""
        N, C, H, Wd = self.x_shape
        OC, _, KH, KW = self.W.shape
        # gcol = gy W_mat^T, then col2im: every pixel collects from each window it appeared in. The product is
        # computed as KH*KW stacked products gy W[:, :, kh, kw] (one matmul call), so gcol lies in memory
        # offset-major, (KH, KW, N, OH, OW, C): each of col2im's KH*KW strided adds then reads one contiguous block.
        W_k = self.W.transpose(2, 3, 0, 1).reshape(KH * KW, OC, C)  # W_k[(kh, kw), oc, c] = W[oc, c, kh, kw]
        gcol = (gy_mat @ W_k).reshape(KH, KW, N, OH, OW, C).transpose(2, 3, 4, 0, 1, 5)  # (N, OH, OW, KH, KW, C) view
        return col2im(gcol, self.x_shape, self.SH, self.SW, self.PH, self.PW)

    def _input_grad_flipped(self, gy_cl):
        """Stride 1: gx is a convolution of gy with the flipped kernel. gy_cl (N, OH, OW, OC) -> gx (N, C, H, W).

        From y[n, oh, ow, oc] = sum_{kh, kw, c} x_pad[n, oh + kh, ow + kw, c] W[oc, c, kh, kw]:

            gx_pad[n, h, w, c] = sum_{kh, kw, oc} gy[n, h - kh, w - kw, oc] W[oc, c, kh, kw]
                               = sum_{kh, kw, oc} gy_pad[n, h' + kh, w' + kw, oc] W[oc, c, KH-1-kh, KW-1-kw],

        a stride-1 convolution of gy, zero-padded by KH-1-PH rows and KW-1-PW columns, with the kernel turned
        by 180 degrees and its in/out channels swapped; it yields exactly the H x W unpadded pixels of x. This
        is col2im's sum written as a gather, so it needs no scatter-add over overlapping windows.
        """
        N, C, H, Wd = self.x_shape
        OC, _, KH, KW = self.W.shape
        W_flip_mat = self.W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(KH * KW * OC, C)  # [(kh, kw, oc), c]
        gy_pad = _zero_pad_hw(gy_cl, KH - 1 - self.PH, KW - 1 - self.PW)
        gx, _ = _conv_channels_last(gy_pad, W_flip_mat, None, KH, KW, 1, 1, PH=KH - 1 - self.PH)  # (N, H, W, C)
        return gx.transpose(0, 3, 1, 2)


def _chunks(x_pad, OH: int, OW: int, KH: int, KW: int, SH: int, SW: int, out=None):
    """Yield (i, col), col (B, OH, OW, KH, KW, C) the columns of images i .. i+B-1 of x_pad.

    The chunks share one reused buffer, or are the slices out[i : i+B] of ``out`` (N, OH, OW, KH, KW, C) when given.
    """
    xp = get_array_module(x_pad)
    N, C = x_pad.shape[0], x_pad.shape[3]
    B = min(CPU_CHUNK, N) if xp is np else N
    buf = xp.empty((B, OH, OW, KH, KW, C), dtype=x_pad.dtype) if out is None else None
    windows = _windows(x_pad, KH, KW, SH, SW)  # one view for the batch, sliced per chunk (as_strided costs ~10 us)
    for i in range(0, N, B):
        col = buf[: min(B, N - i)] if out is None else out[i : i + B]
        col[...] = windows[i : i + B]
        yield i, col


def _conv_channels_last(x_pad, W_mat, b, KH: int, KW: int, SH: int, SW: int, keep_columns: bool = False, PH: int = 0):
    """Channels-last convolution of an already padded input.

    Args:
        x_pad: (N, HP, WP, C) padded input (PH rows of zeros at the top and at the bottom).
        W_mat: (KH*KW*C, OC), W_mat[(kh, kw, c), oc].
        b: (OC,) or None.
        keep_columns: also return every chunk's columns, written into one (N, OH, OW, KH, KW, C) array.
    Returns:
        y: (N, OH, OW, OC) with y[n, oh, ow, :] = col[n, oh, ow] W_mat + b; and the columns, or None.
    """
    xp = get_array_module(x_pad)
    if xp is np and (SH, SW) == (1, 1) and not keep_columns:
        return _conv_shifted_rows(x_pad, W_mat, b, KH, KW, PH), None
    N, HP, WP, C = x_pad.shape
    OC = W_mat.shape[1]
    OH, OW = (HP - KH) // SH + 1, (WP - KW) // SW + 1
    y = xp.empty((N, OH, OW, OC), dtype=x_pad.dtype)
    cols = xp.empty((N, OH, OW, KH, KW, C), dtype=x_pad.dtype) if keep_columns else None
    b_image = _bias_per_image(b, OH * OW)
    for i, col in _chunks(x_pad, OH, OW, KH, KW, SH, SW, out=cols):
        y_c = y[i : i + len(col)].reshape(-1, OC)
        # y = col W_mat: one GEMM per chunk, written straight into its rows of y
        xp.matmul(col.reshape(-1, KH * KW * C), W_mat, out=y_c)
        if b is not None:
            y_images = y[i : i + len(col)].reshape(len(col), -1)  # (images, OH*OW*OC), a view
            y_images += b_image  # while the chunk is still in cache
    return y, cols


def _bias_per_image(b, pixels: int):
    """(OC,) -> (pixels*OC,), b repeated once per output pixel (None stays None).

    Adding this to an image's channels-last output, (OH*OW*OC,) values, is the same sum as adding b to each of its
    OH*OW rows, but NumPy then runs one long loop instead of OH*OW loops of OC values: 2.5x faster for DANN's first
    convolution (0.020 against 0.055 ms per chunk of 4 images).
    """
    return None if b is None else get_array_module(b).tile(b, pixels)


def _row_windows(x_pad, KW: int):
    """Every input row's windows along the width, as a view (HP, N, OW, KW, C) of x_pad (N, HP, WP, C).

    windows[h, i, ow, kw, c] = x_pad[i, h, ow + kw, c]: the input row outermost.
    """
    N, HP, WP, C = x_pad.shape
    sN, sH, sW, sC = x_pad.strides
    # stepping h or i moves one row or one image of x_pad, stepping ow or kw one pixel: a view until assigned
    return np.lib.stride_tricks.as_strided(x_pad, (HP, N, WP - KW + 1, KW, C), (sH, sN, sW, sW, sC))


def _unfold_rows(windows, buf):
    """Copy a chunk of images' width-unfolded rows into a buffer: the CPU's stride-1 route.

    Args:
        windows: (H, n, OW, KW, C), a slice [h0 : h0 + H, i : i + n] of _row_windows(x_pad, KW): H input rows
            (all HP, or only those that are not padding), n images.
        buf: a flat buffer of at least H*n*OW*KW*C entries.
    Returns:
        R: (H*n*OW, KW*C), a view of ``buf``: R[(h, i, ow), (kw, c)] = x_pad[i, h0 + h, ow + kw, c].
    """
    H, n, OW, KW, C = windows.shape
    rows = buf[: windows.size].reshape(windows.shape)
    rows[...] = windows
    return rows.reshape(H * n * OW, KW * C)


def _kernel_row_views(R, KH: int, L: int):
    """(HP*L, K) -> a view (KH, OH*L, K), OH = HP - KH + 1: [kh] = R[kh*L : kh*L + OH*L], the rows kernel row kh meets.

    Consecutive views overlap (each starts L rows after the last): one matmul call then runs all KH products.
    """
    rows, K = R.shape
    s_row, s_col = R.strides
    # the view as_strided would make, built directly on R's memory: a few microseconds less of Python per chunk
    # (as_strided goes through __array_interface__), and ndarray still checks that the view stays inside R
    return np.ndarray((KH, rows - (KH - 1) * L, K), R.dtype, buffer=R, strides=(L * s_row, s_row, s_col))


def _conv_shifted_rows(x_pad, W_mat, b, KH: int, KW: int, PH: int = 0):
    """Stride-1 channels-last convolution that unfolds the windows along the width only (the CPU's route).

    Args:
        x_pad: (N, HP, WP, C) padded input; its first and last PH rows are zero padding.
        W_mat: (KH*KW*C, OC), W_mat[(kh, kw, c), oc].
        b: (OC,) or None.
        PH: how many rows of zeros x_pad has at the top and at the bottom (0 is always correct, only slower).
    Returns:
        y: (N, OH, OW, OC), the same as im2col's col W_mat + b.

    For a chunk of n images, ``R[(h, i, ow), (kw, c)] = x_pad[i, h, ow + kw, c]`` (see _unfold_rows) holds the
    KW*C entries of one kernel row for every input row h, KH times less to copy than im2col's columns. One product
    multiplies every row of R by every kernel row at once, with the KH kernel rows side by side as the columns of
    W_cat[(kw, c), (kh, oc)] = W_mat[(kh, kw, c), oc]:

        Z[(h, i, ow), (kh, oc)] = sum_{(kw, c)} R[(h, i, ow), (kw, c)] W_cat[(kw, c), (kh, oc)],

    and output row oh collects kernel row kh's term from input row h = oh + kh:

        Y[(oh, i, ow), oc] = sum_kh Z[(oh + kh, i, ow), (kh, oc)],

    the same multiplications as im2col's product, in another order. The sum is one reduction over a strided view
    of Z (_shifted_sum_view). The padding rows of x_pad are zero, so their rows of Z are zero too: R leaves them
    out, and Z keeps them as zeros written once. Y goes back to image order (n, OH, OW, OC) in one copy that also
    adds the bias. Why one wide product rather than KH narrow ones, one per kernel row: OpenBLAS copies
    (packs) its operands into panels on every call, so KH products over overlapping views of R packed every row of
    R KH times, and a product with KH*OC columns runs closer to the machine's speed than KH with OC columns.
    """
    N, HP, WP, C = x_pad.shape
    OC = W_mat.shape[1]
    OH, OW, H = HP - KH + 1, WP - KW + 1, HP - 2 * PH  # H: the rows of x_pad that are not padding
    W_cat = np.ascontiguousarray(W_mat.reshape(KH, KW * C, OC).transpose(1, 0, 2)).reshape(KW * C, KH * OC)
    y = np.empty((N, OH, OW, OC), dtype=x_pad.dtype)
    B = min(CPU_CHUNK, N)
    rows_buf = np.empty(H * B * OW * KW * C, dtype=x_pad.dtype)
    Z_buf = np.zeros(HP * B * OW * KH * OC, dtype=x_pad.dtype)  # zeros: the padding rows' part of Z
    acc_buf = np.empty(OH * B * OW * OC, dtype=x_pad.dtype)
    b_row = _bias_per_image(b, OW)  # (OW*OC,): b for every pixel of one output row
    windows = _row_windows(x_pad, KW)[PH : PH + H]  # one view for the batch, sliced per chunk
    for i in range(0, N, B):
        n = min(B, N - i)
        L = n * OW  # rows of R per input row
        R = _unfold_rows(windows[:, i : i + n], rows_buf)  # (H*L, KW*C)
        Z = Z_buf[: HP * L * KH * OC].reshape(HP * L, KH * OC)
        if n < B:  # a last, smaller chunk lays Z out anew: its padding rows must be zeros again
            Z[: PH * L] = 0
            Z[(PH + H) * L :] = 0
        np.matmul(R, W_cat, out=Z[PH * L : (PH + H) * L])  # Z[(h, i, ow), (kh, oc)] for the rows that are not padding
        acc = np.add.reduce(_shifted_sum_view(Z, KH, L), axis=0, out=acc_buf[: OH * L * OC].reshape(OH * L, OC))
        by_image = acc.reshape(OH, n, OW * OC).transpose(1, 0, 2)  # (n, OH, OW*OC), a view
        y_c = y[i : i + n].reshape(n, OH, OW * OC)
        if b is None:
            y_c[...] = by_image
        else:
            np.add(by_image, b_row, out=y_c)  # runs of OW*OC values: one long loop per output row
    return y


def _shifted_sum_view(Z, KH: int, L: int):
    """(HP*L, KH*OC) -> a view (KH, OH*L, OC), OH = HP - KH + 1: [kh, oh*L + j, oc] = Z[(oh + kh)*L + j, kh*OC + oc].

    The KH terms of Y[(oh, j), oc] = sum_kh Z[(oh + kh, j), (kh, oc)] stacked along the first axis, so one
    reduction adds them: stepping kh moves one input row (L rows of Z) and one block of OC columns.
    """
    rows, KOC = Z.shape
    OC = KOC // KH
    s_row, s_col = Z.strides
    return np.ndarray((KH, rows - (KH - 1) * L, OC), Z.dtype, buffer=Z, strides=(L * s_row + OC * s_col, s_row, s_col))


def _weight_grad_shifted_rows(x_pad, gy, KH: int, KW: int):
    """Stride-1 weight gradient from width-unfolded rows (the CPU's route): gW_mat^T = gy^T col.

    Args:
        x_pad: (N, HP, WP, C) padded input.
        gy: (N, OH, OW, OC) upstream gradient, channels last (any strides).
    Returns:
        gW_matT: (OC, KH*KW*C), gW_matT[oc, (kh, kw, c)] = sum_{n, oh, ow} gy[n, oh, ow, oc] x_pad[n, oh+kh, ow+kw, c].

    im2col's gW_mat = col^T gy, split by kernel row like the forward product: with R as in _conv_shifted_rows and
    gy in the same (oh, i, ow) row order (one small copy per chunk),

        gW_mat^T[:, (kh, :, :)] = sum over chunks of gy^T @ R[kh*n*OW : kh*n*OW + OH*n*OW],

    so the weight gradient no longer needs im2col's columns either.
    """
    N, HP, WP, C = x_pad.shape
    OH, OW, OC = gy.shape[1:]
    gW_rows = np.zeros((KH, OC, KW * C), dtype=x_pad.dtype)  # gW_rows[kh] = gW_mat^T[:, (kh, :, :)]
    terms = np.empty((KH, OC, KW * C), dtype=x_pad.dtype)
    B = min(CPU_CHUNK, N)
    rows_buf = np.empty(HP * B * OW * KW * C, dtype=x_pad.dtype)
    gy_buf = np.empty(OH * B * OW * OC, dtype=x_pad.dtype)
    windows = _row_windows(x_pad, KW)
    for i in range(0, N, B):
        n = min(B, N - i)
        R = _unfold_rows(windows[:, i : i + n], rows_buf)
        L = n * OW
        G = gy_buf[: OH * L * OC].reshape(OH, n, OW, OC)
        G[...] = gy[i : i + n].transpose(1, 0, 2, 3)  # gy[(oh, i, ow), oc], R's row order
        G = G.reshape(OH * L, OC)
        np.matmul(G.T, _kernel_row_views(R, KH, L), out=terms)  # terms[kh] = G^T @ R[kh*L : kh*L + OH*L], (OC, KW*C)
        gW_rows += terms  # summed over the chunks
    return gW_rows.transpose(1, 0, 2).reshape(OC, KH * KW * C)


def conv2d(x, W, b=None, stride=1, pad=0) -> Tensor:
    """x (N, C, H, W) conv W (OC, C, KH, KW) + b (OC,) -> (N, OC, OH, OW); ``stride`` and ``pad`` int or pair."""
    f = Conv2d(stride, pad)
    return f(x, W) if b is None else f(x, W, b)
