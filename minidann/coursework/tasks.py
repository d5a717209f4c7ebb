"""The tasks of the assignment and how each one is checked.

A task is one backward pass of the reference ops, fenced in the reference source by two comment lines::

    # BEGIN SOLUTION relu
    ...the body that the student copy replaces by ``raise NotImplementedError("task relu: ...")``
    # END SOLUTION relu

and one entry of :data:`TASKS`. Each :class:`Case` of a task is checked twice: the float64 gradient check
(:func:`minidann.gradcheck.check_backward`, random upstream gradient) of the student's op, and a seeded comparison
with the reference op (:mod:`minidann.functions`): the same inputs and upstream gradient in float32 and float64 must
give the same output and the same gradients.

To add a task (the convolution, say): put the two marker lines around ``Conv2d.backward``'s body in
``minidann/functions/conv.py`` and add its entry here, e.g.::

    Task("conv2d", "conv.py", "Conv2d.backward", 4, (
        Case("conv2d", lambda r: [r.standard_normal((2, 3, 7, 7)), r.standard_normal((4, 3, 3, 3)),
                                  r.standard_normal(4)], {"stride": 1, "pad": 1}),)),
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import functions as reference_ops
from ..core import Tensor
from ..gradcheck import away_from_zero, check_backward, shuffled_linspace


@dataclass(frozen=True)
class Case:
    """One call of the op: ``ops.<fn>(*make(rng), **kwargs)``.

    Attributes:
        fn: the op's public name in the ops package, e.g. "relu".
        make: seeded inputs, float64 arrays (checked) and integer arrays (labels, passed as constants).
        kwargs: keyword arguments of the op (``lambd``, ``stride`` ...).
        gradcheck: False where the backward is deliberately not the derivative of the forward (the GRL with
            lambd != -1): then only the comparison with the reference runs.
        tol: tolerances of the gradient check.
    """

    fn: str
    make: Callable[[np.random.Generator], list]
    kwargs: dict = field(default_factory=dict)
    gradcheck: bool = True
    tol: dict = field(default_factory=lambda: {"rtol": 1e-5, "atol": 1e-8})


@dataclass(frozen=True)
class Task:
    """One backward pass to write.

    Attributes:
        name: the marker's name (``# BEGIN SOLUTION <name>``) and the pytest marker ``task_<name>``.
        file: the file of the ops package that holds the markers, e.g. "activation.py".
        what: the method the student writes, e.g. "ReLU.backward".
        points: what the task is worth.
        cases: the calls that are checked.
    """

    name: str
    file: str
    what: str
    points: int
    cases: tuple[Case, ...]

    @property
    def marker(self) -> str:
        return f"task_{self.name}"

    def todo(self) -> str:
        """The message of the ``NotImplementedError`` that stands in the student copy."""
        return (f"task {self.name}: write {self.what} in ops/{self.file} (one gradient per input, of that input's "
                f"shape)")


def _labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return rng.integers(0, k, size=n)


def _x(shape):
    return lambda r: [r.standard_normal(shape)]


# a convolution sums hundreds of products: its finite differences round at about 1e-8 (as in the gradcheck table)
_CONV_TOL = {"rtol": 1e-5, "atol": 1e-7}

TASKS: tuple[Task, ...] = (
    Task("linear", "basic.py", "Linear.backward", 3, (
        Case("linear", lambda r: [r.standard_normal((4, 5)), r.standard_normal((5, 3)), r.standard_normal(3)]),
        Case("linear", lambda r: [r.standard_normal((2, 3)), r.standard_normal((3, 4))]),  # no bias: two inputs
    )),
    Task("relu", "activation.py", "ReLU.backward", 2, (
        Case("relu", lambda r: [away_from_zero(r, (4, 5))]),  # no element near the kink, where differences lie
        Case("relu", lambda r: [away_from_zero(r, (2, 3, 2, 2))]),
    )),
    Task("sigmoid", "activation.py", "Sigmoid.backward", 2, (
        Case("sigmoid", lambda r: [3.0 * r.standard_normal((4, 5))]),
    )),
    Task("softmax_cross_entropy", "loss.py", "SoftmaxCrossEntropy.backward", 3, (
        Case("softmax_cross_entropy", lambda r: [3.0 * r.standard_normal((5, 4)), _labels(r, 5, 4)]),
        Case("softmax_cross_entropy", lambda r: [r.standard_normal((1, 3)), _labels(r, 1, 3)]),
    )),
    # The GRL's backward is -lambd * gy: the derivative of its forward (the identity) only at lambd = -1.
    Task("grad_reverse", "grl.py", "GradReverse.backward", 2, (
        Case("grad_reverse", _x((3, 4)), {"lambd": -1.0}),
        Case("grad_reverse", _x((3, 4)), {"lambd": 0.7}, gradcheck=False),
        Case("grad_reverse", _x((2, 5)), {"lambd": 0.0}, gradcheck=False),
    )),
    # conv2d through im2col, one product and col2im: every stride and padding route of the reference op
    Task("conv2d", "conv.py", "Conv2d.backward", 4, (
        Case("conv2d", lambda r: [r.standard_normal((2, 3, 7, 7)), r.standard_normal((4, 3, 3, 3)),
                                  r.standard_normal(4)], {"stride": 1, "pad": 1}, tol=_CONV_TOL),
        Case("conv2d", lambda r: [r.standard_normal((2, 2, 9, 6)), r.standard_normal((3, 2, 3, 3))],
             {"stride": 2, "pad": 2}, tol=_CONV_TOL),  # no bias: two inputs
    )),
    # max-pool: inputs without ties (a shuffled linspace), tiled and overlapping windows
    Task("max_pool2d", "pool.py", "MaxPool2d.backward", 3, (
        Case("max_pool2d", lambda r: [shuffled_linspace(r, (2, 3, 6, 4))], {"kernel": 2, "stride": 2}),
        Case("max_pool2d", lambda r: [shuffled_linspace(r, (1, 2, 7, 5))], {"kernel": 3, "stride": 2}),
    )),
)


def task_by_name(name: str) -> Task:
    for task in TASKS:
        if task.name == name:
            return task
    raise ValueError(f"no task named {name!r}; the tasks are {', '.join(t.name for t in TASKS)}")


def _call(ops, case: Case, inputs: list, dtype) -> tuple[Tensor, list[Tensor]]:
    tensors = [Tensor(a.astype(dtype), requires_grad=True) if a.dtype.kind == "f" else Tensor(a) for a in inputs]
    return getattr(ops, case.fn)(*tensors, **case.kwargs), tensors


def compare_with_reference(ops, case: Case, seed: int = 0) -> None:
    """Forward and backward of ``ops.<fn>`` against :mod:`minidann.functions`, float32 and float64, seeded.

    Raises:
        AssertionError naming the dtype, the input and the worst element where they differ.
    """
    inputs = case.make(np.random.default_rng(seed))
    for dtype, rtol, atol in ((np.float32, 1e-4, 1e-6), (np.float64, 1e-10, 1e-12)):
        y, xs = _call(ops, case, inputs, dtype)
        y_ref, xs_ref = _call(reference_ops, case, inputs, dtype)
        if y.shape != y_ref.shape or not np.allclose(y.data, y_ref.data, rtol=rtol, atol=atol):
            raise AssertionError(f"{case.fn} {case.kwargs or ''} in {np.dtype(dtype).name}: the forward output "
                                 f"differs from the reference's")
        gy = np.random.default_rng(seed + 1).standard_normal(y_ref.shape).astype(dtype)
        y.backward(gy)
        y_ref.backward(gy)
        for i, (t, t_ref) in enumerate(zip(xs, xs_ref, strict=True)):
            if not t_ref.requires_grad:
                continue
            where = f"{case.fn} {case.kwargs or ''} in {np.dtype(dtype).name}, gradient of input {i}"
            if t.grad is None:
                raise AssertionError(f"{where}: none was computed")
            if not np.allclose(t.grad, t_ref.grad, rtol=rtol, atol=atol):
                err = np.abs(t.grad - t_ref.grad)
                idx = tuple(int(k) for k in np.unravel_index(np.argmax(err), err.shape))
                raise AssertionError(f"{where}: element {idx} is {t.grad[idx]:.6g}, the reference gives "
                                     f"{t_ref.grad[idx]:.6g}")


def run_task(task: Task, ops, seed: int = 0) -> str:
    """Check every case of ``task`` on the ops package ``ops``; return a one-line summary.

    Raises:
        NotImplementedError: the backward is still the stub.
        AssertionError: a gradient check or a comparison with the reference failed (the message says where).
    """
    worst = 0.0
    for case in task.cases:
        if case.gradcheck:
            fn = getattr(ops, case.fn)
            worst = max(worst, check_backward(lambda *xs, fn=fn, case=case: fn(*xs, **case.kwargs),
                                              case.make(np.random.default_rng(seed)), seed=seed, **case.tol))
        compare_with_reference(ops, case, seed)
    return f"gradient check max rel error {worst:.1e}; matches the reference in float32 and float64"
