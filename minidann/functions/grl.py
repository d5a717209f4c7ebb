"""The gradient reversal layer (Ganin & Lempitsky 2015): identity forward, -lambd times the gradient backward."""

from __future__ import annotations

from ..core import Function, Tensor


class GradReverse(Function):
    """R(x) = x in the forward pass; dR/dx = -lambd * I in the backward pass. No parameters.

    This is the one op whose backward is deliberately not the derivative of its forward: placed between the
    feature extractor G_f and the domain classifier G_d, it makes one descent step on L_y + L_d update G_f
    with dL_y/dtheta_f - lambd * dL_d/dtheta_f while G_d still descends L_d (JMLR eq. 13-15, footnote 6).
    """

    def __init__(self, lambd: float):
        self.lambd = float(lambd)

    def forward(self, x):
        return x  # the identity: no copy

    def backward(self, gy):
        # BEGIN SOLUTION grad_reverse
        # gx = -lambd * gy  (a Python float keeps gy's dtype)
        return gy * (-self.lambd)
        # END SOLUTION grad_reverse


def grad_reverse(x, lambd: float) -> Tensor:
    """Identity forward; multiplies the gradient by ``-lambd`` backward. Any shape."""
    return GradReverse(lambd)(x)
