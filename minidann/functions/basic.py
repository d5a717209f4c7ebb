"""Elementwise arithmetic, shape ops, batch slicing and concatenation, reductions, and the dense layer.

Notation: ``gy`` is the gradient of the loss with respect to an op's output, ``gx`` (``gW``, ``gb``) with
respect to its inputs. Every backward keeps the dtype of its input: gradients are scaled by Python floats,
never by float64 arrays (NumPy 2 would promote float32 gradients to float64).
"""

from __future__ import annotations

import itertools

from ..backend import get_array_module
from ..core import Function, Tensor, as_tensor


def _unbroadcast(gx, shape):
    """Sum ``gx`` down to ``shape``: the adjoint of NumPy broadcasting."""
    if gx.shape == shape:
        return gx
    extra = gx.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and gx.shape[i + extra] != 1)
    return gx.sum(axis=axes, keepdims=True).reshape(shape)


def _const_like(c, x):
    """A Python number as an array of x's dtype on x's device (so float32 stays float32, int32 stays int32).

    Except a float number with an integer x: then the result is float (int * 0.5), as NumPy has it; in x's
    dtype 0.5 would become 0.
    """
    xp = get_array_module(x)
    promote = isinstance(c, float) and x.dtype.kind != "f"
    return xp.asarray(c, dtype=None if promote else x.dtype)


class Add(Function):
    """y = a + b (with broadcasting)."""

    def forward(self, a, b):
        self.a_shape, self.b_shape = a.shape, b.shape
        return a + b

    def backward(self, gy):
        # dy/da = dy/db = 1, summed over broadcast axes
        return _unbroadcast(gy, self.a_shape), _unbroadcast(gy, self.b_shape)


class Mul(Function):
    """y = a * b (with broadcasting)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        # gA = gy * b,  gB = gy * a
        ga = _unbroadcast(gy * self.b, self.a.shape) if self.needs_grad[0] else None
        gb = _unbroadcast(gy * self.a, self.b.shape) if self.needs_grad[1] else None
        return ga, gb


def add(a, b) -> Tensor:
    """a + b; a Python number is taken in the other operand's dtype (a float with an integer tensor: float)."""
    a, b = _numbers_as_arrays(a, b)
    return Add()(a, b)


def mul(a, b) -> Tensor:
    """a * b; a Python number is taken in the other operand's dtype (a float with an integer tensor: float)."""
    a, b = _numbers_as_arrays(a, b)
    return Mul()(a, b)


def _numbers_as_arrays(a, b):
    if isinstance(a, (int, float)):
        b = as_tensor(b)
        a = _const_like(a, b.data)
    elif isinstance(b, (int, float)):
        a = as_tensor(a)
        b = _const_like(b, a.data)
    return a, b


class Reshape(Function):
    """y = x viewed with another shape; the gradient is gy viewed with x's shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.x_shape)


def reshape(x, shape) -> Tensor:
    """x reshaped to ``shape`` (one entry may be -1)."""
    return Reshape(shape)(x)


def flatten(x) -> Tensor:
    """(N, ...) -> (N, D): one feature vector per sample."""
    x = as_tensor(x)
    if x.ndim < 1:
        raise ValueError("flatten: x must have a batch axis, (N, ...); got a 0-d tensor")
    return Reshape((x.shape[0], -1))(x)


class BatchSlice(Function):
    """y = x[start:stop] along the batch axis (DANN splits the source half off the features)."""

    def __init__(self, index: slice):
        self.index = index

    def forward(self, x):
        self.x_shape = x.shape
        return x[self.index]

    def backward(self, gy):
        # gx is zero outside the slice and gy inside it
        xp = get_array_module(gy)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        gx[self.index] = gy
        return gx


def batch_slice(x, index) -> Tensor:
    """x[index] for a slice along axis 0, e.g. ``features[:32]`` for the source half of a DANN batch."""
    if not isinstance(index, slice):
        raise TypeError(
            f"minidann tensors can only be sliced along the batch axis with a slice like x[a:b], got {index!r}"
        )
    return BatchSlice(index)(x)


class Concat(Function):
    """y = concatenate([x0, x1, ...], axis)."""

    def __init__(self, axis: int):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        if not -xs[0].ndim <= self.axis < xs[0].ndim:
            raise ValueError(f"concat: axis {self.axis} is out of range for {xs[0].ndim}-d tensors")
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        # each input gets its own block of gy
        xp = get_array_module(gy)
        bounds = list(itertools.accumulate(self.sizes))[:-1]  # where each input's block ends
        return tuple(xp.split(gy, bounds, axis=self.axis))


def concat(xs, axis: int = 0) -> Tensor:
    """Concatenate tensors along ``axis`` (source and target batches along axis 0)."""
    return Concat(axis)(*xs)


class Sum(Function):
    """y = sum of all elements of x (a scalar)."""

    def forward(self, x):
        self.x_shape = x.shape
        return x.sum()

    def backward(self, gy):
        # dy/dx_i = 1 for every i
        xp = get_array_module(gy)
        return xp.broadcast_to(gy, self.x_shape).copy()


class Mean(Function):
    """y = mean of all elements of x (a scalar)."""

    def forward(self, x):
        self.x_shape, self.n = x.shape, x.size
        return x.mean()

    def backward(self, gy):
        # dy/dx_i = 1 / n; gy / n stays in gy's dtype because n is a Python int
        xp = get_array_module(gy)
        return xp.broadcast_to(gy / self.n, self.x_shape).copy()


def sum(x) -> Tensor:  # noqa: A001 - mirrors numpy's name on purpose
    """Sum of all elements, a 0-d tensor."""
    return Sum()(x)


def mean(x) -> Tensor:
    """Mean of all elements, a 0-d tensor."""
    return Mean()(x)


class Linear(Function):
    """Dense layer y = x @ W + b.

    Shapes: x (N, D_in), W (D_in, D_out), b (D_out,) -> y (N, D_out).
    """

    def forward(self, x, W, b=None):
        if x.dtype.kind != "f":
            raise TypeError(f"linear: x must be floating point, got {x.dtype}: convert it, e.g. x.astype(np.float32)")
        if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0]:
            raise ValueError(
                f"linear: expected x (N, D_in) and W (D_in, D_out) with matching D_in, got x {x.shape} and W {W.shape}"
            )
        if b is not None and b.shape != (W.shape[1],):
            raise ValueError(f"linear: expected b of shape ({W.shape[1]},), got {b.shape}")
        self.x, self.W = x, W
        y = x @ W
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        # BEGIN SOLUTION linear
        # gx = gy @ W^T,  gW = x^T @ gy,  gb = sum_n gy
        gx = gy @ self.W.T if self.needs_grad[0] else None
        gW = self.x.T @ gy if self.needs_grad[1] else None
        if len(self.needs_grad) == 2:
            return gx, gW
        gb = gy.sum(axis=0) if self.needs_grad[2] else None
        return gx, gW, gb
        # END SOLUTION linear


def linear(x, W, b=None) -> Tensor:
    """x (N, D_in) @ W (D_in, D_out) + b (D_out,) -> (N, D_out)."""
    return Linear()(x, W) if b is None else Linear()(x, W, b)
