"""GPU parity: every op on CuPy float32 matches NumPy float64, forward and backward (without a GPU: the stand-in)."""

import numpy as np
import pytest

import minidann as md
import minidann.functions as F
from minidann.backend import to_device, to_numpy
from minidann.gradcheck import cases

pytestmark = pytest.mark.gpu


def _forward_backward(case, device, dtype, seed=0):
    rng = np.random.default_rng(seed)
    arrays = case.make(rng)
    inputs = [md.Tensor(to_device(a.astype(dtype) if a.dtype.kind == "f" else a, device),
                        requires_grad=a.dtype.kind == "f") for a in arrays]
    params = []
    if case.module_factory is not None:
        module = case.module_factory(np.random.default_rng(seed + 1))
        for p in module.parameters():
            p.data = p.data.astype(dtype)
        module.to(device)
        params = module.parameters()
        y = module(*inputs)
    else:
        y = case.fn(*inputs)
    gy = np.random.default_rng(seed + 2).standard_normal(y.shape).astype(dtype)
    y.backward(to_device(gy, device))
    grads = [to_numpy(t.grad) for t in inputs + params if t.requires_grad and t.grad is not None]
    return to_numpy(y.data), grads


@pytest.mark.parametrize("case", cases.ALL_CASES, ids=cases.case_id)
def test_cupy_float32_matches_numpy_float64(case):
    y64, g64 = _forward_backward(case, "cpu", np.float64)
    y32, g32 = _forward_backward(case, "gpu", np.float32)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=5e-3, atol=5e-4)
    assert len(g32) == len(g64)
    for a, b in zip(g32, g64, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=5e-3, atol=5e-4)


@pytest.mark.parametrize("case", cases.ALL_CASES, ids=cases.case_id)
def test_gradcheck_on_gpu_float64(case):
    assert cases.run_case(case, "gpu") < 1e-4


def test_grl_and_dann_update_on_gpu():
    assert cases.grl_exact(0.7, "gpu") == 0.0
    assert cases.dann_saddle_check(0.6, "gpu") < 1e-5


def test_mixing_devices_raises_type_error():
    with pytest.raises(TypeError, match="both NumPy"):
        F.add(np.ones(2), to_device(np.ones(2), "gpu"))


def test_labels_out_of_range_are_caught_on_the_host_before_the_gpu():
    """Host labels are checked before they are copied. Device labels are trusted, so that the loss never waits
    for the GPU (the caller checks them on the host before copying): only their shape and dtype are checked."""
    logits = to_device(np.zeros((2, 10), np.float32), "gpu")
    with pytest.raises(ValueError, match="from 0 to 10"):
        F.softmax_cross_entropy(logits, np.array([0, 10]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        F.softmax_cross_entropy(logits, to_device(np.array([[0], [1]]), "gpu"))
    with pytest.raises(ValueError, match="labels must be integers"):
        F.softmax_cross_entropy(logits, to_device(np.array([0.0, 1.0]), "gpu"))


def test_same_seed_same_weights_on_cpu_and_gpu():
    def net():
        rng = np.random.default_rng(3)
        return md.Sequential(md.Conv2d(3, 4, 5, pad=2, rng=rng), md.Flatten(), md.Linear(4 * 6 * 6, 2, rng=rng))

    cpu, gpu = net(), net().to("gpu")
    for (name, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, to_numpy(b.data), err_msg=name)


def test_two_threads_are_refused_on_gpu():
    """threads=2 is data parallelism over CPU cores; on a GPU it is a clear error, not a silent slow path."""
    from minidann.dann import build_model, build_optimizer, train_step

    model = build_model(np.random.default_rng(0), "gpu")
    x = to_device(np.zeros((4, 3, 28, 28), np.float32), "gpu")
    with pytest.raises(ValueError, match="on the gpu use threads 1"):
        train_step(model, build_optimizer(model), x, np.array([1, 2]), "dann", 0.5, 0.01, threads=2)
