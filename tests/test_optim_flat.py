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


# ---- on a GPU: gradients written into the flat buffer by the ops, through the parameters' slots ----

def _dann_gpu_step(model, opt, seed):
    from minidann.dann import train_step

    rng = np.random.default_rng(seed)
    x = to_device(rng.standard_normal((8, 3, 28, 28)).astype(np.float32), "gpu")
    return train_step(model, opt, x, rng.integers(0, 10, 4), "dann", 0.5, 0.01)


def test_on_a_gpu_the_fast_layer_writes_gradients_into_the_flat_buffer(standin):
    from minidann.dann import build_model, build_optimizer

    model = build_model(np.random.default_rng(0), "gpu")
    opt = build_optimizer(model)
    _dann_gpu_step(model, opt, 1)  # the first step makes the flat buffers; from the next one on, slots
    _dann_gpu_step(model, opt, 2)
    in_place = {name for (name, p), view in zip(model.named_parameters(), opt._flat["grads"], strict=True)
                if p.grad is view}
    names = {name for name, _ in model.named_parameters()}
    # every linear layer's W and b and both convolutions' b; a convolution's gW is a transposed product: copied
    assert in_place == {n for n in names if not (n.endswith(".W") and "feature_extractor" in n)}, in_place
    assert len(names - in_place) == 2
    assert all(p.grad_slot is None for n, p in model.named_parameters() if n in in_place)  # each slot used once


def test_a_gradient_kept_from_one_step_is_not_overwritten_by_the_next(standin):
    from minidann.backend import to_numpy
    from minidann.dann import build_model, build_optimizer

    model = build_model(np.random.default_rng(0), "gpu")
    opt = build_optimizer(model)
    for seed in (1, 2):
        _dann_gpu_step(model, opt, seed)
    kept = [p.grad for p in model.parameters()]
    values = [to_numpy(g).copy() for g in kept]
    _dann_gpu_step(model, opt, 3)  # another batch: other gradients, in a fresh buffer
    assert any(not np.array_equal(to_numpy(p.grad), v) for p, v in zip(model.parameters(), values, strict=True))
    for g, v in zip(kept, values, strict=True):
        np.testing.assert_array_equal(to_numpy(g), v)


def test_two_backward_passes_without_zero_grad_add_up_on_a_gpu_as_on_the_cpu(standin):
    from minidann.backend import to_numpy
    from minidann.dann import build_model, build_optimizer
    from minidann.dann.step import forward_backward

    grads = {}
    for device in ("cpu", "gpu"):
        model = build_model(np.random.default_rng(0), device)
        opt = build_optimizer(model)
        rng = np.random.default_rng(1)
        x, x2 = (md.Tensor(to_device(rng.standard_normal((8, 3, 28, 28)).astype(np.float32), device))
                 for _ in range(2))
        y = rng.integers(0, 10, 4)
        from minidann.dann import train_step

        train_step(model, opt, x, y, "dann", 0.5, 0.01)  # makes the flat buffers (and slots on the GPU)
        opt.zero_grad()
        with md.kernels("fast"):
            forward_backward(model, x, y, "dann", 0.5)  # fills the slots ...
            forward_backward(model, x2, y, "dann", 0.5)  # ... then adds another batch's gradient to each
        grads[device] = [to_numpy(p.grad) for p in model.parameters()]
    for g_gpu, g_cpu in zip(grads["gpu"], grads["cpu"], strict=True):
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-3, atol=1e-5)


def test_moving_the_model_drops_its_gradient_slots(standin):
    from minidann.dann import build_model, build_optimizer

    model = build_model(np.random.default_rng(0), "gpu")
    opt = build_optimizer(model)
    for seed in (1, 2):
        _dann_gpu_step(model, opt, seed)
    opt.zero_grad()
    assert all(p.grad_slot is not None for p in model.parameters())
    model.to("cpu")
    assert all(p.grad_slot is None for p in model.parameters())
