"""Every op and layer passes a float64 gradient check with a random upstream gradient; the checker itself
catches planted bugs."""

import numpy as np
import pytest

import minidann.functions as F
from minidann import checks
from minidann.core import Function
from minidann.gradcheck import check_backward, main, numerical_grad


@pytest.mark.parametrize("case", checks.ALL_CASES, ids=checks.case_id)
def test_every_op_and_layer_passes_gradcheck(case):
    assert checks.run_case(case, "cpu") < 1e-4


def test_table_covers_every_public_function_and_layer():
    import minidann.layers as L

    checked = {c.name for c in checks.ALL_CASES}
    # im2col/col2im are not ops of the graph; they are tested through conv2d and their adjoint identity
    ops = set(F.__all__) - {"im2col", "col2im"}
    assert ops <= checked, f"functions without a gradient check: {ops - checked}"
    layers = {n for n, v in vars(L).items() if isinstance(v, type) and issubclass(v, L.Module) and v is not L.Module}
    assert layers <= checked, f"layers without a gradient check: {layers - checked}"


class TwiceRelu(Function):
    """A planted bug: the backward returns 2 * the right gradient."""

    def forward(self, x):
        self.x = x
        return np.maximum(x, 0)

    def backward(self, gy):
        return 2 * gy * (self.x > 0)


class TransposedGy(Function):
    """A planted bug: y = x @ W, but gx uses gy transposed-shaped wrongly (gy.T.T-like index mix-up)."""

    def forward(self, x):
        return x * 3.0

    def backward(self, gy):
        # correct would be 3 * gy; this routes gradients to the transposed positions
        return 3.0 * gy.T.reshape(gy.shape)


def test_checker_catches_doubled_gradient():
    x = checks.away_from_zero(np.random.default_rng(0), (3, 4))
    with pytest.raises(AssertionError, match=r"input 0 .*analytic .*numeric .*relative error"):
        check_backward(lambda t: TwiceRelu()(t), [x])


def test_checker_catches_transposed_gradient():
    x = np.random.default_rng(0).standard_normal((3, 3))
    with pytest.raises(AssertionError, match="element"):
        check_backward(lambda t: TransposedGy()(t), [x])


class NanGrad(Function):
    """A planted bug: the backward returns NaN (say, 0 / 0 in a student's formula)."""

    def forward(self, x):
        return x * 3.0

    def backward(self, gy):
        return gy * np.nan


def test_checker_fails_on_nan_gradients_inputs_and_upstream():
    # NaN compares False with every tolerance: without its own check, a NaN gradient would pass
    x = np.random.default_rng(0).standard_normal((3, 3))
    with pytest.raises(AssertionError, match=r"input 0 .*the analytic \(backward\) gradient is nan at element"):
        check_backward(lambda t: NanGrad()(t), [x])
    x_nan = x.copy()
    x_nan[1, 2] = np.inf
    with pytest.raises(AssertionError, match="input 0: it holds NaN or infinity"):
        check_backward(lambda t: t * 2.0, [x_nan])
    with pytest.raises(AssertionError, match="gy holds NaN or infinity"):
        check_backward(lambda t: t * 2.0, [x], gy=np.full((3, 3), np.nan))


@pytest.mark.parametrize("eps", [0.0, -1e-6, float("nan")])
def test_checker_needs_a_positive_step(eps):
    with pytest.raises(ValueError, match="eps must be a small positive step"):
        check_backward(lambda t: t * 2.0, [np.ones(3)], eps=eps)


def test_checker_needs_fn_to_return_one_tensor():
    with pytest.raises(ValueError, match=r"fn must return one Tensor .*got tuple.*lambda x: fn\(x\)\[0\]"):
        check_backward(lambda t: (t * 2.0, t), [np.ones(3)])


def test_transposed_gradient_would_pass_with_an_all_ones_upstream():
    # Why the upstream gradient is random: with gy = 1 the transposed routing is invisible.
    x = np.random.default_rng(0).standard_normal((3, 3))
    check_backward(lambda t: TransposedGy()(t), [x], gy=np.ones((3, 3)))


def test_checker_returns_worst_relative_error_and_uses_float64():
    seen = []

    def fn(x):
        seen.append(x.dtype)
        return F.mul(x, x)

    err = check_backward(fn, [np.random.default_rng(0).standard_normal(5).astype(np.float32)])
    assert 0 <= err < 1e-6 and seen[0] == np.float64


def test_checker_holds_integer_inputs_constant():
    logits = np.random.default_rng(1).standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2])
    assert check_backward(F.softmax_cross_entropy, [logits, labels]) < 1e-6


def test_numerical_grad_restores_input():
    x = np.random.default_rng(0).standard_normal(6)
    before = x.copy()
    g = numerical_grad(lambda: float((x**2).sum()), x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-6)


def test_gradcheck_command_prints_every_op(capsys):
    assert main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in set(F.__all__) - {"im2col", "col2im"}:
        assert name in out
    assert "FAIL" not in out and "checks passed" in out


def test_gradcheck_command_refuses_a_negative_seed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--seed", "-1"])
    assert info.value.code == 2 and "--seed must be >= 0" in capsys.readouterr().err
