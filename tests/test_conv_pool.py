"""conv2d and max_pool2d against naive loop implementations; im2col and col2im are exact adjoints."""

import numpy as np
import pytest

import minidann.functions as F
from minidann.core import Tensor
from minidann.gradcheck import shuffled_linspace

# (N, C, H, W, OC, K, stride, pad): stride 2, pad 0 and 2, non-square inputs, batch 1
CONV_SHAPES = [
    (2, 3, 7, 7, 4, 3, 1, 0),
    (2, 3, 28, 28, 5, 5, 1, 2),
    (1, 2, 9, 6, 3, 3, 2, 0),
    (3, 2, 8, 11, 2, 5, 2, 2),
    (1, 1, 5, 5, 1, 1, 1, 0),
]


def conv2d_naive(x, W, b, stride, pad):
    """Loops over every output pixel: the definition of cross-correlation."""
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = (H + 2 * pad - KH) // stride + 1, (Wd + 2 * pad - KW) // stride + 1
    y = np.zeros((N, OC, OH, OW))
    for n in range(N):
        for oc in range(OC):
            for i in range(OH):
                for j in range(OW):
                    win = xp[n, :, i * stride : i * stride + KH, j * stride : j * stride + KW]
                    y[n, oc, i, j] = np.sum(win * W[oc]) + b[oc]
    return y


def max_pool_naive(x, k, s):
    N, C, H, W = x.shape
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            y[:, :, i, j] = x[:, :, i * s : i * s + k, j * s : j * s + k].max(axis=(2, 3))
    return y


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_conv2d_forward_matches_naive(shape):
    N, C, H, W, OC, K, s, p = shape
    rng = np.random.default_rng(0)
    x, Wt, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((OC, C, K, K)), rng.standard_normal(OC)
    y = F.conv2d(x, Wt, b, stride=s, pad=p).data
    np.testing.assert_allclose(y, conv2d_naive(x, Wt, b, s, p), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_im2col_col2im_are_exact_adjoints(shape):
    N, C, H, W, _, K, s, p = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W))
    col = F.im2col(x, K, K, s, s, p, p)
    c = rng.standard_normal(col.shape)
    lhs = np.vdot(col, c)  # <im2col(x), c>
    rhs = np.vdot(x, F.col2im(c, x.shape, s, s, p, p))  # <x, col2im(c)>
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("shape,k,s", [((2, 3, 6, 4), 2, 2), ((1, 2, 7, 5), 3, 2), ((2, 2, 5, 5), 2, 2),
                                      ((1, 1, 6, 6), 3, 3), ((2, 4, 28, 28), 2, 2)], ids=str)
def test_max_pool_forward_matches_naive(shape, k, s):
    x = shuffled_linspace(np.random.default_rng(0), shape)
    np.testing.assert_array_equal(F.max_pool2d(x, k, s).data, max_pool_naive(x, k, s))


@pytest.mark.parametrize("shape,k,s", [((2, 3, 4, 4), 2, 2), ((1, 2, 7, 5), 3, 2)], ids=str)
def test_max_pool_ties_send_gradient_to_exactly_one_winner(shape, k, s):
    # All-zero input (as after a ReLU): every window is a tie; each output's gradient must go to one input.
    x = Tensor(np.zeros(shape), requires_grad=True)
    y = F.max_pool2d(x, k, s)
    gy = np.random.default_rng(0).standard_normal(y.shape)
    y.backward(gy)
    assert x.grad.sum() == pytest.approx(gy.sum())  # nothing duplicated, nothing lost
    if k == s:  # non-overlapping: exactly one nonzero per window
        assert np.count_nonzero(x.grad) == np.count_nonzero(gy)


def test_conv_keeps_float32():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), requires_grad=True)
    W = Tensor(rng.standard_normal((4, 3, 5, 5)).astype(np.float32), requires_grad=True)
    b = Tensor(np.zeros(4, np.float32), requires_grad=True)
    y = F.max_pool2d(F.relu(F.conv2d(x, W, b, pad=2)))
    assert y.dtype == np.float32
    F.mean(y).backward()
    assert x.grad.dtype == W.grad.dtype == b.grad.dtype == np.float32


def test_input_gradient_is_skipped_when_not_required():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 1, 4, 4)))  # data: requires_grad False
    W = Tensor(rng.standard_normal((1, 1, 3, 3)), requires_grad=True)
    F.sum(F.conv2d(x, W)).backward()
    assert x.grad is None and W.grad is not None


@pytest.mark.parametrize("shape", [(2, 3, 7, 7, 4, 3, 0), (2, 3, 8, 6, 5, 5, 2), (1, 2, 6, 9, 3, 3, 1),
                                   (2, 4, 5, 5, 3, 1, 0), (1, 2, 6, 6, 2, 5, 4), (1, 2, 4, 5, 2, 3, 3)], ids=str)
def test_input_gradient_routes_agree(shape):
    # Stride 1 computes gx as a convolution of gy with the flipped kernel; any stride can use col2im. Both are
    # the same linear map of gy: compare them on a random gy (float64, so they agree to rounding).
    from minidann.functions.conv import Conv2d

    N, C, H, W, OC, K, p = shape
    rng = np.random.default_rng(2)
    f = Conv2d(1, p)
    y = f.forward(rng.standard_normal((N, C, H, W)), rng.standard_normal((OC, C, K, K)))
    gy = rng.standard_normal(y.shape)
    routes = [f._input_grad_col2im(gy.transpose(0, 2, 3, 1).reshape(-1, OC), *y.shape[2:])]
    if p < K:  # the flipped route pads gy by K - 1 - p, so it needs p < K
        routes.append(f._input_grad_flipped(gy.transpose(0, 2, 3, 1)))
        np.testing.assert_allclose(routes[1], routes[0], rtol=1e-12, atol=1e-12)
    # and both are the vector-Jacobian product: <gy, conv(x')> == <x', gx> for any x' (conv is linear in x)
    x2 = rng.standard_normal((N, C, H, W))
    assert np.vdot(gy, f.forward(x2, f.W)) == pytest.approx(np.vdot(x2, routes[-1]), rel=1e-10)


def test_max_pool_backward_same_for_any_memory_order_of_gy():
    # x channels-last in memory (as conv2d returns it), gy once C-contiguous (as Flatten's backward hands it
    # over) and once channels-last: pool aligns gy's layout for speed, which must not change a value.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 8, 4)).transpose(0, 3, 1, 2)  # (N, C, H, W) view of (N, H, W, C)
    gy = rng.standard_normal((3, 4, 3, 4))
    grads = []
    for g in (gy, np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)):
        xt = Tensor(x, requires_grad=True)
        F.max_pool2d(xt, 2, 2).backward(g)
        grads.append(xt.grad)
    np.testing.assert_array_equal(grads[0], grads[1])
    # each 2x2 window's gradient sums to its gy: one winner, nothing lost
    np.testing.assert_allclose(grads[0].reshape(3, 4, 3, 2, 4, 2).sum(axis=(3, 5)), gy, rtol=0, atol=0)


def test_kept_columns_and_re_unfolded_columns_give_the_same_weight_gradient():
    # Forward keeps the columns for backward only when the unfold copies runs shorter than a cache line (conv1 of
    # DANN: KW*C = 15 float32) and W needs a gradient; otherwise backward unfolds x_pad again. Same gW either way.
    from minidann.core import no_grad
    from minidann.functions.conv import Conv2d

    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 3, 10, 8)).astype(np.float32)  # 9 images: chunks of 4, 4 and 1
    W = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    f = Conv2d(1, 2)
    f.needs_grad = (False, True)
    y = f.forward(x, W)
    assert f.col is not None and f.col.shape == (9, 10, 8, 5, 5, 3)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    _, gW_kept = f.backward(gy)
    f.col = None
    _, gW_unfolded = f.backward(gy)
    # float32 sums of 720 products, added in another order by each route: equal to rounding at gW's scale
    np.testing.assert_allclose(gW_kept, gW_unfolded, rtol=1e-5, atol=1e-5 * np.abs(gW_kept).max())
    # not kept: wide runs (C = 32), no gradient wanted for W, or no graph being recorded
    for C, needs, grad in ((32, (False, True), True), (3, (True, False), True), (3, (False, True), False)):
        g = Conv2d(1, 2)
        g.needs_grad = needs
        xc = rng.standard_normal((2, C, 6, 6)).astype(np.float32)
        Wc = rng.standard_normal((4, C, 5, 5)).astype(np.float32)
        if grad:
            g.forward(xc, Wc)
        else:
            with no_grad():
                g.forward(xc, Wc)
        assert g.col is None, (C, needs, grad)


@pytest.mark.parametrize("PH", [0, 2])
@pytest.mark.parametrize("shape", [(9, 2, 7, 10, 3, 3, 5), (5, 32, 18, 18, 48, 5, 5), (1, 1, 5, 4, 2, 1, 1),
                                   (6, 3, 6, 9, 4, 5, 2)], ids=str)
def test_shifted_rows_route_equals_im2col_product(shape, PH):
    # The CPU's stride-1 convolution unfolds along the width only and multiplies every input row by all KH kernel
    # rows in one product, then adds row-shifted terms; im2col (kept columns) does one product over all KH*KW*C
    # entries. The same sums, so they agree to rounding in float64, also when the batch is not a multiple of the
    # chunk size (9 images: chunks of 4, 4, 1, whose Z is laid out anew) and when the route leaves out PH rows of
    # zero padding at the top and at the bottom.
    from minidann.functions.conv import _conv_channels_last, _conv_shifted_rows

    N, C, HP, WP, OC, KH, KW = shape
    rng = np.random.default_rng(4)
    x_pad = rng.standard_normal((N, HP, WP, C))
    x_pad[:, :PH] = x_pad[:, HP - PH :] = 0  # the padding rows the route is told about
    W_mat = rng.standard_normal((KH * KW * C, OC))
    b = rng.standard_normal(OC)
    y_rows = _conv_shifted_rows(x_pad, W_mat, b, KH, KW, PH)
    y_im2col, cols = _conv_channels_last(x_pad, W_mat, b, KH, KW, 1, 1, keep_columns=True)
    assert cols is not None  # the im2col route really ran
    assert y_rows.shape == (N, HP - KH + 1, WP - KW + 1, OC)
    np.testing.assert_allclose(y_rows, y_im2col, rtol=1e-12, atol=1e-12)
    # and the stride-1 default route on the CPU is the shifted-rows one
    y_default, none = _conv_channels_last(x_pad, W_mat, None, KH, KW, 1, 1, PH=PH)
    assert none is None
    np.testing.assert_allclose(y_default + b, y_im2col, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(9, 2, 7, 10, 3, 3, 5), (5, 32, 18, 18, 48, 5, 5), (1, 1, 4, 4, 2, 1, 1),
                                   (6, 3, 6, 9, 4, 5, 2)], ids=str)
def test_weight_gradient_by_shifted_rows_equals_im2col_product(shape, monkeypatch):
    # gW_mat^T = gy^T col, split by kernel row over the width-unfolded rows: the same sums as im2col's product,
    # for a gy in the memory order backward hands it over (a transposed view) and batches of 9 (chunks 4, 4, 1).
    from minidann.functions import conv

    N, C, HP, WP, OC, KH, KW = shape
    OH, OW = HP - KH + 1, WP - KW + 1
    rng = np.random.default_rng(5)
    x_pad = rng.standard_normal((N, HP, WP, C))
    gy = rng.standard_normal((N, OC, OH, OW)).transpose(0, 2, 3, 1)  # (N, OH, OW, OC), not contiguous
    col = np.empty((N, OH, OW, KH, KW, C))
    conv._unfold_into(col, x_pad, 1, 1)
    expected = gy.reshape(-1, OC).T @ col.reshape(-1, KH * KW * C)
    np.testing.assert_allclose(conv._weight_grad_shifted_rows(x_pad, gy, KH, KW), expected, rtol=1e-12, atol=1e-12)
    # and Conv2d.backward takes this route on the CPU for stride 1, unless forward kept its columns (float64 keeps
    # them when KW*C < 8, the last two shapes; the route's own result is checked above for all four)
    calls = []
    route = conv._weight_grad_shifted_rows
    monkeypatch.setattr(conv, "_weight_grad_shifted_rows", lambda *a: calls.append(1) or route(*a))
    f = conv.Conv2d(1, 0)
    f.needs_grad = (False, True)
    W = rng.standard_normal((OC, C, KH, KW))
    f.forward(np.ascontiguousarray(x_pad.transpose(0, 3, 1, 2)), W)
    _, gW = f.backward(np.ascontiguousarray(gy.transpose(0, 3, 1, 2)))
    assert calls == [1] or f.col is not None
    np.testing.assert_allclose(gW, expected.reshape(OC, KH, KW, C).transpose(0, 3, 1, 2), rtol=1e-12, atol=1e-12)
