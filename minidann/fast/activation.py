"""Fast ReLU: the function of the reference :func:`minidann.functions.relu`, with a fused gradient on a GPU.

On the CPU it is the reference op. On a GPU its gradient is one fused kernel (``gy`` where ``y > 0``, else 0;
:mod:`minidann.fast.fused`) instead of a comparison and a product: one launch instead of two per ReLU.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..core import Tensor
from ..functions import activation as reference
from . import fused


class ReLU(reference.ReLU):
    """y = max(x, 0), any shape; on a GPU the gradient takes one kernel."""

    def backward(self, gy):
        xp = get_array_module(gy)
        if xp is np:
            return super().backward(gy)
        return fused.relu_grad(self.y, gy, xp.empty(self.y.shape, gy.dtype))


def relu(x) -> Tensor:
    """:func:`minidann.functions.relu` by the fast layer: max(x, 0) elementwise."""
    return ReLU()(x)
