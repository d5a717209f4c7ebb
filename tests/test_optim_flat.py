"""SGD over one flat buffer: the same numbers as the update parameter by parameter, in a handful of array ops."""

import numpy as np
import pytest

import minidann as md
from minidann.backend import to_device
from minidann.optim import SGD


def _params(rng, shapes=((4, 3, 5, 5), (4,), (7, 2), (2,)), dtype=np.float32):
    return [md.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]


def _reference_step(params, grads, velocities, lr, m, wd):
    """The update one parameter at a time, as written in SGD's docstring."""
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if g is None:
            continue
        if wd:
            g = g + wd * p
        if velocities[i] is None:
            velocities[i] = np.zeros_like(p)
        velocities[i] *= m
        velocities[i] += g
        p -= lr * velocities[i]


@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 0.0), (0.9, 0.01), (0.0, 0.0)])
def test_flat_sgd_is_bit_for_bit_the_update_parameter_by_parameter(momentum, weight_decay):
    rng = np.random.default_rng(0)
    params = _params(rng)
    ref = [p.data.copy() for p in params]
    ref_v = [None] * len(params)
    opt = SGD(params, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    for step in range(4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        if step == 2:  # a non-contiguous gradient is copied into its slice all the same
            grads[0] = np.ascontiguousarray(grads[0].transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.lr = 0.05 / (step + 1)
        opt.step()
        _reference_step(ref, grads, ref_v, 0.05 / (step + 1), momentum, weight_decay)
        for p, r in zip(params, ref, strict=True):
            np.testing.assert_array_equal(p.data, r)
    assert opt._flat is not None and all(p.data.base is not None for p in params)  # views of the flat buffer


def test_a_step_with_a_missing_gradient_leaves_that_parameter_and_its_momentum_alone():
    rng = np.random.default_rng(1)
    params = _params(rng)
    opt = SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = np.ones(p.shape, np.float32)
    opt.step()
    before = [p.data.copy() for p in params]
    v_before = [v.copy() for v in opt.velocities]
    for p in params[1:]:
        p.grad = np.ones(p.shape, np.float32)
    params[0].grad = None
    opt.step()
    np.testing.assert_array_equal(params[0].data, before[0])
    np.testing.assert_array_equal(opt.velocities[0], v_before[0])
    assert not np.array_equal(params[1].data, before[1])


def test_replaced_arrays_are_laid_out_again():
    rng = np.random.default_rng(2)
    params = _params(rng)
    opt = SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = np.ones(p.shape, np.float32)
    opt.step()
    state = opt.state_dict()
    params[1].data = np.zeros(params[1].shape, np.float32)  # as load_state_dict or Module.to do
    opt.load_state_dict(state)  # new velocity arrays
    opt.step()
    np.testing.assert_allclose(params[1].data, -0.1 * (0.9 * 1.0 + 1.0), rtol=1e-6)  # the momentum kept
    assert all(p.data.base is opt._flat["theta"] for p in params)
    assert all(v.base is opt._flat["velocity"] for v in opt.velocities)


def test_mixed_dtypes_update_one_by_one():
    rng = np.random.default_rng(3)
    params = _params(rng)[:1] + [md.Parameter(np.ones(3))]  # float32 and float64
    opt = SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = np.ones(p.shape, p.dtype)
    opt.step()
    assert opt._flat is None and params[1].dtype == np.float64
    np.testing.assert_allclose(params[1].data, 0.9)


def test_flat_sgd_takes_a_handful_of_launches_on_the_device(standin):
    rng = np.random.default_rng(4)
    params = _params(rng, shapes=[(3, 3)] * 14)
    for p in params:
        p.data = to_device(p.data, "gpu")
    opt = SGD(params, lr=0.1, momentum=0.9)
    for _ in range(2):
        for p in params:
            p.grad = to_device(np.ones(p.shape, np.float32), "gpu")
        standin.reset()
        opt.step()
    # 14 gradient copies, then the update of every parameter in one fused kernel (one by one it was 56 launches)
    assert standin.n_launches == 15 and standin.launches["minidann_sgd_momentum"] == 1 and standin.n_syncs == 0
    assert all(p.data.base is not None for p in params)  # views of the flat buffer, on the device
