"""Fast softmax cross-entropy: the function of the reference :mod:`minidann.functions.loss`, fused on a GPU.

On the CPU it is the reference op. On a GPU the loss is two launches (one kernel for every row's log-sum-exp and
loss, :data:`minidann.fast.fused.cross_entropy_rows`, then their mean) and its gradient one
(:data:`minidann.fast.fused.cross_entropy_grad`), instead of some 17 array ops: a DANN step has two of these losses.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..core import Tensor
from ..functions import loss as reference
from . import fused


class SoftmaxCrossEntropy(reference.SoftmaxCrossEntropy):
    """L = -(1/N) sum_n log softmax(z_n)[t_n]; logits z (N, K), labels t (N,) -> scalar.

    On a GPU, forward keeps z and every row's log-sum-exp ``lse`` (N,), from which backward recomputes softmax:
    softmax(z_n)[k] = exp(z[n, k] - lse[n]).
    """

    def forward(self, z):
        xp = get_array_module(z)
        if xp is np:
            return super().forward(z)
        N, K = z.shape
        self.z, self.lse = z, xp.empty(N, z.dtype)
        rows = fused.cross_entropy_rows(z, self.labels, K, self.lse, xp.empty(N, z.dtype))[1]
        return rows.mean()  # (a label outside [0, K) makes its row, and so the mean, NaN)

    def backward(self, gy):
        xp = get_array_module(gy)
        if xp is np:
            return super().backward(gy)
        N, K = self.z.shape
        gz = xp.empty((N, K), gy.dtype)
        # gy is the upstream scalar, a 0-d device array: the kernel reads it as gy[0] (no copy to the host)
        return fused.cross_entropy_grad(self.z, self.labels, self.lse, gy.reshape(1), K, gy.dtype.type(1 / N), gz)


def softmax_cross_entropy(logits, labels) -> Tensor:
    """:func:`minidann.functions.softmax_cross_entropy` by the fast layer: logits (N, K), labels (N,) -> scalar."""
    logits, labels = reference.checked_inputs(logits, labels)
    return SoftmaxCrossEntropy(labels)(logits)
