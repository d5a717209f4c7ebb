"""Fast conv2d: the function of the reference :mod:`minidann.functions.conv`, computed by faster routes.

Notation as there. Which route each part of a convolution takes depends on the device, the shapes, the stride and
padding, and whether W needs a gradient, never on the dtype (so a float64 gradient check runs the routes float32
training runs); :func:`routes` names them, and tests/test_fast_kernels.py proves each equal to the reference:

    forward      "shifted-rows"    CPU, stride 1: unfold along the width only, one product with all KH kernel
                                   rows side by side, the KH terms of each output row added from shifted views
                 "kept-columns"    W needs a gradient, on a GPU always, on a CPU when KW*C < KEEP_COLUMNS_BELOW:
                                   im2col's columns, kept for backward (a CPU writes them CPU_CHUNK images at a
                                   time, a GPU the whole batch in one product)
                 "im2col-chunks"   CPU, any other stride: im2col and its product CPU_CHUNK images at a time
                 "im2col-batch"    GPU, W needs no gradient: im2col of the whole batch, one product
    input_grad   "flipped-kernel"  stride 1 with PH < KH and PW < KW: gy, padded, convolved with the kernel turned
                                   by 180 degrees (by the forward's stride-1 route of the device: shifted rows on
                                   a CPU, im2col-batch on a GPU)
                 "col2im"          otherwise: gcol = gY W_mat^T as KH*KW stacked products, then col2im
    weight_grad  "kept-columns"    one product gY^T col over the kept columns
                 "shifted-rows"    CPU, stride 1: gY^T times the width-unfolded rows, one product per kernel row
                 "im2col-chunks"   CPU, any other stride: the columns unfolded again, CPU_CHUNK images at a time

(A backward called after a forward that expected no weight gradient, for which routes() says None, computes gW
all the same, unfolding the columns again: shifted rows or im2col chunks on a CPU, the whole batch on a GPU.)

Why channels last inside: with C innermost, the KW x C entries of one kernel row are contiguous in memory
both in the padded input and in ``col``, so im2col moves long contiguous runs instead of single floats. The
API stays (N, C, H, W); only the arrays inside conv2d are channels-last. (Its output is a transposed *view*
of the (N, OH, OW, OC) product, and elementwise ops downstream keep that memory order, so the next conv2d
gets its channels-last input almost for free.)
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..core import Tensor, is_grad_enabled
from ..functions import conv as reference
from ..functions.conv import _pair, col2im, pad_channels_last
from .linear import row_sums

# On the CPU the batch is processed a few images at a time: the columns just written by im2col are then still
# in cache when the matrix product reads them, which halves the time of a DANN-sized conv. A GPU gets the
# whole batch in one product (fewer, larger kernel launches).
CPU_CHUNK = 4  # measured best of 2, 3, 4, 6, 8, 16 at the DANN shapes on a 2-core machine

# Backward needs the columns again for gW. On the CPU re-unfolding them from x_pad usually costs less than keeping
# them (KH*KW times the size of the input) and fetching them back from memory, except when the unfold copies runs
# of KW*C values shorter than a 64-byte cache line of float32 (conv1 of DANN: 5 * 3 values), which is slow per
# byte. The threshold counts values, not bytes, so that float64 takes the same route as float32. A GPU keeps them
# whenever W needs a gradient: its forward writes the whole batch's columns anyway, so keeping them only holds that
# memory until backward (as the reference layer does), and saves backward a kernel and a pass over the columns.
KEEP_COLUMNS_BELOW = 16

#: Every route name :func:`routes` can give, per part of the convolution.
ROUTES = {
    "forward": ("shifted-rows", "kept-columns", "im2col-chunks", "im2col-batch"),
    "input_grad": ("flipped-kernel", "col2im"),
    "weight_grad": ("shifted-rows", "kept-columns", "im2col-chunks"),
}


def routes(x_shape, W_shape, stride=1, pad=0, device: str = "cpu", weight_grad: bool = True) -> dict[str, str | None]:
    """The route each part of a fast conv2d takes, as named in :data:`ROUTES`.

    Args:
        x_shape: (N, C, H, W). W_shape: (OC, C, KH, KW). stride, pad: int or pair, as for :func:`conv2d`.
        device: "cpu" (NumPy arrays) or "gpu" (CuPy arrays).
        weight_grad: whether the forward records a graph in which W needs a gradient (a training step); False
            for a forward under no_grad or with W frozen, which then computes no weight gradient (None).
    Returns:
        {"forward": ..., "input_grad": ..., "weight_grad": ...}.
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"routes: device must be 'cpu' or 'gpu', got {device!r}")
    (SH, SW), (PH, PW) = _pair(stride), _pair(pad)
    return _choose_routes(x_shape[1], *W_shape[2:], SH, SW, PH, PW, device == "cpu", weight_grad)


def _choose_routes(C, KH, KW, SH, SW, PH, PW, cpu: bool, weight_grad: bool) -> dict[str, str | None]:
    """The one place the routes are chosen: Conv2d follows it, :func:`routes` reports it."""
    stride_1 = (SH, SW) == (1, 1)
    keep = weight_grad and (not cpu or KW * C < KEEP_COLUMNS_BELOW)
    unfold = "kept-columns" if keep else "shifted-rows" if cpu and stride_1 else _unfold_route(cpu)
    return {"forward": unfold,
            "input_grad": "flipped-kernel" if stride_1 and PH < KH and PW < KW else "col2im",
            "weight_grad": unfold if weight_grad else None}


def _unfold_route(cpu: bool) -> str:
    return "im2col-chunks" if cpu else "im2col-batch"


def _cpu_routes(xp) -> bool:
    """Whether arrays of ``xp`` take the CPU's routes (NumPy) or the GPU's (CuPy)."""
    return xp is np


class Conv2d(reference.Conv2d):
    """The reference Conv2d's function, by the routes of :func:`routes`.

    Shapes: x (N, C, H, W), W (OC, C, KH, KW), b (OC,) -> y (N, OC, OH, OW).
    """

    def forward(self, x, W, b=None):
        reference.check_conv_args(x, W, b, self.SH, self.SW, self.PH, self.PW)
        N, C, H, Wd = x.shape
        OC, _, KH, KW = W.shape
        weight_grad = is_grad_enabled() and self.needs_grad[1:2] == (True,)
        self.cpu = _cpu_routes(get_array_module(x))
        self.routes = _choose_routes(C, KH, KW, self.SH, self.SW, self.PH, self.PW, self.cpu, weight_grad)
        W_mat = W.transpose(2, 3, 1, 0).reshape(KH * KW * C, OC)  # W_mat[(kh, kw, c), oc]
        x_pad = pad_channels_last(x, self.PH, self.PW)
        y, col = _conv_channels_last(x_pad, W_mat, b, KH, KW, self.SH, self.SW, self.routes["forward"], PH=self.PH)
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
            route = self.routes["weight_grad"]
            if route is None:  # forward was called without a graph for W: its route, less the kept columns
                route = "shifted-rows" if self.cpu and (self.SH, self.SW) == (1, 1) else _unfold_route(self.cpu)
            if route == "kept-columns":  # columns kept by forward: one product over the whole batch
                gW_matT = gy_mat.T @ self.col.reshape(-1, KH * KW * C)
            elif route == "shifted-rows":  # the CPU's stride-1 route: no im2col columns
                gW_matT = _weight_grad_shifted_rows(self.x_pad, gy_cl, KH, KW)
            elif route == "im2col-chunks":
                gW_matT = xp.zeros((OC, KH * KW * C), dtype=gy.dtype)
                for i, col in _chunks(self.x_pad, OH, OW, KH, KW, self.SH, self.SW):
                    # gW_mat = col^T gy, summed over the chunks; computed transposed, (gy^T col), which BLAS runs
                    # faster for these shapes (the long N*OH*OW axis is the contracted one either way)
                    gW_matT += gy_mat[i * OH * OW : (i + len(col)) * OH * OW].T @ col.reshape(-1, KH * KW * C)
            else:  # "im2col-batch": the whole batch is one chunk, so its product is the whole sum
                [(_, col)] = _chunks(self.x_pad, OH, OW, KH, KW, self.SH, self.SW)
                gW_matT = gy_mat.T @ col.reshape(-1, KH * KW * C)
            # gW_mat^T[oc, (kh, kw, c)] back to W's layout (OC, C, KH, KW), copied contiguous on the CPU. A GPU
            # hands on the transposed view, as the reference does: CuPy's kernels read it as it is, and the
            # optimiser copies every gradient into its flat buffer anyway, so a copy here would be a launch more.
            gW = gW_matT.reshape(OC, KH, KW, C).transpose(0, 3, 1, 2)
            if self.cpu:
                gW = xp.ascontiguousarray(gW)
        if need_x:
            if self.routes["input_grad"] == "flipped-kernel":
                gx = self._input_grad_flipped(gy_cl)
            else:
                gx = self._input_grad_col2im(gy_mat, OH, OW)
        if need_b and not self.cpu:  # gb[oc] = sum over n, oh, ow of gy: one reduction kernel on a GPU
            gb = row_sums(gy_mat, self, 2)  # (into b's gradient slot, when it has one)
        elif need_b:
            # On the CPU, as the product 1^T gy_mat: one BLAS call, several times faster than NumPy's row-by-row
            # gy_mat.sum(axis=0) on a tall, narrow matrix (0.1 against 0.7 ms for conv1). (A GPU would launch two
            # kernels for it, the ones and the product.)
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
        route = "shifted-rows" if self.cpu else "im2col-batch"  # the device's stride-1 route, no columns kept
        gx, _ = _conv_channels_last(gy_pad, W_flip_mat, None, KH, KW, 1, 1, route, PH=KH - 1 - self.PH)  # (N, H, W, C)
        return gx.transpose(0, 3, 1, 2)


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


def _chunks(x_pad, OH: int, OW: int, KH: int, KW: int, SH: int, SW: int, out=None):
    """Yield (i, col), col (B, OH, OW, KH, KW, C) the columns of images i .. i+B-1 of x_pad.

    The chunks share one reused buffer, or are the slices out[i : i+B] of ``out`` (N, OH, OW, KH, KW, C) when given.
    """
    xp = get_array_module(x_pad)
    N, C = x_pad.shape[0], x_pad.shape[3]
    B = min(CPU_CHUNK, N) if _cpu_routes(xp) else N  # the GPU's im2col-batch: one chunk, the whole batch
    buf = xp.empty((B, OH, OW, KH, KW, C), dtype=x_pad.dtype) if out is None else None
    windows = _windows(x_pad, KH, KW, SH, SW)  # one view for the batch, sliced per chunk (as_strided costs ~10 us)
    for i in range(0, N, B):
        col = buf[: min(B, N - i)] if out is None else out[i : i + B]
        col[...] = windows[i : i + B]
        yield i, col


def _conv_channels_last(x_pad, W_mat, b, KH: int, KW: int, SH: int, SW: int, route: str, PH: int = 0):
    """Channels-last convolution of an already padded input, by one of the forward routes of :data:`ROUTES`.

    Args:
        x_pad: (N, HP, WP, C) padded input (PH rows of zeros at the top and at the bottom).
        W_mat: (KH*KW*C, OC), W_mat[(kh, kw, c), oc].
        b: (OC,) or None.
        route: "shifted-rows" (NumPy, stride 1 only); "kept-columns" also returns every chunk's columns, written
            into one (N, OH, OW, KH, KW, C) array; "im2col-chunks" or "im2col-batch" (the chunk size follows
            the device).
    Returns:
        y: (N, OH, OW, OC) with y[n, oh, ow, :] = col[n, oh, ow] W_mat + b; and the columns, or None.
    """
    xp = get_array_module(x_pad)
    if route == "shifted-rows":
        return _conv_shifted_rows(x_pad, W_mat, b, KH, KW, PH), None
    keep_columns = route == "kept-columns"
    N, HP, WP, C = x_pad.shape
    OC = W_mat.shape[1]
    OH, OW = (HP - KH) // SH + 1, (WP - KW) // SW + 1
    y = xp.empty((N, OH, OW, OC), dtype=x_pad.dtype)
    cols = xp.empty((N, OH, OW, KH, KW, C), dtype=x_pad.dtype) if keep_columns else None
    cpu = _cpu_routes(xp)
    b_image = _bias_per_image(b, OH * OW) if cpu else None
    for i, col in _chunks(x_pad, OH, OW, KH, KW, SH, SW, out=cols):
        y_c = y[i : i + len(col)].reshape(-1, OC)
        # y = col W_mat: one GEMM per chunk, written straight into its rows of y
        xp.matmul(col.reshape(-1, KH * KW * C), W_mat, out=y_c)
        if b is not None and cpu:
            y_images = y[i : i + len(col)].reshape(len(col), -1)  # (images, OH*OW*OC), a view
            y_images += b_image  # while the chunk is still in cache
        elif b is not None:
            y_c += b  # a GPU adds b to every row in one kernel (the tiled b would take a kernel of its own)
    return y, cols


def _bias_per_image(b, pixels: int):
    """(OC,) -> (pixels*OC,), b repeated once per output pixel (None stays None): the CPU's bias.

    Adding this to an image's channels-last output, (OH*OW*OC,) values, is the same sum as adding b to each of its
    OH*OW rows, but NumPy then runs one long loop instead of OH*OW loops of OC values: 2.5x faster for DANN's first
    convolution (0.020 against 0.055 ms per chunk of 4 images). A GPU adds b broadcast over the rows instead.
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
    """:func:`minidann.functions.conv2d` by the fast routes: x (N, C, H, W), W (OC, C, KH, KW), b (OC,) -> y."""
    f = Conv2d(stride, pad)
    return f(x, W) if b is None else f(x, W, b)
