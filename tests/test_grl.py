"""The gradient reversal layer: identity forward, exactly -lambd * gy backward, and the whole DANN update."""

import numpy as np
import pytest

import minidann as md
import minidann.functions as F
from minidann.gradcheck import cases


@pytest.mark.parametrize("lambd", [0.0, 0.3, 1.0, 2.5])
def test_grl_forward_identity_backward_exact(lambd):
    rng = np.random.default_rng(0)
    x = md.Tensor(rng.standard_normal((4, 5)).astype(np.float32), requires_grad=True)
    gy = rng.standard_normal((4, 5)).astype(np.float32)
    y = F.grad_reverse(x, lambd)
    np.testing.assert_array_equal(y.data, x.data)
    y.backward(gy)
    np.testing.assert_array_equal(x.grad, -lambd * gy)
    assert x.grad.dtype == np.float32


def test_grl_layer_lambd_is_settable_each_step():
    grl = md.GradientReversal(0.0)
    x = md.Tensor(np.ones(3), requires_grad=True)
    for lambd in (0.1, 0.9):
        grl.lambd = lambd
        x.grad = None
        grl(x).backward(np.full(3, 2.0))
        np.testing.assert_array_equal(x.grad, np.full(3, -2.0 * lambd))


def test_plain_gradient_check_of_grl_fails_by_design():
    msg = cases.grl_plain_check_fails(0.5)
    assert "gradient check failed" in msg


def test_plain_gradient_check_of_grl_passes_for_lambd_minus_one():
    assert cases.run_case(next(c for c in cases.FUNCTION_CASES if c.name == "grad_reverse")) < 1e-6


@pytest.mark.parametrize("lambd", [0.0, 0.6, 1.0])
def test_dann_update_descends_the_saddle_objective(lambd):
    # shared layer: d(L_y - lambd L_d); label head: dL_y; domain head: dL_d (weight 1, footnote 6)
    assert cases.dann_saddle_check(lambd) < 1e-5


def test_dann_saddle_check_detects_a_grl_with_the_wrong_sign(monkeypatch):
    from minidann.functions import grl

    monkeypatch.setattr(grl.GradReverse, "backward", lambda self, gy: gy * self.lambd)
    with pytest.raises(AssertionError, match="G_f"):
        cases.dann_saddle_check(0.6)
