"""The autodiff core, layers, SGD, the backend and bad-input errors."""

import cupy_standin
import numpy as np
import pytest

import minidann as md
import minidann.functions as F
from minidann import backend
from minidann.core import Function, Tensor


def test_fan_out_accumulates_gradients():
    # f feeds two heads (as DANN's features do): df/dx must be the sum of both paths.
    x = md.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    f = x * 2.0
    loss = F.sum(f * 3.0) + F.sum(f * f)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * 3.0 + 2 * (2 * x.data) * 2)


def test_tensor_used_twice_in_one_op():
    x = md.Tensor(np.array([1.5, -0.5]), requires_grad=True)
    F.sum(x * x).backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    x = md.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    F.sum(x * 2.0).backward()
    F.sum(x * 2.0).backward()
    np.testing.assert_allclose(x.grad, [4.0, 4.0])


def test_no_grad_records_no_graph():
    x = md.Tensor(np.ones(3), requires_grad=True)
    with md.no_grad():
        y = F.relu(x * 2.0)
    assert y.creator is None and not y.requires_grad
    y = F.relu(x * 2.0)
    assert y.creator is not None and y.requires_grad


def test_deep_graph_needs_no_recursion():
    x = md.Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):  # deeper than Python's recursion limit
        y = y * 1.0
    F.sum(y).backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


def test_intermediate_grads_are_freed_unless_retained():
    x = md.Tensor(np.ones(2), requires_grad=True)
    h = x * 2.0
    F.sum(h * 3.0).backward()
    assert h.grad is None
    x.grad = None
    h = x * 2.0
    F.sum(h * 3.0).backward(retain_grad=True)
    np.testing.assert_array_equal(h.grad, [3.0, 3.0])


def test_batch_slice_and_concat_route_gradients():
    x = md.Tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    src, tgt = x[:2], x[2:]
    y = F.concat([tgt * 2.0, src])
    gy = np.random.default_rng(0).standard_normal(y.shape)
    y.backward(gy)
    np.testing.assert_array_equal(x.grad, np.concatenate([gy[2:], 2.0 * gy[:2]]))


def test_slicing_other_axes_is_refused():
    x = md.Tensor(np.ones((2, 3)))
    with pytest.raises(TypeError, match="batch axis"):
        x[:, 1]


@pytest.mark.parametrize("op", ["add", "mul", "mean", "linear", "relu", "sigmoid", "sce", "pool", "conv"])
def test_float32_stays_float32(op):
    rng = np.random.default_rng(0)
    x = md.Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32), requires_grad=True)
    W = md.Tensor(rng.standard_normal((48, 5)).astype(np.float32), requires_grad=True)
    fns = {
        "add": lambda: x + 1.0, "mul": lambda: x * 0.5, "mean": lambda: F.mean(x), "relu": lambda: F.relu(x),
        "sigmoid": lambda: F.sigmoid(x), "pool": lambda: F.max_pool2d(x),
        "linear": lambda: F.linear(F.flatten(x), W),
        "sce": lambda: F.softmax_cross_entropy(F.linear(F.flatten(x), W), np.array([1, 4])),
        "conv": lambda: F.conv2d(x, md.Tensor(np.ones((2, 3, 3, 3), np.float32), requires_grad=True), pad=1),
    }
    y = fns[op]()
    assert y.dtype == np.float32
    F.mean(y).backward()
    assert x.grad.dtype == np.float32


# ---- bad input ----

def test_conv_wrong_rank_and_channels_name_shapes():
    with pytest.raises(ValueError, match=r"x \(N, C, H, W\).*got x \(3, 8, 8\)"):
        F.conv2d(np.zeros((3, 8, 8)), np.zeros((4, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"same C, got x \(2, 1, 8, 8\) and W \(4, 3, 5, 5\)"):
        F.conv2d(np.zeros((2, 1, 8, 8)), np.zeros((4, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"b of shape \(4,\)"):
        F.conv2d(np.zeros((2, 3, 8, 8)), np.zeros((4, 3, 5, 5)), np.zeros(3))


def test_linear_and_pool_shape_errors():
    with pytest.raises(ValueError, match=r"got x \(2, 7\) and W \(5, 3\)"):
        F.linear(np.zeros((2, 7)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got \(4, 4\)"):
        F.max_pool2d(np.zeros((4, 4)))


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 10]), r"\[0, 9\].*from 0 to 10"),
    (np.array([-1, 3]), r"from -1 to 3"),
    (np.array([0.0, 1.0]), "integers"),
    (np.array([[0, 1]]), r"shape \(N,\)"),
])
def test_bad_labels_raise_before_indexing(labels, match):
    with pytest.raises(ValueError, match=match):
        F.softmax_cross_entropy(np.zeros((2, 10)), labels)


def test_label_count_mismatch():
    with pytest.raises(ValueError, match="3 rows of logits but 2 labels"):
        F.softmax_cross_entropy(np.zeros((3, 10)), np.array([1, 2]))


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss = F.softmax_cross_entropy(np.array([[1e4, 0.0], [0.0, -1e4]]), np.array([1, 1]))
    assert np.isfinite(loss.item()) and loss.item() == pytest.approx(1e4)


def test_mixing_numpy_and_cupy_raises_type_error(standin):
    gpu_array = cupy_standin.asarray(np.ones((2, 2)))
    with pytest.raises(TypeError, match="both NumPy .* and CuPy .*Fix"):
        F.add(np.ones((2, 2)), gpu_array)


def test_missing_cupy_gives_cause_and_fix(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", "ModuleNotFoundError: No module named 'cupy'")
    with pytest.raises(backend.GPUUnavailableError, match=r"CuPy is not installed.*pip install -e '\.\[cuda12\]'"):
        backend.resolve_device("gpu")
    device, note = backend.resolve_device("auto")
    assert device == "cpu" and "CuPy is not installed" in note
    with pytest.raises(backend.GPUUnavailableError):
        backend.to_device(np.ones(2), "gpu")


def test_broken_cupy_import_reports_its_message(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_error", "ImportError: libcudart.so.12: cannot open shared object file")
    with pytest.raises(backend.GPUUnavailableError, match="failed to import.*libcudart"):
        backend.require_gpu()


def test_no_cuda_device_is_reported(monkeypatch):
    class Runtime:
        @staticmethod
        def getDeviceCount():
            return 0

    class Cuda:
        runtime = Runtime

    class NoDeviceCupy:
        cuda = Cuda
        ndarray = cupy_standin.ndarray

    monkeypatch.setattr(backend, "_cupy", NoDeviceCupy)
    assert not backend.gpu_available()
    with pytest.raises(backend.GPUUnavailableError, match="no CUDA device"):
        backend.require_gpu()


def _one_device_cupy(arange):
    """A stand-in CuPy with one device whose arrays come from ``arange`` (NumPy's, or one that fails)."""
    class Runtime:
        @staticmethod
        def getDeviceCount():
            return 1

    class Cuda:
        runtime = Runtime

    class OneDeviceCupy:
        cuda = Cuda
        ndarray = cupy_standin.ndarray
        float32 = np.float32

    OneDeviceCupy.arange = staticmethod(arange)
    return OneDeviceCupy


def test_a_gpu_that_cannot_compute_is_reported_with_the_fix(monkeypatch):
    # CuPy imports and counts a device, but the first kernel fails (no NVRTC): say so now, not in the first step
    calls = []

    def arange(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("CuPy failed to load libnvrtc.so.13: cannot open shared object file")

    monkeypatch.setattr(backend, "_cupy", _one_device_cupy(arange))
    monkeypatch.setattr(backend, "_kernel_error", None)
    with pytest.raises(backend.GPUUnavailableError,
                       match=r"sees 1 CUDA device.*cannot compute.*libnvrtc.*cupy-cuda12x\[ctk\]"):
        backend.require_gpu()
    device, note = backend.resolve_device("auto")
    assert device == "cpu" and "libnvrtc" in note  # auto falls back, and says why


def test_a_gpu_that_computes_is_usable(monkeypatch):
    calls = []

    def arange(*args, **kwargs):
        calls.append(args)
        return np.arange(*args, **kwargs)

    monkeypatch.setattr(backend, "_cupy", _one_device_cupy(arange))
    monkeypatch.setattr(backend, "_kernel_error", None)
    assert backend.gpu_available() and backend.gpu_unavailable_reason() is None
    assert len(calls) == 1  # a success is remembered: not tried again on every to_device


def test_a_gpu_out_of_memory_is_reported_as_such_and_tried_again(monkeypatch):
    class OutOfMemoryError(MemoryError):
        pass

    calls = []

    def arange(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OutOfMemoryError("Out of memory allocating 512 bytes")
        return np.arange(*args, **kwargs)

    monkeypatch.setattr(backend, "_cupy", _one_device_cupy(arange))
    monkeypatch.setattr(backend, "_kernel_error", None)
    with pytest.raises(backend.GPUUnavailableError, match=r"the GPU is out of memory. Fix: free it"):
        backend.require_gpu()
    assert backend.gpu_available()  # freed meanwhile: the next call tries again and succeeds


def test_bad_device_name():
    with pytest.raises(ValueError, match="'cpu', 'gpu' or 'auto'"):
        backend.resolve_device("tpu")


# ---- layers and SGD ----

def _net(seed):
    rng = np.random.default_rng(seed)
    return md.Sequential(md.Conv2d(3, 4, 3, pad=1, rng=rng), md.ReLU(), md.MaxPool2d(), md.Flatten(),
                         md.Linear(4 * 4 * 4, 2, rng=rng), md.GradientReversal(0.5))


def test_parameters_are_ordered_and_named():
    names = [n for n, _ in _net(0).named_parameters()]
    assert names == ["0.W", "0.b", "4.W", "4.b"]


def test_same_seed_same_weights_other_seed_differs():
    a, b, c = _net(0).state_dict(), _net(0).state_dict(), _net(1).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert a[k].dtype == np.float32
    assert not np.array_equal(a["0.W"], c["0.W"])


def test_state_dict_round_trip_and_mismatch():
    net, other = _net(0), _net(1)
    other.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(other.state_dict()["4.W"], net.state_dict()["4.W"])
    bad = net.state_dict()
    bad["4.W"] = bad["4.W"][:3]
    with pytest.raises(ValueError, match="4.W"):
        other.load_state_dict(bad)


def test_layers_require_a_seeded_generator():
    with pytest.raises(ValueError, match="default_rng"):
        md.Linear(3, 2, rng=None)


def test_sgd_momentum_matches_formula_and_lr_is_settable():
    p = md.Parameter(np.array([1.0, -1.0], np.float32))
    opt = md.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    v = np.zeros(2, np.float32)
    theta = p.data.copy()
    for step, lr in enumerate([0.1, 0.05, 0.02]):
        opt.lr = lr
        opt.zero_grad()
        F.sum(p * p).backward()
        g = 2 * theta + 0.01 * theta
        v = 0.9 * v + g
        theta = theta - lr * v
        opt.step()
        np.testing.assert_allclose(p.data, theta, rtol=1e-6, err_msg=f"step {step}")
    assert p.data.dtype == np.float32


def test_sgd_updates_in_place_and_state_round_trips():
    p = md.Parameter(np.ones(3, np.float32))
    opt = md.SGD([p], lr=0.1, momentum=0.9)
    F.sum(p * 2.0).backward()
    opt.step()
    buf = p.data  # the first step moved the parameters into the optimizer's flat buffer: p.data is a view of it
    F.sum(p * 2.0).backward()
    opt.step()
    assert p.data is buf
    state = opt.state_dict()
    opt2 = md.SGD([md.Parameter(np.ones(3, np.float32))], lr=0.1, momentum=0.9)
    opt2.load_state_dict(state)
    np.testing.assert_array_equal(opt2.velocities[0], opt.velocities[0])


def test_tiny_network_learns():
    rng = np.random.default_rng(0)
    x = md.Tensor(rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    y = (x.data[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64)
    net = _net(0)
    net.layers[-1].lambd = -1.0  # identity gradient: plain network
    opt = md.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.softmax_cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---- the backward walk guards what students can get wrong ----

class _Square(Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        return 2 * self.x * gy


def test_a_function_object_is_called_once():
    # a second call would overwrite what the first call's backward needs (the gradients came out wrong before)
    sq = _Square()
    sq(Tensor(np.ones(3), requires_grad=True))
    with pytest.raises(RuntimeError, match=r"this _Square was called already.*new one for every call"):
        sq(Tensor(np.ones(3), requires_grad=True))


def test_gradients_of_an_earlier_walk_are_not_summed_in():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    loss = (x * 2.0 * 3.0).sum()
    loss.backward(retain_grad=True)
    np.testing.assert_array_equal(x.grad, [6.0, 6.0, 6.0])
    x.grad = None
    loss.backward(retain_grad=True)  # the intermediates still hold the first walk's gradients
    np.testing.assert_array_equal(x.grad, [6.0, 6.0, 6.0])
    first = (x * x).sum()
    first.backward()  # first.grad is now 1
    x.grad = None
    (first + (x * 1.0).sum()).backward()  # first is an intermediate of this graph: its old grad must not count
    np.testing.assert_array_equal(x.grad, 2 * x.data + 1)
    x.grad = None
    (x * 1.0).sum().backward()
    (x * 1.0).sum().backward()  # leaves accumulate across walks, as documented
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


class _BadBackward(Function):
    def __init__(self, returns):
        self.returns = returns

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return self.returns(gy)


@pytest.mark.parametrize("returns, message", [
    (lambda gy: (gy, gy), r"returned a gradient of shape \(2, 3\) for input 1 of shape \(3,\).*sum over the axes"),
    (lambda gy: gy, r"returned 1 gradient\(s\) for its 2 input\(s\)"),
    (lambda gy: (gy, None), "returned None for input 1, which needs a gradient"),
])
def test_the_walk_checks_what_a_backward_returns(returns, message):
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="_BadBackward.backward " + message):
        _BadBackward(returns)(a, b).sum().backward()


def test_a_list_of_gradients_is_accepted_and_a_float64_constant_keeps_float32_gradients():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones((2, 3)), requires_grad=True)
    _BadBackward(lambda gy: [gy, 2 * gy])(a, b).sum().backward()
    np.testing.assert_array_equal(b.grad, np.full((2, 3), 2.0))
    lin = md.Linear(4, 2, rng=np.random.default_rng(0))
    (lin(np.ones((3, 4), np.float32)) * np.ones((3, 2))).sum().backward()  # float64 mask after a float32 layer
    assert lin.W.grad.dtype == np.float32 and lin.b.grad.dtype == np.float32
    md.SGD(lin.parameters(), lr=0.1).step()  # which used to fail on the float64 gradients


def test_backward_needs_something_to_differentiate_and_accepts_plain_gy():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with md.no_grad():
        loss = (x * x).sum()
    with pytest.raises(RuntimeError, match=r"does not require a gradient: it was computed under no_grad\(\)"):
        loss.backward()
    y = x * 3.0
    y.backward([1.0, 2.0])  # a list
    np.testing.assert_array_equal(x.grad, [3.0, 6.0])
    x.grad = None
    (x * x).sum().backward(Tensor(np.array(2.0)))  # a Tensor
    np.testing.assert_array_equal(x.grad, [4.0, 8.0])


def test_a_layer_used_twice_is_one_set_of_parameters():
    rng = np.random.default_rng(0)
    lin = md.Linear(3, 3, rng=rng)
    net = md.Sequential(lin, md.ReLU(), lin)  # shared weights
    assert [n for n, _ in net.named_parameters()] == ["0.W", "0.b"]
    x = rng.standard_normal((4, 3)).astype(np.float32)
    net(x).sum().backward()  # both uses add into the one gradient
    W0, gW = lin.W.data.copy(), lin.W.grad.copy()
    md.SGD(net.parameters(), lr=0.1).step()
    np.testing.assert_allclose(lin.W.data, W0 - 0.1 * gW, rtol=1e-6)  # one step, not two
    assert set(net.state_dict()) == {"0.W", "0.b"}


def test_load_state_dict_checks_every_entry_before_copying_any():
    net = md.Sequential(md.Linear(3, 2, rng=np.random.default_rng(0)), md.Linear(2, 2, rng=np.random.default_rng(1)))
    before = net.state_dict()
    bad = {k: v + 1 for k, v in before.items()}
    bad["1.b"] = np.zeros(5, np.float32)  # the last entry is wrong
    with pytest.raises(ValueError, match=r"'1.b' has shape \(5,\)"):
        net.load_state_dict(bad)
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())  # nothing was half-loaded


def test_integer_tensors_are_not_truncated_and_cannot_require_a_gradient():
    np.testing.assert_array_equal((Tensor(np.array([1, 2, 3])) * 0.5).data, [0.5, 1.0, 1.5])
    np.testing.assert_array_equal((Tensor(np.array([-2, 0, 3])) + 0.5).data, [-1.5, 0.5, 3.5])
    np.testing.assert_array_equal((Tensor(np.array([1, 2])) * 3).data, [3, 6])  # int stays int
    np.testing.assert_allclose(F.sigmoid(Tensor(np.array([-2, 0, 3]))).data, 1 / (1 + np.exp([2.0, 0.0, -3.0])))
    assert (Tensor(np.ones(2, np.float32)) * 0.5).dtype == np.float32  # float32 stays float32
    with pytest.raises(TypeError, match="only floating-point tensors can require a gradient, got int64"):
        Tensor(np.arange(3), requires_grad=True)


def test_module_registry_follows_attribute_assignment():
    lin = md.Linear(3, 2, rng=np.random.default_rng(0))
    lin.b = None  # no bias any more: it must leave parameters() (and so the optimizer)
    assert [n for n, _ in lin.named_parameters()] == ["W"]
    lin.b = md.Parameter(np.zeros(2, np.float32))
    lin.W = md.Parameter(np.zeros((3, 2), np.float32))  # replaced: keeps its place
    assert [n for n, _ in lin.named_parameters()] == ["W", "b"]

    class Forgetful(md.Module):
        def __init__(self):
            self.W = md.Parameter(np.zeros(2, np.float32))  # no super().__init__()

    with pytest.raises(RuntimeError, match=r"Forgetful: call super\(\).__init__\(\) at the start of __init__"):
        Forgetful()


def test_cross_entropy_keeps_its_own_copy_of_the_labels():
    logits = Tensor(np.zeros((2, 3)), requires_grad=True)
    labels = np.array([0, 2])
    loss = F.softmax_cross_entropy(logits, labels)
    labels[:] = 1  # the caller reuses its buffer before backward
    loss.backward()
    np.testing.assert_allclose(logits.grad, (np.full((2, 3), 1 / 3) - np.eye(3)[[0, 2]]) / 2)


def test_shape_and_dtype_mistakes_name_the_op():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match=r"conv2d: x must be floating point, got uint8.*astype"):
        F.conv2d(np.zeros((1, 3, 8, 8), np.uint8), rng.standard_normal((2, 3, 3, 3)).astype(np.float32))
    with pytest.raises(TypeError, match="linear: x must be floating point, got int64"):
        F.linear(np.ones((2, 3), np.int64), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="flatten: x must have a batch axis"):
        F.flatten(np.array(1.0))
    with pytest.raises(ValueError, match="concat: axis 2 is out of range for 2-d tensors"):
        F.concat([np.ones((2, 3)), np.ones((2, 3))], axis=2)


def test_integer_constants_keep_an_integer_tensors_dtype_and_a_leaf_root_accumulates():
    x = Tensor(np.array([1, 2, 3], np.int32))
    for y in (x * 3, x - 1, 1 - x, -x, x + 2):
        assert y.dtype == np.int32, y
    p = Tensor(np.ones(2), requires_grad=True)
    p.backward()
    p.backward()  # a leaf accumulates, also when it is the root of the walk
    np.testing.assert_array_equal(p.grad, [2.0, 2.0])


def test_plain_attributes_may_come_before_super_init():
    class Late(md.Module):
        def __init__(self):
            self.alpha = 0.1  # a plain setting: nothing to register yet, so it is fine
            super().__init__()
            self.W = md.Parameter(np.zeros(2, np.float32))

    late = Late()
    assert late.alpha == 0.1 and [n for n, _ in late.named_parameters()] == ["W"]
