"""The reference conv2d and max_pool2d (minidann.functions) against naive loop implementations, forward and
backward; im2col and col2im are exact adjoints. (The fast kernels are tested against these in test_fast_kernels.py.)"""

import numpy as np
import pytest

import minidann.functions as F
from minidann.core import Tensor
from minidann.gradcheck import shuffled_linspace

# (N, C, H, W, OC, KH, KW, stride, pad): stride 1 and 2, pad 0, 1 and 2, pad >= kernel, non-square inputs and
# kernels, different strides along H and W, batch 1, 1x1 kernels
CONV_SHAPES = [
    (2, 3, 7, 7, 4, 3, 3, 1, 0),
    (2, 3, 28, 28, 5, 5, 5, 1, 2),
    (1, 2, 9, 6, 3, 3, 3, 2, 0),
    (3, 2, 8, 11, 2, 5, 5, 2, 2),
    (1, 1, 5, 5, 1, 1, 1, 1, 0),
    (2, 2, 6, 7, 3, 2, 3, (2, 1), (1, 2)),
    (1, 2, 4, 4, 2, 2, 2, 1, 3),
    (2, 3, 10, 9, 2, 4, 2, 3, 1),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


def conv2d_naive(x, W, b, stride, pad):
    """Loops over every output pixel: the definition of cross-correlation (CS231n's conv_forward_naive)."""
    (SH, SW), (PH, PW) = _pair(stride), _pair(pad)
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    OH, OW = (H + 2 * PH - KH) // SH + 1, (Wd + 2 * PW - KW) // SW + 1
    y = np.zeros((N, OC, OH, OW))
    for n in range(N):
        for oc in range(OC):
            for i in range(OH):
                for j in range(OW):
                    win = x_pad[n, :, i * SH : i * SH + KH, j * SW : j * SW + KW]
                    y[n, oc, i, j] = np.sum(win * W[oc]) + b[oc]
    return y


def conv2d_backward_naive(gy, x, W, stride, pad):
    """Every output pixel sends gy back along the products it was made of (CS231n's conv_backward_naive)."""
    (SH, SW), (PH, PW) = _pair(stride), _pair(pad)
    N, C, H, Wd = x.shape
    OC, _, KH, KW = W.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    gx_pad, gW = np.zeros_like(x_pad), np.zeros_like(W)
    for n in range(N):
        for oc in range(OC):
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    rows, cols = slice(i * SH, i * SH + KH), slice(j * SW, j * SW + KW)
                    gW[oc] += gy[n, oc, i, j] * x_pad[n, :, rows, cols]
                    gx_pad[n, :, rows, cols] += gy[n, oc, i, j] * W[oc]
    return gx_pad[:, :, PH : PH + H, PW : PW + Wd], gW, gy.sum(axis=(0, 2, 3))


def im2col_naive(x, KH, KW, SH, SW, PH, PW):
    N, C, H, W = x.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    col = np.zeros((N, OH, OW, KH, KW, C))
    for i in range(OH):
        for j in range(OW):
            for u in range(KH):
                for v in range(KW):
                    col[:, i, j, u, v, :] = x_pad[:, :, i * SH + u, j * SW + v]
    return col


def max_pool_naive(x, k, s):
    N, C, H, W = x.shape
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            y[:, :, i, j] = x[:, :, i * s : i * s + k, j * s : j * s + k].max(axis=(2, 3))
    return y


def max_pool_backward_naive(gy, x, k, s):
    """Each window's gy goes to its first maximum in row-major order; overlapping windows add up."""
    gx = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    win = x[n, c, i * s : i * s + k, j * s : j * s + k]
                    u, v = np.unravel_index(np.argmax(win), win.shape)
                    gx[n, c, i * s + u, j * s + v] += gy[n, c, i, j]
    return gx


def _conv_inputs(shape, seed):
    N, C, H, W, OC, KH, KW, s, p = shape
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, C, H, W)), rng.standard_normal((OC, C, KH, KW)), rng.standard_normal(OC), rng


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_conv2d_forward_matches_naive(shape):
    x, W, b, _ = _conv_inputs(shape, 0)
    s, p = shape[-2:]
    y = F.conv2d(x, W, b, stride=s, pad=p).data
    np.testing.assert_allclose(y, conv2d_naive(x, W, b, s, p), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_conv2d_backward_matches_naive(shape):
    x, W, b, rng = _conv_inputs(shape, 1)
    s, p = shape[-2:]
    xt, Wt, bt = (Tensor(a, requires_grad=True) for a in (x, W, b))
    y = F.conv2d(xt, Wt, bt, stride=s, pad=p)
    gy = rng.standard_normal(y.shape)
    y.backward(gy)
    for got, want in zip((xt.grad, Wt.grad, bt.grad), conv2d_backward_naive(gy, x, W, s, p), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_im2col_matches_naive_and_col2im_is_its_exact_adjoint(shape):
    N, C, H, W, _, KH, KW, s, p = shape
    (SH, SW), (PH, PW) = _pair(s), _pair(p)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, C, H, W))
    col = F.im2col(x, KH, KW, SH, SW, PH, PW)
    np.testing.assert_array_equal(col, im2col_naive(x, KH, KW, SH, SW, PH, PW))
    c = rng.standard_normal(col.shape)
    lhs = np.vdot(col, c)  # <im2col(x), c>
    rhs = np.vdot(x, F.col2im(c, x.shape, SH, SW, PH, PW))  # <x, col2im(c)>
    assert lhs == pytest.approx(rhs, rel=1e-12)


POOL_SHAPES = [((2, 3, 6, 4), 2, 2), ((1, 2, 7, 5), 3, 2), ((2, 2, 5, 5), 2, 2), ((1, 1, 6, 6), 3, 3),
               ((2, 4, 28, 28), 2, 2), ((1, 2, 6, 7), 2, 1), ((1, 2, 7, 7), 2, 3)]


@pytest.mark.parametrize("shape,k,s", POOL_SHAPES, ids=str)
def test_max_pool_forward_and_backward_match_naive(shape, k, s):
    x = shuffled_linspace(np.random.default_rng(0), shape)
    xt = Tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, k, s)
    np.testing.assert_array_equal(y.data, max_pool_naive(x, k, s))
    gy = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(gy)
    np.testing.assert_allclose(xt.grad, max_pool_backward_naive(gy, x, k, s), rtol=1e-15, atol=0)


@pytest.mark.parametrize("shape,k,s", [((2, 3, 4, 4), 2, 2), ((1, 2, 7, 5), 3, 2), ((2, 2, 6, 6), 3, 3)], ids=str)
def test_max_pool_ties_send_gradient_to_the_first_maximum_only(shape, k, s):
    # Integer inputs tie often (all-zero ones, as after a ReLU, in every window); each output's gradient must go to
    # exactly one input, the first maximum in row-major window order.
    rng = np.random.default_rng(0)
    for x in (np.zeros(shape), rng.integers(0, 3, shape).astype(float)):
        xt = Tensor(x, requires_grad=True)
        y = F.max_pool2d(xt, k, s)
        gy = rng.standard_normal(y.shape)
        y.backward(gy)
        assert xt.grad.sum() == pytest.approx(gy.sum())  # nothing duplicated, nothing lost
        np.testing.assert_allclose(xt.grad, max_pool_backward_naive(gy, x, k, s), rtol=1e-15, atol=0)


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


def test_bad_stride_padding_and_window_get_clear_errors():
    x, W = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"stride must be >= 1 and pad >= 0"):
        F.conv2d(x, W, stride=0)
    with pytest.raises(ValueError, match=r"stride must be >= 1 and pad >= 0"):
        F.conv2d(x, W, pad=-1)
    with pytest.raises(ValueError, match=r"a 7x7 kernel does not fit input 5x5 with padding 0: pad more"):
        F.conv2d(x, np.zeros((3, 2, 7, 7)))
    with pytest.raises(ValueError, match=r"kernel and stride must be >= 1"):
        F.max_pool2d(x, 2, 0)
    with pytest.raises(ValueError, match=r"a 6x6 window does not fit input 5x5"):
        F.max_pool2d(x, 6, 6)
