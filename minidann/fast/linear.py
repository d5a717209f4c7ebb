"""Fast dense layer: the function of the reference :func:`minidann.functions.linear`, its weight gradients in place.

On the CPU it is the reference op. On a GPU, gW and gb are written straight into the parameters' gradient slots
(``Parameter.grad_slot``, slots of the optimizer's flat gradient buffer) when they have them, so that the optimizer
need not copy them there: two launches fewer per layer and step. The arithmetic is the reference's.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..core import Parameter, Tensor
from ..functions import basic as reference


def grad_slot(f, i: int, dtype):
    """The gradient slot of Function ``f``'s input ``i`` (see ``Parameter.take_grad_slot``), or None.

    (None too for a backward called by hand after a forward that recorded no graph, hence no inputs.)
    """
    t = f.inputs[i] if i < len(f.inputs) else None
    return t.take_grad_slot(dtype) if isinstance(t, Parameter) else None


def row_sums(g, f, i: int):
    """gb = the sum of the rows of g (R, D) -> (D,), the gradient of Function ``f``'s input ``i`` (a bias), written
    into its gradient slot when it has one (one reduction either way)."""
    slot = grad_slot(f, i, g.dtype)
    if slot is None:
        return g.sum(axis=0)
    g.sum(axis=0, out=slot)
    return slot


class Linear(reference.Linear):
    """y = x @ W + b; x (N, D_in), W (D_in, D_out), b (D_out,) -> y (N, D_out). On a GPU gW and gb fill their slots."""

    def backward(self, gy):
        xp = get_array_module(gy)
        if xp is np:
            return super().backward(gy)
        # gx = gy @ W^T,  gW = x^T @ gy,  gb = sum_n gy, as the reference computes them
        gx = gy @ self.W.T if self.needs_grad[0] else None
        gW = gb = None
        if self.needs_grad[1]:
            slot = grad_slot(self, 1, gy.dtype)
            gW = self.x.T @ gy if slot is None else xp.matmul(self.x.T, gy, out=slot)
        if len(self.needs_grad) == 2:
            return gx, gW
        if self.needs_grad[2]:
            gb = row_sums(gy, self, 2)
        return gx, gW, gb


def linear(x, W, b=None) -> Tensor:
    """:func:`minidann.functions.linear` by the fast layer: x (N, D_in) @ W (D_in, D_out) + b (D_out,)."""
    return Linear()(x, W) if b is None else Linear()(x, W, b)
