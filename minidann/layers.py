"""Layers: a Module owns Parameters (in the order they were assigned) and sub-Modules.

Weights are drawn on the host from a seeded ``numpy.random.Generator`` and only then moved, so a model built
with the same seed starts from the same weights on the CPU and on the GPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import dispatch
from . import functions as F
from .backend import device_of, is_cupy_array, to_device, to_numpy
from .core import Parameter, Tensor


def truncated_normal(rng: np.random.Generator, shape, std: float) -> np.ndarray:
    """Normal(0, std) samples redrawn until within two standard deviations (TensorFlow's truncated_normal)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return (out * std).astype(np.float32)


def _init_weight(rng, shape, fan_in: int, std: float | None) -> np.ndarray:
    # Default He initialisation (std = sqrt(2 / fan_in)) suits ReLU networks; the DANN model passes tf-dann's
    # std = 0.1 explicitly.
    if not isinstance(rng, np.random.Generator):  # None, or a seed such as 0 given where the generator goes
        raise ValueError(f"pass rng=numpy.random.default_rng(seed), got {rng!r}: weights come from one seeded host "
                         "generator")
    return truncated_normal(rng, shape, np.sqrt(2.0 / fan_in) if std is None else std)


class Module:
    """Base class of layers and models: call it like a function; ``parameters()`` lists its weights in order."""

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:  # before super().__init__(): plain settings are fine, layers are not
            if isinstance(value, (Parameter, Module)):
                raise RuntimeError(f"{type(self).__name__}: call super().__init__() at the start of __init__, before "
                                   f"assigning parameters or layers (it sets up their registry)")
            object.__setattr__(self, name, value)
            return
        # The registry is a dict: insertion order, hence the same order on every run (a set would not be).
        # A name given a new Parameter (or Module) keeps its place; given anything else (None, say), it leaves.
        if not isinstance(value, Parameter):
            self._params.pop(name, None)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._params[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args):
        raise NotImplementedError

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ("conv1.W", param) pairs, depth first, in assignment order; each Parameter once.

        A layer used twice (shared weights) has its parameters under its first name only: listed twice, an
        optimizer would update them twice per step.
        """
        seen = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, p in self._params.items():
            yield prefix + name, p
        for name, m in self._modules.items():
            yield from m._named_parameters_all(prefix + name + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, device: str) -> Module:
        """Move every parameter to ``'cpu'`` or ``'gpu'`` in place; returns self."""
        for p in self.parameters():
            p.data = to_device(p.data, device)
            p.grad = p.grad_slot = None  # (a slot is a view of the optimizer's buffer on the old device)
        return self

    @property
    def device(self) -> str:
        params = self.parameters()
        return device_of(params[0].data) if params else "cpu"

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter, keyed by dotted name."""
        return {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters (onto their current device), checking names and shapes."""
        own = dict(self.named_parameters())
        missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
        if missing or unexpected:
            raise ValueError(f"state dict does not match the model: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        # host arrays, or device arrays (left where they are: to_device below copies them to the parameter's device)
        values = {name: state[name] if is_cupy_array(state[name]) else np.asarray(state[name]) for name in own}
        for name, p in own.items():  # every entry checked before any is copied: no half-loaded model
            if values[name].shape != p.shape:
                raise ValueError(f"state dict entry {name!r} has shape {values[name].shape}, the model expects "
                                 f"{p.shape}")
        for name, p in own.items():
            p.data = to_device(values[name].astype(p.dtype), device_of(p.data))


class Linear(Module):
    """y = x W + b. Shapes: x (N, in_features) -> y (N, out_features); W (in, out), b (out,)."""

    def __init__(self, in_features: int, out_features: int, *, rng: np.random.Generator,
                 weight_std: float | None = None, bias_init: float = 0.0):
        super().__init__()
        self.W = Parameter(_init_weight(rng, (in_features, out_features), in_features, weight_std))
        self.b = Parameter(np.full(out_features, bias_init, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return dispatch.linear(x, self.W, self.b)


class Conv2d(Module):
    """Shapes: x (N, C, H, W) -> y (N, OC, OH, OW); W (OC, C, KH, KW), b (OC,)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, pad: int = 0, *,
                 rng: np.random.Generator, weight_std: float | None = None, bias_init: float = 0.0):
        super().__init__()
        K = kernel_size
        self.stride, self.pad = stride, pad
        self.W = Parameter(_init_weight(rng, (out_channels, in_channels, K, K), in_channels * K * K, weight_std))
        self.b = Parameter(np.full(out_channels, bias_init, dtype=np.float32))

    def forward(self, x: Tensor) -> Tensor:
        return dispatch.conv2d(x, self.W, self.b, self.stride, self.pad)


class MaxPool2d(Module):
    """Shapes: x (N, C, H, W) -> (N, C, OH, OW)."""

    def __init__(self, kernel: int = 2, stride: int = 2):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return dispatch.max_pool2d(x, self.kernel, self.stride)


class ReLU(Module):
    """max(x, 0), any shape (on the active layer of ops, see :mod:`minidann.dispatch`)."""

    def forward(self, x: Tensor) -> Tensor:
        return dispatch.relu(x)


class Flatten(Module):
    """(N, ...) -> (N, D)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x)


class GradientReversal(Module):
    """The GRL as a layer: identity forward, ``-lambd`` times the gradient backward.

    Set ``grl.lambd`` every step to follow the schedule lambda_p.
    """

    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, x: Tensor) -> Tensor:
        return F.grad_reverse(x, self.lambd)


class Sequential(Module):
    """Layers applied in order; parameters named "0.W", "1.b", ..."""

    def __init__(self, *layers: Module):
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)
