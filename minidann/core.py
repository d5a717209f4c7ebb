"""The autodiff core: Tensor, Function, the backward walk and no_grad.

A :class:`Function` computes on raw arrays (NumPy or CuPy) in ``forward`` and returns one gradient per input
in ``backward``. Calling a Function on tensors records the graph: the output remembers its ``creator``, the
creator remembers its ``inputs``. ``Tensor.backward`` walks that graph once, in reverse topological order,
summing the gradients that reach each tensor (a tensor used twice gets the sum of both). Leaves (Parameters and
inputs) add the result to the ``.grad`` they already have, so call ``zero_grad`` between steps; the tensors made
by Functions start every walk from nothing.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .backend import get_array_module

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside ``with no_grad():`` ops record no graph (evaluation, finite differences, optimizer steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


class Tensor:
    """An array plus what autodiff needs: ``.grad`` and the Function that made it (``.creator``).

    Args:
        data: a NumPy or CuPy array (Python numbers and lists are turned into NumPy arrays).
        requires_grad: whether backward should compute a gradient for this tensor. Data tensors default to
            False (no gradient for input images); :class:`Parameter` defaults to True.
    """

    # ndarray * Tensor must call Tensor.__rmul__, for NumPy and CuPy arrays alike. __array_ufunc__ = None tells
    # both so (NumPy's binary operators, and CuPy's, return NotImplemented for such an operand); CuPy's arrays have
    # __array_priority__ 100 too, so a priority alone would not make cupy_array * tensor defer.
    __array_ufunc__ = None
    __array_priority__ = 100

    def __init__(self, data, requires_grad: bool = False, name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if get_array_module(data) is np:
            data = np.asarray(data)
        if requires_grad and data.dtype.kind != "f":  # integer gradients would round every step to nothing
            raise TypeError(f"only floating-point tensors can require a gradient, got {data.dtype}: convert "
                            f"first, e.g. x.astype(np.float32)")
        self.data = data
        self.grad = None
        self.creator: Function | None = None
        self.requires_grad = requires_grad
        self.name = name

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"

    def backward(self, gy=None, retain_grad: bool = False) -> None:
        """Compute d(self)/d(t) for every tensor t that requires a gradient: added to ``t.grad`` for leaves.

        Args:
            gy: upstream gradient (array, number, list or Tensor), same shape as ``self``; defaults to ones
                (a scalar loss).
            retain_grad: keep ``.grad`` on intermediate tensors too (by default only leaves keep it,
                which frees memory as the walk goes). Each walk sets them anew.
        Raises:
            RuntimeError: ``self`` does not require a gradient (computed under no_grad, or from constants).
            ValueError: ``gy`` of another shape; a Function's backward that returns the wrong number of
                gradients, None for an input that needs one, or a gradient of another shape than its input.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require a gradient: it was computed under no_grad() "
                               "or from tensors that do not require one (data, not Parameters), so no gradient "
                               "can reach anything. Fix: compute the loss outside no_grad() from the model's output")
        xp = get_array_module(self.data)
        if gy is None:
            gy = xp.ones_like(self.data)
        gy = xp.asarray(gy.data if isinstance(gy, Tensor) else gy, dtype=self.dtype)  # numbers, lists, Tensors
        if gy.shape != self.shape:
            raise ValueError(f"backward: gy has shape {gy.shape}, expected the output's shape {self.shape}")

        # Reverse topological order of the tensors made by functions, found by an iterative depth-first
        # search (no recursion limit on deep graphs): a tensor comes after every tensor computed from it.
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            t, children_done = stack.pop()
            if children_done:
                order.append(t)
                continue
            if id(t) in visited or t.creator is None:
                continue
            visited.add(id(t))
            stack.append((t, True))
            stack.extend((x, False) for x in t.creator.inputs if x.requires_grad)

        # Only this walk's gradients may be summed: a .grad left on a tensor of the graph by an earlier walk
        # (retain_grad, or a loss that was backpropagated before) must not be added in. Leaves (Parameters,
        # inputs) keep accumulating across walks, as documented above.
        for t in order:
            t.grad = None
        if self.creator is None:  # a leaf: accumulates, like every leaf
            self.grad = gy if self.grad is None else self.grad + gy
        else:
            self.grad = gy

        for t in reversed(order):
            f = t.creator
            gxs = f.backward(t.grad)
            gxs = tuple(gxs) if isinstance(gxs, (tuple, list)) else (gxs,)
            if len(gxs) != len(f.inputs):
                raise ValueError(f"{type(f).__name__}.backward returned {len(gxs)} gradient(s) for its "
                                 f"{len(f.inputs)} input(s): return one per input, None where none is needed")
            for i, (x, gx) in enumerate(zip(f.inputs, gxs, strict=True)):
                if not f.needs_grad[i]:  # backward was told this input needs no gradient
                    continue
                if gx is None:
                    raise ValueError(f"{type(f).__name__}.backward returned None for input {i}, which needs a "
                                     f"gradient (needs_grad[{i}] is True)")
                if gx.shape != x.shape:
                    raise ValueError(f"{type(f).__name__}.backward returned a gradient of shape {gx.shape} for "
                                     f"input {i} of shape {x.shape}: a gradient has its input's shape (sum over "
                                     f"the axes that broadcasting added)")
                if gx.dtype != x.dtype:  # a float64 constant upstream must not turn float32 weights' grads float64
                    gx = gx.astype(x.dtype)
                # Out of place: a tensor that feeds two ops (DANN's features feed both heads) gets the sum.
                x.grad = gx if x.grad is None else x.grad + gx
            if not retain_grad and t is not self:
                t.grad = None

    # Operators, so that models read like the math. Each one is a Function from minidann.functions.
    def __add__(self, other):
        from .functions.basic import add

        return add(self, other)

    __radd__ = __add__

    def __mul__(self, other):
        from .functions.basic import mul

        return mul(self, other)

    __rmul__ = __mul__

    def __neg__(self):
        from .functions.basic import mul

        return mul(self, -1)  # an int: the tensor's own dtype, float or integer

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __getitem__(self, index):
        from .functions.basic import batch_slice

        return batch_slice(self, index)

    def reshape(self, *shape):
        from .functions.basic import reshape

        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)

    def sum(self):
        from .functions.basic import sum

        return sum(self)

    def mean(self):
        from .functions.basic import mean

        return mean(self)

    def item(self) -> float:
        """The value of a one-element tensor as a Python float (on a GPU this waits for the result)."""
        if self.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.shape}")
        return float(self.data.reshape(-1)[0])


class Parameter(Tensor):
    """A trainable tensor: ``requires_grad`` is True and :class:`~minidann.layers.Module` registers it.

    ``grad_slot``: None, or an array of the parameter's shape and dtype into which an op may write the parameter's
    next gradient instead of into a new array (on a GPU, :meth:`minidann.optim.SGD.zero_grad` hands each parameter
    a slot of a fresh flat gradient buffer, which the optimizer then finds filled: no copy). An op takes it with
    :meth:`take_grad_slot`, once.
    """

    def __init__(self, data, name: str | None = None):
        super().__init__(data, requires_grad=True, name=name)
        self.grad_slot = None

    def take_grad_slot(self, dtype):
        """The slot for this parameter's gradient, if it has one, of ``dtype``, and no gradient yet; else None.

        A slot is given out once (it is None afterwards), so no array this parameter's ``.grad`` ever was is
        written again.
        """
        slot = self.grad_slot
        if slot is None or self.grad is not None or slot.dtype != dtype:
            return None
        self.grad_slot = None
        return slot

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def as_tensor(x) -> Tensor:
    """Wrap arrays and numbers as constant tensors; leave tensors alone."""
    return x if isinstance(x, Tensor) else Tensor(x)


class Function:
    """Base class of every op: subclasses write ``forward(*arrays)`` and ``backward(gy)``.

    ``forward`` receives raw arrays and returns one array. It may save what backward needs on ``self``.
    ``backward`` receives the upstream gradient ``gy`` (same shape as the output) and returns one gradient
    per input (a tuple, or a single array for one input), using None where none is needed.
    ``self.needs_grad[i]`` says whether input ``i`` wants a gradient, so backward can skip work
    (the gradient with respect to the input images is never computed).
    """

    inputs: tuple[Tensor, ...] = ()
    needs_grad: tuple[bool, ...] = ()

    def __call__(self, *inputs) -> Tensor:
        if self.__dict__.get("_called"):
            # forward keeps on self what this call's backward needs: a second call would overwrite it
            name = type(self).__name__
            raise RuntimeError(f"this {name} was called already: a Function object is one node of the graph. "
                               f"Create a new one for every call, e.g. {name}(...)(x)")
        self._called = True
        inputs = tuple(as_tensor(x) for x in inputs)
        get_array_module(*(x.data for x in inputs))  # raises TypeError if NumPy and CuPy are mixed
        self.needs_grad = tuple(x.requires_grad for x in inputs)
        record = _grad_enabled and any(self.needs_grad)
        y = Tensor(self.forward(*(x.data for x in inputs)))
        if record:
            self.inputs = inputs
            y.creator = self
            y.requires_grad = True
        return y

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError
