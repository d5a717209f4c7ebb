"""Elementwise nonlinearities."""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor


class ReLU(Function):
    """y = max(x, 0), any shape."""

    def forward(self, x):
        xp = get_array_module(x)
        y = xp.maximum(x, 0)
        self.y = y
        return y

    def backward(self, gy):
        # BEGIN SOLUTION relu
        # dy/dx = 1 where x > 0, else 0 (at x == 0 we take 0). y > 0 exactly where x > 0.
        return gy * (self.y > 0)
        # END SOLUTION relu


def relu(x) -> Tensor:
    """max(x, 0) elementwise."""
    return ReLU()(x)


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), any shape."""

    def forward(self, x):
        xp = get_array_module(x)
        # tanh form: the same function, without overflow in exp for large |x|
        y = 0.5 * xp.tanh(0.5 * x) + 0.5
        self.y = y.astype(x.dtype, copy=False) if x.dtype.kind == "f" else y  # (an integer x: a float y)
        return self.y

    def backward(self, gy):
        # BEGIN SOLUTION sigmoid
        # dy/dx = y (1 - y)
        return gy * self.y * (1 - self.y)
        # END SOLUTION sigmoid


def sigmoid(x) -> Tensor:
    """The logistic function elementwise."""
    return Sigmoid()(x)
