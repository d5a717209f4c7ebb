"""Stochastic gradient descent with momentum (the optimiser of the DANN paper)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from .backend import device_of, get_array_module, to_device, to_numpy
from .core import Parameter
from .fast.fused import sgd_momentum


class SGD:
    """v <- momentum * v + (g + weight_decay * theta);  theta <- theta - lr * v.

    This is the heavy-ball form used by TensorFlow's MomentumOptimizer (tf-dann) and PyTorch. ``lr`` may be
    changed before any step (the DANN schedule mu_p does). The velocity buffers live on the parameters' device
    and every update is in place.

    One flat buffer: at its first step the optimizer moves the parameters (all of one dtype and device) into one
    flat array, and each ``p.data`` becomes a view of it (the same values; from then on the same array every
    step); the velocities and a gradient buffer are flat arrays laid out alike. A step then copies each
    gradient into its slice and updates every parameter at once: four array ops on the CPU, one fused kernel on a
    GPU (:data:`minidann.fast.fused.sgd_momentum`), instead of four per parameter, with the same arithmetic
    element by element. On a GPU most gradients are in their slices already: :meth:`zero_grad` hands every
    parameter its slice of a fresh gradient buffer (``Parameter.grad_slot``), which the fast layer's linear layers
    and convolution biases write into. A step where some parameter has no gradient, or parameters of mixed dtypes
    or devices, updates them one by one instead.
    """

    #: each parameter's slice of the flat buffers starts at a multiple of this many elements (64 bytes of float32)
    ALIGN = 16

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD got an empty parameter list")
        if not all(math.isfinite(v) and v >= 0 for v in (lr, momentum, weight_decay)):  # (NaN >= 0 is False too)
            raise ValueError(f"SGD needs finite lr, momentum, weight_decay >= 0, got {lr}, {momentum}, {weight_decay}")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.velocities = [None] * len(self.params)
        self._flat = None  # the flat layout, once a step has made it (see _flat_layout)

    def zero_grad(self) -> None:
        """Forget every gradient. On a GPU, once the flat buffers exist, also hand each parameter a slot of a fresh
        flat gradient buffer (``Parameter.grad_slot``), into which the fast layer writes the gradients it can, so
        that :meth:`step` finds them in place (fresh: a gradient kept from an earlier step stays as it was)."""
        for p in self.params:
            p.grad = None
        flat = self._flat
        if flat is not None and get_array_module(flat["theta"]) is not np:
            xp = get_array_module(flat["theta"])
            flat["grad"] = xp.zeros_like(flat["theta"])  # (the gaps between slices stay 0)
            flat["grads"] = self._views(flat["grad"])
            for p, slot in zip(self.params, flat["grads"], strict=True):
                p.grad_slot = slot

    def step(self) -> None:
        grads = [p.grad for p in self.params]
        for p, g in zip(self.params, grads, strict=True):
            if g is not None and g.dtype != p.data.dtype:
                raise TypeError(f"gradient dtype {g.dtype} differs from parameter dtype {p.data.dtype}")
        flat = None if any(g is None for g in grads) else self._flat_layout()
        if flat is None:
            self._step_each(grads)
            return
        theta, grad, velocity = flat["theta"], flat["grad"], flat["velocity"]
        for view, g in zip(flat["grads"], grads, strict=True):
            if g is not view:  # (a gradient an op wrote into its slot is there already)
                view[...] = g  # one copy per parameter into the flat gradient
        lr, m, wd = self.lr, self.momentum, self.weight_decay
        if m:  # one fused kernel on a GPU; on the CPU its twin, the same four array ops as below
            sgd_momentum(grad, *(theta.dtype.type(v) for v in (lr, m, wd)), theta, velocity)
            return
        g = grad + wd * theta if wd else grad
        theta -= lr * g

    def _step_each(self, grads) -> None:
        """The update parameter by parameter (those without a gradient are left alone, momentum included)."""
        lr, m, wd = self.lr, self.momentum, self.weight_decay
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if g is None:
                continue
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

    def _flat_layout(self) -> dict | None:
        """The flat buffers, made (or made again) when a parameter or velocity array was replaced since.

        ``p.data = ...`` (Module.to, load_state_dict) or ``load_state_dict`` here replace arrays: their values are
        copied into the flat buffers and the views put back. None when the parameters differ in dtype or device.
        Returns: {"theta", "grad", "velocity" (None without momentum): (total,) arrays, "grads": views of grad}.
        """
        flat = self._flat
        if flat is not None and all(p.data is v for p, v in zip(self.params, flat["params"], strict=True)) and \
                (flat["velocities"] is None or all(a is b for a, b in zip(self.velocities, flat["velocities"],
                                                                           strict=True))):
            return flat
        first = self.params[0].data
        xp, dtype = get_array_module(first), first.dtype
        if any(get_array_module(p.data) is not xp or p.data.dtype != dtype for p in self.params):
            return None
        starts, total = [], 0
        for p in self.params:
            starts.append(total)
            total += -(-p.data.size // self.ALIGN) * self.ALIGN
        self._starts = starts
        views = self._views

        theta = xp.zeros(total, dtype=dtype)
        grad = xp.zeros(total, dtype=dtype)  # (the gaps between slices stay 0, so they never move)
        params = views(theta)
        for view, p in zip(params, self.params, strict=True):
            view[...] = p.data
            p.data = view
        velocity = velocities = None
        if self.momentum:
            velocity = xp.zeros(total, dtype=dtype)
            velocities = views(velocity)
            for i, view in enumerate(velocities):
                if self.velocities[i] is not None:
                    view[...] = self.velocities[i]
                self.velocities[i] = view
        self._flat = {"theta": theta, "grad": grad, "velocity": velocity, "grads": views(grad), "params": params,
                      "velocities": velocities}
        return self._flat

    def _views(self, buf) -> list:
        """Each parameter's slice of the flat array ``buf``, shaped like the parameter (views, no copies)."""
        return [buf[s : s + p.data.size].reshape(p.shape) for s, p in zip(self._starts, self.params, strict=True)]

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
