"""Every route of the fast kernels (minidann.fast) computes the function of the reference ops (minidann.functions):
forward and every gradient, tight in float64 and within float32 rounding, on the DANN shapes and on others; every
route, fast and reference, passes the float64 gradient check; and every route name has a case here."""

import itertools

import numpy as np
import pytest
from conftest import DEVICES

import minidann
import minidann.functions as F
from minidann import dispatch
from minidann.backend import to_device, to_numpy
from minidann.core import Tensor, no_grad
from minidann.fast import conv as fast_conv
from minidann.fast import pool as fast_pool
from minidann.gradcheck import check_backward, shuffled_linspace

# (N, C, H, W, OC, KH, KW, stride, pad). N = 9 runs CPU_CHUNK = 4 images at a time in chunks of 4, 4 and 1.
CONV_CASES = {
    "dann-conv1": (9, 3, 28, 28, 32, 5, 5, 1, 2),  # KW*C = 15: kept columns, flipped kernel
    "dann-conv2": (9, 32, 14, 14, 48, 5, 5, 1, 2),  # shifted rows, flipped kernel
    "shifted-pad0": (5, 4, 7, 10, 3, 3, 5, 1, 0),
    "shifted-pad-ge-kernel": (3, 8, 4, 5, 3, 2, 2, 1, 2),  # stride 1, PH >= KH: col2im
    "shifted-1x1": (2, 16, 5, 4, 2, 1, 1, 1, 0),
    "kept-stride1": (6, 2, 6, 9, 4, 5, 5, 1, (2, 1)),  # KW*C = 10: kept in float32 and float64 alike
    "kept-stride2": (5, 3, 9, 8, 2, 3, 3, 2, 1),  # kept columns, col2im
    "chunks-stride2": (9, 6, 11, 10, 5, 3, 3, 2, 1),  # im2col chunks, col2im
    "chunks-stride-2x1": (5, 8, 9, 7, 3, 3, 2, (2, 1), (0, 1)),
    "chunks-wide-kernel": (2, 5, 8, 8, 3, 4, 4, 3, 2),
}

# The GPU's routes, run on NumPy (see gpu_routes): the whole batch in one im2col product.
GPU_CASES = ["dann-conv1", "dann-conv2", "chunks-stride2", "shifted-pad-ge-kernel"]


@pytest.fixture
def gpu_routes(monkeypatch):
    """Make NumPy arrays take the routes CuPy arrays take, so a machine without a GPU tests those routes too."""
    monkeypatch.setattr(fast_conv, "_cpu_routes", lambda xp: False)


def _conv_inputs(case, dtype, seed=0):
    N, C, H, W, OC, KH, KW, _, _ = CONV_CASES[case]
    rng = np.random.default_rng(seed)
    x, Wt, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((OC, C, KH, KW)), rng.standard_normal(OC)
    return x.astype(dtype), Wt.astype(dtype), b.astype(dtype), rng


def _run_conv(Function, x, W, b, stride, pad, gy, gy_layout="C"):
    """y, gx, gW, gb and the Function object of one conv2d call with a backward pass."""
    f = Function(stride, pad)
    xt, Wt, bt = (Tensor(a, requires_grad=True) for a in (x, W, b))
    y = f(xt, Wt, bt)
    if gy_layout == "channels-last":  # as a channels-last op downstream hands it over
        gy = np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    y.backward(gy)
    return y.data, xt.grad, Wt.grad, bt.grad, f


def _assert_close_tight(got, want):
    # float64: the routes add the same products in another order, so they agree to rounding
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def _assert_close_float32(got, want):
    # float32 against the float64 reference: sums of up to 800 products in float32, at the scale of the result
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def _expected_routes(case, device="cpu", weight_grad=True):
    N, C, H, W, OC, KH, KW, s, p = CONV_CASES[case]
    return fast_conv.routes((N, C, H, W), (OC, C, KH, KW), s, p, device, weight_grad)


@pytest.mark.parametrize("gy_layout", ["C", "channels-last"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_fast_conv_equals_reference_float64(case, gy_layout):
    x, W, b, _ = _conv_inputs(case, np.float64)
    s, p = CONV_CASES[case][-2:]
    gy = np.random.default_rng(7).standard_normal(F.conv2d(x, W, b, s, p).shape)
    ref = _run_conv(F.conv.Conv2d, x, W, b, s, p, gy)
    fast = _run_conv(fast_conv.Conv2d, x, W, b, s, p, gy, gy_layout)
    assert fast[4].routes == _expected_routes(case)  # routes() says what ran
    assert (fast[4].col is not None) == (fast[4].routes["forward"] == "kept-columns")
    for got, want in zip(fast[:4], ref[:4], strict=True):
        _assert_close_tight(got, want)


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_fast_conv_equals_reference_within_float32_rounding(case):
    x, W, b, _ = _conv_inputs(case, np.float32)
    s, p = CONV_CASES[case][-2:]
    gy = np.random.default_rng(7).standard_normal(F.conv2d(x, W, b, s, p).shape).astype(np.float32)
    ref = _run_conv(F.conv.Conv2d, *(a.astype(np.float64) for a in (x, W, b)), s, p, gy.astype(np.float64))
    fast = _run_conv(fast_conv.Conv2d, x, W, b, s, p, gy)
    assert fast[4].routes == _expected_routes(case)  # the same routes as in float64: the dtype does not choose
    for got, want in zip(fast[:4], ref[:4], strict=True):
        _assert_close_float32(got, want)


@pytest.mark.parametrize("case", GPU_CASES)
def test_gpu_routes_equal_reference(case, gpu_routes):
    x, W, b, _ = _conv_inputs(case, np.float64)
    s, p = CONV_CASES[case][-2:]
    gy = np.random.default_rng(7).standard_normal(F.conv2d(x, W, b, s, p).shape)
    ref = _run_conv(F.conv.Conv2d, x, W, b, s, p, gy)
    fast = _run_conv(fast_conv.Conv2d, x, W, b, s, p, gy)
    assert fast[4].routes == _expected_routes(case, "gpu")
    for got, want in zip(fast[:4], ref[:4], strict=True):
        _assert_close_tight(got, want)


# Which of x, W, b need a gradient (None: no bias): every branch of backward, and the forward with and without b
NEEDS = {"all": (True, True, True), "no-bias": (True, True, None), "W-frozen": (True, False, True),
         "x-frozen": (False, True, True), "b-only": (False, False, True)}


@pytest.mark.parametrize("needs", list(NEEDS))
@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("case", GPU_CASES)
def test_fast_conv_equals_reference_with_or_without_bias_and_each_gradient(case, device, needs, monkeypatch):
    if device == "gpu":
        monkeypatch.setattr(fast_conv, "_cpu_routes", lambda xp: False)  # as the gpu_routes fixture does
    x, W, b, _ = _conv_inputs(case, np.float64)
    s, p = CONV_CASES[case][-2:]
    arrays, flags = zip(*[(a, r) for a, r in zip((x, W, b), NEEDS[needs], strict=True) if r is not None],
                        strict=True)
    gy = np.random.default_rng(7).standard_normal(F.conv2d(x, W, b, s, p).shape)
    results = []
    for Function in (F.conv.Conv2d, fast_conv.Conv2d):
        f = Function(s, p)
        inputs = [Tensor(a, requires_grad=r) for a, r in zip(arrays, flags, strict=True)]
        y = f(*inputs)
        y.backward(gy)
        results.append([y.data] + [t.grad for t in inputs])
    assert f.routes == _expected_routes(case, device, weight_grad=flags[1])
    assert (f.col is not None) == (f.routes["forward"] == "kept-columns")
    for got, want, flag in zip(*results, (True,) + flags, strict=True):
        if flag:
            _assert_close_tight(got, want)
        else:
            assert got is None and want is None


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("case", ["dann-conv1", "dann-conv2", "chunks-stride2"])
def test_a_backward_after_a_forward_without_graph_unfolds_the_columns_again(case, device, monkeypatch):
    # backward called by hand after a forward under no_grad, which expected no weight gradient and kept no
    # columns: gW by the device's unfolding route (shifted rows or im2col chunks on a CPU, im2col-batch on a GPU)
    if device == "gpu":
        monkeypatch.setattr(fast_conv, "_cpu_routes", lambda xp: False)
    x, W, b, _ = _conv_inputs(case, np.float64)
    s, p = CONV_CASES[case][-2:]
    gy = np.random.default_rng(7).standard_normal(F.conv2d(x, W, b, s, p).shape)
    ref = _run_conv(F.conv.Conv2d, x, W, b, s, p, gy)
    with no_grad():
        f = fast_conv.Conv2d(s, p)
        _assert_close_tight(f(*(Tensor(a, requires_grad=True) for a in (x, W, b))).data, ref[0])
    assert f.routes["weight_grad"] is None and f.col is None
    for got, want in zip(f.backward(gy), ref[1:4], strict=True):
        _assert_close_tight(got, want)


@pytest.mark.parametrize("case", ["dann-conv1", "kept-stride2", "dann-conv2"])
def test_fast_conv_without_weight_gradient_and_without_graph(case):
    # W frozen (only x needs a gradient), or a forward under no_grad: nothing to keep columns for
    x, W, b, _ = _conv_inputs(case, np.float64)
    s, p = CONV_CASES[case][-2:]
    want = F.conv2d(x, W, b, s, p).data
    gy = np.random.default_rng(7).standard_normal(want.shape)
    f = fast_conv.Conv2d(s, p)
    xt = Tensor(x, requires_grad=True)
    y = f(xt, Tensor(W), Tensor(b))
    assert f.routes == _expected_routes(case, weight_grad=False) and f.col is None
    assert f.routes["weight_grad"] is None and f.routes["forward"] != "kept-columns"
    y.backward(gy)
    xr = Tensor(x, requires_grad=True)
    F.conv2d(xr, W, b, s, p).backward(gy)
    _assert_close_tight(y.data, want)
    _assert_close_tight(xt.grad, xr.grad)
    with no_grad():
        g = fast_conv.Conv2d(s, p)
        _assert_close_tight(g(Tensor(x), Tensor(W, requires_grad=True), Tensor(b)).data, want)
    assert g.col is None


def test_route_never_depends_on_the_dtype():
    # KW*C = 10 and 15: kept columns in float32 and in float64 (a byte count would keep them for float32 only)
    for case in ("dann-conv1", "kept-stride1", "dann-conv2"):
        seen = []
        for dtype in (np.float32, np.float64):
            x, W, b, _ = _conv_inputs(case, dtype)
            f = fast_conv.Conv2d(*CONV_CASES[case][-2:])
            f(Tensor(x, requires_grad=True), Tensor(W, requires_grad=True), Tensor(b, requires_grad=True))
            seen.append(f.routes)
        assert seen[0] == seen[1] == _expected_routes(case), case


def test_every_route_name_has_an_equality_case():
    # Every name routes() can give, found by walking shapes, strides, paddings and both devices ...
    possible = {part: set() for part in fast_conv.ROUTES}
    for C, K, s, p, device, wg in itertools.product((1, 3, 8, 32), (1, 2, 3, 5), (1, 2), (0, 1, 2, 5),
                                                    ("cpu", "gpu"), (True, False)):
        for part, name in fast_conv.routes((2, C, 12, 12), (4, C, K, K), s, p, device, wg).items():
            if name is not None:
                possible[part].add(name)
    assert possible == {part: set(names) for part, names in fast_conv.ROUTES.items()}
    # ... is taken by at least one case of the equality tests above (which check that routes() is what ran); the
    # GPU cases run with and without a weight gradient (NEEDS)
    covered = {part: set() for part in fast_conv.ROUTES}
    runs = [(c, "cpu", True) for c in CONV_CASES] + list(itertools.product(GPU_CASES, ["gpu"], [True, False]))
    for case, device, weight_grad in runs:
        for part, name in _expected_routes(case, device, weight_grad).items():
            if name is not None:
                covered[part].add(name)
    assert covered == possible, f"routes without an equality case: {possible} vs {covered}"
    pool_covered = {part: {fast_pool.routes(k, s, device)[part] for _, k, s in POOL_CASES for device in ("cpu", "gpu")}
                    for part in fast_pool.ROUTES}
    assert pool_covered == {part: set(names) for part, names in fast_pool.ROUTES.items()}


def test_routes_refuses_an_unknown_device():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
        fast_conv.routes((1, 1, 4, 4), (1, 1, 3, 3), 1, 0, device="cuda")


# ---------------------------------------------------------------------------------------------------------------
# max-pool: the tiled route against the reference, exactly (a max and its routing involve no rounding)

POOL_CASES = [
    ((9, 32, 28, 28), 2, 2),  # DANN's first pool
    ((9, 48, 14, 14), 2, 2),  # DANN's second pool
    ((2, 3, 7, 5), 2, 2),  # rows and columns no window covers
    ((2, 2, 9, 6), 3, 3),
    ((2, 3, 7, 5), 3, 2),  # overlapping windows: the reference route
    ((1, 2, 6, 7), 2, 1),
]


def _pool_inputs(shape, kind, rng):
    if kind == "distinct":
        return shuffled_linspace(rng, shape)
    if kind == "ties":  # a few small integers: many windows with tied maxima
        return rng.integers(0, 3, shape).astype(np.float64)
    return np.zeros(shape)  # as after a ReLU: every window one big tie


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["C", "channels-last"])
@pytest.mark.parametrize("kind", ["distinct", "ties", "zeros"])
@pytest.mark.parametrize("shape,k,s", POOL_CASES, ids=str)
def test_fast_max_pool_equals_reference(shape, k, s, kind, layout, device):
    rng = np.random.default_rng(0)
    x = _pool_inputs(shape, kind, rng)
    gy = np.random.default_rng(1).standard_normal((shape[0], shape[1], (shape[2] - k) // s + 1,
                                                   (shape[3] - k) // s + 1))
    if layout == "channels-last":  # as conv2d hands it over: an (N, C, H, W) view of (N, H, W, C) memory
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        gy = np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    results = []
    for max_pool2d, dev in ((F.max_pool2d, "cpu"), (fast_pool.max_pool2d, device)):
        xt = Tensor(_on(x, dev), requires_grad=True)
        y = max_pool2d(xt, k, s)
        y.backward(_on(gy, dev))
        results.append((to_numpy(y.data), to_numpy(xt.grad)))
        if max_pool2d is fast_pool.max_pool2d and layout == "channels-last" and \
                fast_pool.routes(k, s, device)["forward"] != "im2col":
            # the fast routes write gx in x's memory order: the conv below then gets a channels-last gradient
            assert xt.grad.transpose(0, 2, 3, 1).flags.c_contiguous
    for got, want in zip(results[1], results[0], strict=True):
        np.testing.assert_array_equal(got, want)
    assert type(y.creator) is (F.pool.MaxPool2d if fast_pool.routes(k, s, device)["forward"] == "im2col"
                               else fast_pool.MaxPool2d)


def _on(a, device):
    """a on ``device``, in a's memory order (a channels-last view stays one)."""
    if device == "cpu":
        return a
    if a.flags.c_contiguous:
        return to_device(a, device)
    return to_device(np.ascontiguousarray(a.transpose(0, 2, 3, 1)), device).transpose(0, 3, 1, 2)


def test_fast_max_pool_gradient_keeps_the_memory_order_of_x():
    # the tiled route writes gx in x's layout, so the conv below gets a channels-last gradient back
    x = np.random.default_rng(0).standard_normal((2, 6, 8, 4)).transpose(0, 3, 1, 2)
    xt = Tensor(x, requires_grad=True)
    fast_pool.max_pool2d(xt, 2, 2).backward(np.ones((2, 4, 3, 4)))
    assert xt.grad.transpose(0, 2, 3, 1).flags.c_contiguous


@pytest.mark.parametrize("device", DEVICES)
def test_windows_of_more_than_256_entries_take_the_reference_route(device):
    # the tiled routes keep each window's winner in uint8: 17 x 17 = 289 entries would wrap around
    assert fast_pool.routes(17, 17, device) == {"forward": "im2col", "input_grad": "col2im"}
    x = np.random.default_rng(0).permutation(2 * 34 * 17).reshape(1, 2, 34, 17).astype(np.float64)
    x[0, 1, 20, 16] = 1e6  # the winner of the second window of channel 1: its entry 3 * 17 + 16 = 67...
    x[0, 0, 33, 16] = 1e6  # ... and of the second window of channel 0: entry 16 * 17 + 16 = 288 (> 255)
    grads = []
    for max_pool2d, dev in ((F.max_pool2d, "cpu"), (fast_pool.max_pool2d, device)):
        xt = Tensor(to_device(x, dev), requires_grad=True)
        max_pool2d(xt, 17, 17).backward(to_device(np.ones((1, 2, 2, 1)), dev))
        grads.append(to_numpy(xt.grad))
    np.testing.assert_array_equal(grads[1], grads[0])
    assert grads[1][0, 0, 33, 16] == 1.0
    with pytest.raises(ValueError, match="at most 256 entries"):
        fast_pool.MaxPool2d(17, 17)


def test_fast_max_pool_refuses_overlapping_windows_with_a_pointer_to_max_pool2d():
    with pytest.raises(ValueError, match="kernel == stride.*max_pool2d"):
        fast_pool.MaxPool2d(3, 2)


# ---------------------------------------------------------------------------------------------------------------
# the float64 gradient check of every route, fast and reference, with a random upstream gradient

# small shapes with the routes of the cases above: (N, C, H, W, OC, KH, KW, stride, pad); "gpu:" the GPU's routes,
# "W frozen" a check of x's and b's gradients only, W a constant
GRADCHECK_CONV = {
    "kept-columns+flipped-kernel": (2, 3, 6, 5, 2, 3, 3, 1, 1),
    "shifted-rows+flipped-kernel": (5, 6, 5, 4, 2, 3, 3, 1, 1),  # 5 images: chunks of 4 and 1
    "shifted-rows+col2im": (1, 8, 3, 4, 2, 2, 2, 1, 2),
    "kept-columns+col2im": (2, 2, 7, 6, 2, 3, 3, 2, 1),
    "im2col-chunks+col2im": (5, 6, 7, 6, 2, 3, 3, 2, 0),
    "gpu:kept-columns+flipped-kernel": (2, 6, 5, 4, 2, 3, 3, 1, 1),
    "gpu:im2col-batch+flipped-kernel, W frozen": (2, 6, 5, 4, 2, 3, 3, 1, 1),
}


@pytest.mark.parametrize("layer", minidann.KERNELS)
@pytest.mark.parametrize("name", list(GRADCHECK_CONV))
def test_every_conv_route_passes_gradcheck(name, layer, monkeypatch):
    N, C, H, W, OC, KH, KW, s, p = GRADCHECK_CONV[name]
    device = "gpu" if name.startswith("gpu:") else "cpu"
    frozen = name.endswith("W frozen")
    if device == "gpu":
        monkeypatch.setattr(fast_conv, "_cpu_routes", lambda xp: False)
    r = fast_conv.routes((N, C, H, W), (OC, C, KH, KW), s, p, device, weight_grad=not frozen)
    assert f"{r['forward']}+{r['input_grad']}" == name.removeprefix("gpu:").removesuffix(", W frozen")
    assert r["weight_grad"] == (None if frozen else r["forward"])
    rng = np.random.default_rng(0)
    x, Wt, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((OC, C, KH, KW)), rng.standard_normal(OC)
    with minidann.kernels(layer):
        if frozen:
            assert check_backward(lambda x, b: dispatch.conv2d(x, Wt, b, s, p), [x, b], seed=1) < 1e-6
        else:
            assert check_backward(lambda x, W, b: dispatch.conv2d(x, W, b, s, p), [x, Wt, b], seed=1) < 1e-6


@pytest.mark.parametrize("layer", minidann.KERNELS)
@pytest.mark.parametrize("shape,k,s", [((2, 3, 6, 4), 2, 2), ((1, 2, 7, 5), 3, 2)], ids=str)
def test_every_pool_route_passes_gradcheck(shape, k, s, layer):
    x = shuffled_linspace(np.random.default_rng(0), shape)  # distinct values: no ties, where no derivative exists
    with minidann.kernels(layer):
        assert check_backward(lambda t: dispatch.max_pool2d(t, k, s), [x], seed=1) < 1e-6


def test_the_switch_picks_the_layer():
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 4, 4)), requires_grad=True)
    W = Tensor(np.random.default_rng(1).standard_normal((3, 2, 3, 3)), requires_grad=True)
    with minidann.kernels("reference"):
        assert type(dispatch.conv2d(x, W).creator) is F.conv.Conv2d
        assert type(dispatch.max_pool2d(x).creator) is F.pool.MaxPool2d
    with minidann.kernels("fast"):
        assert type(dispatch.conv2d(x, W).creator) is fast_conv.Conv2d
        assert type(dispatch.max_pool2d(x).creator) is fast_pool.MaxPool2d


# ---------------------------------------------------------------------------------------------------------------
# ReLU and softmax cross-entropy: the reference op on the CPU, fused kernels on a GPU

@pytest.mark.parametrize("device", DEVICES)
def test_fast_relu_equals_reference(device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    x[0, 0] = 0.0  # the kink: both take the gradient 0 there
    gy = rng.standard_normal(x.shape)
    results = []
    for relu, dev in ((F.relu, "cpu"), (dispatch.relu, device)):
        xt = Tensor(to_device(x, dev), requires_grad=True)
        relu(xt).backward(to_device(gy, dev))
        results.append((to_numpy(relu(Tensor(to_device(x, dev))).data), to_numpy(xt.grad)))
    for got, want in zip(results[1], results[0], strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("N,K", [(7, 10), (12, 2), (1, 3)])
def test_fast_softmax_cross_entropy_equals_reference(device, N, K):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((N, K)) * 10
    labels = rng.integers(0, K, N)
    gy = rng.standard_normal()
    results = []
    for loss_fn, dev in ((F.softmax_cross_entropy, "cpu"), (dispatch.softmax_cross_entropy, device)):
        zt = Tensor(to_device(z, dev), requires_grad=True)
        loss = loss_fn(zt, labels)
        loss.backward(to_device(np.array(gy), dev))
        results.append((to_numpy(loss.data), to_numpy(zt.grad)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-13)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-15)
