"""Stochastic gradient descent with momentum (the optimiser of the DANN paper)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .backend import device_of, get_array_module, to_device, to_numpy
from .core import Parameter


class SGD:
    """v <- momentum * v + (g + weight_decay * theta);  theta <- theta - lr * v.

    This is the heavy-ball form used by TensorFlow's MomentumOptimizer (tf-dann) and PyTorch. ``lr`` may be
    changed before any step (the DANN schedule mu_p does). The velocity buffers live on the parameters' device
    and every update is in place, so no parameter array is reallocated.
    """

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD got an empty parameter list")
        if not all(math.isfinite(v) and v >= 0 for v in (lr, momentum, weight_decay)):  # (NaN >= 0 is False too)
            raise ValueError(f"SGD needs finite lr, momentum, weight_decay >= 0, got {lr}, {momentum}, {weight_decay}")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.velocities = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        lr, m, wd = self.lr, self.momentum, self.weight_decay
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if g.dtype != p.data.dtype:
                raise TypeError(f"gradient dtype {g.dtype} differs from parameter dtype {p.data.dtype}")
            if wd:
                g = g + wd * p.data
            if m:
                v = self.velocities[i]
                if v is None:
                    xp = get_array_module(p.data)
                    v = self.velocities[i] = xp.zeros_like(p.data)
                v *= m
                v += g
                g = v
            p.data -= lr * g

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the momentum buffers (zeros where a parameter has not been stepped yet)."""
        return {f"velocity.{i}": (np.zeros(p.shape, p.dtype) if v is None else to_numpy(v))
                for i, (p, v) in enumerate(zip(self.params, self.velocities, strict=True))}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for i, p in enumerate(self.params):
            v = to_numpy(state[f"velocity.{i}"])  # (a device array too: np.asarray would refuse CuPy's)
            if v.shape != p.shape:
                raise ValueError(f"momentum buffer {i} has shape {v.shape}, parameter has {p.shape}")
            self.velocities[i] = to_device(v.astype(p.dtype), device_of(p.data))
