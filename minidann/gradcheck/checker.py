"""Numerical gradient checking: compare every backward pass with central finite differences.

The scalar that is differentiated is ``sum(fn(*inputs) * gy)`` for a seeded random upstream gradient ``gy``.
With an all-ones ``gy`` a backward that sends gradients to the wrong positions (a transposed gy, say) could
still pass; a random ``gy`` catches it. Everything runs in float64, where the finite-difference error
(about eps^2 * f''' plus rounding 1e-16 / eps) is far below the tolerance.

The table of every op and layer is in :mod:`minidann.gradcheck.cases`; ``python -m minidann.gradcheck`` prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..backend import get_array_module, to_device, to_numpy
from ..core import Tensor, no_grad


def rel_error(a, b) -> float:
    """max |a - b| / max(1e-8, |a| + |b|), elementwise then the worst (CS231n's relative error)."""
    a, b = np.asarray(to_numpy(a), np.float64), np.asarray(to_numpy(b), np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)))) if a.size else 0.0


def numerical_grad(f: Callable[[], float], x, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every element i of array ``x``.

    ``x`` is perturbed in place and restored exactly; ``f`` reads it. Returns a host float64 array.
    """
    flat = x.reshape(-1)  # a view: writing to it perturbs x
    grad = np.empty(flat.size)
    for i in range(flat.size):
        old = flat[i].copy()
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad.reshape(x.shape)


def check_backward(fn: Callable[..., Tensor], inputs: Sequence, gy=None, *, eps: float = 1e-6, rtol: float = 1e-5,
                   atol: float = 1e-8, seed: int = 0, params=()) -> float:
    """Check the gradients that ``fn``'s backward pass computes against central differences.

    Args:
        fn: maps tensors to one output tensor, e.g. ``minidann.functions.conv2d`` or a Module.
        inputs: arrays or tensors. Float ones are copied to float64 and checked; integer ones (labels) are
            passed through unchanged as constants.
        gy: upstream gradient (output-shaped). Default: standard normal from ``seed``.
        eps: finite-difference step. rtol, atol: element (i) passes if |analytic - numeric| <= atol + rtol * |numeric|.
        params: extra tensors that ``fn`` reads, checked too: a Module (its parameters, named as
            ``named_parameters`` names them: ``0.W``), a mapping name -> tensor, or a sequence of tensors (named
            as ``fn``'s named_parameters names them when ``fn`` is a Module). Their ``.data`` is converted to
            float64 in place (the module stays float64 afterwards).

    Returns:
        The worst relative error over all checked elements (see :func:`rel_error`).

    Raises:
        AssertionError naming the input or parameter, the element, the analytic and numeric values and the
            relative error;
            also when a gradient, an input or ``gy`` holds NaN or infinity (no comparison can pass then).
        ValueError: ``eps`` not positive, ``fn`` not returning one Tensor, ``gy`` of the wrong shape; and from the
            backward walk, a backward returning the wrong number of gradients, None where one is needed, or a
            gradient of another shape than its input (the message names the Function).
    """
    if not eps > 0:
        raise ValueError(f"check_backward: eps must be a small positive step such as 1e-6, got {eps}")
    xs, names = [], []
    for i, x in enumerate(inputs):
        data = x.data if isinstance(x, Tensor) else x
        xp = get_array_module(data)
        data = xp.asarray(data)
        if data.dtype.kind == "f":
            xs.append(Tensor(data.astype(xp.float64), requires_grad=True))
            names.append(f"input {i}")
        else:
            xs.append(Tensor(data))
            names.append(None)
    checked = [(t, n) for t, n in zip(xs, names, strict=True) if n is not None]
    for p, name in _named(params, fn):
        p.data = p.data.astype(get_array_module(p.data).float64)
        p.grad = None
        checked.append((p, f"parameter {name}"))
    if not checked:
        raise ValueError("check_backward: no float input or parameter to check")

    for t, name in checked:
        if not np.isfinite(to_numpy(t.data)).all():
            raise AssertionError(f"gradient check of {name}: it holds NaN or infinity, where no gradient can be "
                                 "checked; give finite values")
    y = fn(*xs)
    if not isinstance(y, Tensor):
        raise ValueError(f"check_backward: fn must return one Tensor (the output of a Function or Module), got "
                         f"{type(y).__name__}; to check one output of several, wrap fn, e.g. lambda x: fn(x)[0]")
    xp = get_array_module(y.data)
    if gy is None:
        gy = np.random.default_rng(seed).standard_normal(y.shape)
    gy = xp.asarray(to_device(np.asarray(to_numpy(gy), np.float64), "gpu" if xp is not np else "cpu"))
    if not bool(xp.isfinite(gy).all()):
        raise AssertionError("gradient check: gy holds NaN or infinity; give a finite upstream gradient")
    y.backward(gy)

    def objective() -> float:
        with no_grad():
            return float((fn(*xs).data * gy).sum())

    worst = 0.0
    for t, name in checked:
        analytic = np.zeros(t.shape) if t.grad is None else to_numpy(t.grad)
        host = to_numpy(t.data).copy()
        if xp is np:
            numeric = numerical_grad(objective, t.data, eps)
        else:  # perturb a host copy and upload it for each evaluation: slow but simple, GPU checks are small
            def on_host(t=t, host=host) -> float:
                t.data = xp.asarray(host)
                return objective()
            numeric = numerical_grad(on_host, host, eps)
            t.data = xp.asarray(host)
        for what, values in (("analytic (backward)", analytic), ("numeric (finite differences)", numeric)):
            if not np.isfinite(values).all():  # NaN compares False with everything: it would pass the test below
                idx = tuple(int(k) for k in np.argwhere(~np.isfinite(values))[0])
                raise AssertionError(f"gradient check failed for {name} (shape {t.shape}): the {what} gradient is "
                                     f"{values[idx]} at element {idx}")
        err = np.abs(analytic - numeric)
        bad = err > atol + rtol * np.abs(numeric)
        rel = rel_error(analytic, numeric)
        if bad.any():
            idx = tuple(int(k) for k in np.argwhere(bad)[np.argmax(err[bad])])
            a, n = analytic[idx], numeric[idx]
            raise AssertionError(
                f"gradient check failed for {name} (shape {t.shape}) at element {idx}: analytic {a:.8g}, "
                f"numeric {n:.8g}, relative error {abs(a - n) / max(1e-8, abs(a) + abs(n)):.3g} "
                f"({int(bad.sum())} of {bad.size} elements out of tolerance atol={atol}, rtol={rtol})"
            )
        worst = max(worst, rel)
    return worst


def _named(params, fn) -> list[tuple[Tensor, str]]:
    """(tensor, name) pairs for check_backward's ``params``: the Module's own names wherever there are any."""
    if hasattr(params, "named_parameters"):  # a Module
        return [(p, name) for name, p in params.named_parameters()]
    if isinstance(params, Mapping):
        return [(p, str(name)) for name, p in params.items()]
    known = {id(p): name for name, p in fn.named_parameters()} if hasattr(fn, "named_parameters") else {}
    return [(p, known.get(id(p)) or p.name or str(j)) for j, p in enumerate(params)]
