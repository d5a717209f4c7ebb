"""The table of gradient checks behind ``python -m minidann.gradcheck`` and the test suite.

Each :class:`Case` builds its inputs from a seeded host generator (float64), so the same case runs on NumPy
and, moved to the GPU, on CuPy. Inputs avoid the places where finite differences lie: ReLU inputs are kept at
least 0.1 away from 0, and max-pool inputs are a shuffled linspace, so no two values of a window are close.

Linear, convolution, max-pool, ReLU and cross-entropy cases call :mod:`minidann.dispatch`, so they check whichever layer
of ops is active (``with minidann.kernels("reference"):``). The convolution cases cover every route of the fast
layer: stride 1 with C * KW >= 16 (shifted rows, flipped-kernel input gradient) and below (kept columns, like
DANN's first layer: C = 3, K = 5), stride 2 (chunked im2col, col2im), stride 1 with pad >= K (col2im input
gradient), and batches whose last chunk of 4 images is smaller (N = 5, 9). Max-pool cases are tiled (kernel ==
stride: the "tiled" route on the CPU, "fused" kernels on a GPU) and overlapping (kernel 3, stride 2).

Besides the table: :func:`grl_exact` and :func:`grl_plain_check_fails` check the GRL for what it claims, and
:func:`dann_saddle_check` checks the whole DANN update against finite differences of the saddle objective.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import dispatch
from .. import functions as F
from .. import layers as L
from ..backend import to_device, to_numpy
from ..core import Tensor, no_grad
from .checker import check_backward, numerical_grad, rel_error


def away_from_zero(rng: np.random.Generator, shape) -> np.ndarray:
    """sign * U(0.1, 1): no element within 0.1 of ReLU's kink at 0."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 1.0, size=shape)


def shuffled_linspace(rng: np.random.Generator, shape) -> np.ndarray:
    """Distinct values spaced far apart compared with eps, in random order: no max-pool ties (Chainer's trick)."""
    n = int(np.prod(shape))
    return rng.permutation(np.linspace(-1.0, 1.0, n)).reshape(shape)


@dataclass
class Case:
    """One gradient check: ``fn(*inputs)`` with inputs from ``make(rng)``; a Module's params are checked too."""

    name: str
    shapes: str
    fn: Callable
    make: Callable[[np.random.Generator], list]
    module_factory: Callable[[np.random.Generator], L.Module] | None = None
    tol: dict = field(default_factory=lambda: {"rtol": 1e-5, "atol": 1e-8})
    #: a convolution's (x_shape, W_shape, stride, pad), for :func:`route`
    conv: tuple | None = None
    #: a max-pool's (kernel, stride), for :func:`route`
    pool: tuple | None = None


def _conv_case(N, C, H, W, OC, K, stride, pad, bias=True) -> Case:
    def make(rng):
        x = rng.standard_normal((N, C, H, W))
        Wt = rng.standard_normal((OC, C, K, K))
        return [x, Wt, rng.standard_normal(OC)] if bias else [x, Wt]

    def fn(x, W, b=None):
        return dispatch.conv2d(x, W, b, stride=stride, pad=pad)

    shapes = f"x({N},{C},{H},{W}) W({OC},{C},{K},{K}) stride {stride} pad {pad}" + ("" if bias else " no bias")
    # atol 1e-7: the objective sums hundreds of products, and its rounding (about 1e-16 * |f| / eps) reaches 1e-8
    # on a small gradient element for some seeds; a wrong backward is off by far more
    return Case("conv2d", shapes, fn, make, tol={"rtol": 1e-5, "atol": 1e-7},
                conv=((N, C, H, W), (OC, C, K, K), stride, pad))


def _pool_case(N, C, H, W, k, s) -> Case:
    return Case("max_pool2d", f"x({N},{C},{H},{W}) kernel {k} stride {s}",
                lambda x: dispatch.max_pool2d(x, k, s), lambda rng: [shuffled_linspace(rng, (N, C, H, W))], pool=(k, s))


def _labels(rng, n, k):
    return rng.integers(0, k, size=n)


def _small_convnet(rng) -> L.Module:
    return L.Sequential(L.Conv2d(2, 3, 3, pad=1, rng=rng), L.ReLU(), L.MaxPool2d(2, 2), L.Flatten(),
                        L.Linear(3 * 3 * 3, 4, rng=rng))


FUNCTION_CASES: list[Case] = [
    Case("add", "(3,4) + (4,) broadcast", F.add, lambda r: [r.standard_normal((3, 4)), r.standard_normal(4)]),
    Case("mul", "(3,4) * (3,4)", F.mul, lambda r: [r.standard_normal((3, 4)), r.standard_normal((3, 4))]),
    Case("reshape", "(2,3,4) -> (6,4)", lambda x: F.reshape(x, (6, 4)), lambda r: [r.standard_normal((2, 3, 4))]),
    Case("flatten", "(2,3,2,2) -> (2,12)", F.flatten, lambda r: [r.standard_normal((2, 3, 2, 2))]),
    Case("batch_slice", "(5,3)[1:4]", lambda x: F.batch_slice(x, slice(1, 4)), lambda r: [r.standard_normal((5, 3))]),
    Case("concat", "(2,3) ++ (3,3) axis 0", lambda a, b: F.concat([a, b]),
         lambda r: [r.standard_normal((2, 3)), r.standard_normal((3, 3))]),
    Case("sum", "(3,4) -> ()", F.sum, lambda r: [r.standard_normal((3, 4))]),
    Case("mean", "(3,4) -> ()", F.mean, lambda r: [r.standard_normal((3, 4))]),
    Case("relu", "(4,5)", dispatch.relu, lambda r: [away_from_zero(r, (4, 5))]),
    Case("sigmoid", "(4,5)", F.sigmoid, lambda r: [r.standard_normal((4, 5))]),
    Case("linear", "x(4,5) W(5,3) b(3)", dispatch.linear,
         lambda r: [r.standard_normal((4, 5)), r.standard_normal((5, 3)), r.standard_normal(3)]),
    Case("linear", "x(1,5) W(5,3) no bias, batch 1", dispatch.linear,
         lambda r: [r.standard_normal((1, 5)), r.standard_normal((5, 3))]),
    # stride 1, C * KW < 16: kept columns (the second is DANN's first layer, C = 3, K = 5)
    _conv_case(2, 3, 7, 7, 4, 3, 1, 0),
    _conv_case(2, 3, 8, 6, 4, 5, 1, 2),
    # stride 1, C * KW >= 16, pad < K: shifted rows, flipped-kernel input gradient
    _conv_case(2, 4, 6, 6, 3, 5, 1, 2),
    # stride 2, C * KW < 16: kept columns, col2im
    _conv_case(1, 2, 7, 5, 3, 3, 2, 0),
    _conv_case(2, 2, 9, 6, 3, 3, 2, 2, bias=False),
    # stride 2, C * KW >= 16: chunked im2col, col2im
    _conv_case(2, 4, 8, 7, 3, 5, 2, 2),
    # stride 1, pad >= K: the col2im input gradient
    _conv_case(2, 3, 5, 4, 2, 3, 1, 3),
    # a last chunk of images smaller than 4, on each route
    _conv_case(9, 4, 4, 4, 2, 5, 1, 2),
    _conv_case(5, 3, 5, 5, 2, 3, 1, 1),
    _conv_case(5, 2, 7, 7, 3, 3, 2, 1),
    _conv_case(6, 4, 8, 8, 3, 5, 2, 2),
    # tiled (kernel == stride; the second drops a last row and column) and overlapping windows
    _pool_case(2, 3, 6, 4, 2, 2),
    _pool_case(2, 2, 5, 5, 2, 2),
    _pool_case(2, 2, 6, 9, 3, 3),
    _pool_case(1, 2, 7, 5, 3, 2),
    Case("softmax_cross_entropy", "logits(5,4) labels(5,)", dispatch.softmax_cross_entropy,
         lambda r: [3 * r.standard_normal((5, 4)), _labels(r, 5, 4)]),
    Case("softmax_cross_entropy", "logits(1,3) labels(1,), batch 1", dispatch.softmax_cross_entropy,
         lambda r: [r.standard_normal((1, 3)), _labels(r, 1, 3)]),
    # The GRL's backward is not the derivative of its forward, except at lambd = -1 (then it is the identity's).
    # Exact checks of grad == -lambd * gy and the whole DANN update live in the tests and in gradcheck's main.
    Case("grad_reverse", "(3,4), lambd = -1", lambda x: F.grad_reverse(x, -1.0), lambda r: [r.standard_normal((3, 4))]),
]

LAYER_CASES: list[Case] = [
    Case("Linear", "x(3,5) -> (3,4)", None, lambda r: [r.standard_normal((3, 5))],
         module_factory=lambda rng: L.Linear(5, 4, rng=rng)),
    Case("Conv2d", "x(2,2,6,5) -> (2,3,6,5), 3x3 pad 1", None, lambda r: [r.standard_normal((2, 2, 6, 5))],
         module_factory=lambda rng: L.Conv2d(2, 3, 3, pad=1, rng=rng), conv=((2, 2, 6, 5), (3, 2, 3, 3), 1, 1)),
    Case("Conv2d", "x(1,3,7,7) -> (1,2,3,3), 3x3 stride 2", None, lambda r: [r.standard_normal((1, 3, 7, 7))],
         module_factory=lambda rng: L.Conv2d(3, 2, 3, stride=2, rng=rng), conv=((1, 3, 7, 7), (2, 3, 3, 3), 2, 0)),
    Case("MaxPool2d", "x(2,2,4,6) -> (2,2,2,3)", None, lambda r: [shuffled_linspace(r, (2, 2, 4, 6))],
         module_factory=lambda rng: L.MaxPool2d(2, 2), pool=(2, 2)),
    Case("ReLU", "(3,4)", None, lambda r: [away_from_zero(r, (3, 4))], module_factory=lambda rng: L.ReLU()),
    Case("Flatten", "(2,3,2) -> (2,6)", None, lambda r: [r.standard_normal((2, 3, 2))],
         module_factory=lambda rng: L.Flatten()),
    Case("GradientReversal", "(3,4), lambd = -1", None, lambda r: [r.standard_normal((3, 4))],
         module_factory=lambda rng: L.GradientReversal(-1.0)),
    # Random weights make exact ties and kinks unlikely, not impossible: seeds are fixed, so this is repeatable.
    Case("Sequential", "conv-relu-pool-flatten-linear on x(2,2,6,6)", None,
         lambda r: [r.standard_normal((2, 2, 6, 6))], module_factory=_small_convnet, tol={"rtol": 1e-4, "atol": 1e-7}),
]

ALL_CASES = FUNCTION_CASES + LAYER_CASES


def case_id(case: Case) -> str:
    return f"{case.name}[{case.shapes}]"


def route(case: Case, kernels: str, device: str = "cpu") -> str:
    """The fast route of a convolution ("forward / input gradient / weight gradient") or a max-pool, else "-".

    The names come from ``minidann.fast.conv.routes`` and ``minidann.fast.pool.routes``; the reference layer has
    one route for every shape (im2col, one product, col2im; windows, argmax, col2im), shown as "-".
    """
    if kernels != "fast":
        return "-"
    from ..fast import conv, pool

    if case.conv is not None:
        r = conv.routes(*case.conv, device=device)
        return f"{r['forward']} / {r['input_grad']} / {r['weight_grad']}"
    if case.pool is not None:
        r = pool.routes(*case.pool, device=device)
        return f"{r['forward']} / {r['input_grad']}"
    return "-"


def run_case(case: Case, device: str = "cpu", seed: int = 0, kernels: str | None = None) -> float:
    """Run one case (raising AssertionError on a mismatch) and return its worst relative error.

    ``kernels``: the layer of ops to run it on ("fast" or "reference"); None runs it on the active one.
    """
    with dispatch.kernels(kernels) if kernels is not None else contextlib.nullcontext():
        rng = np.random.default_rng(seed)
        inputs = [to_device(a, device) for a in case.make(rng)]
        if case.module_factory is None:
            return check_backward(case.fn, inputs, seed=seed, **case.tol)
        module = case.module_factory(np.random.default_rng(seed + 1)).to(device)
        return check_backward(module, inputs, seed=seed, params=module, **case.tol)


def grl_exact(lambd: float = 0.7, device: str = "cpu", seed: int = 0) -> float:
    """Check the GRL exactly: forward returns x unchanged, backward returns exactly -lambd * gy.

    Returns the largest absolute deviation (0.0 when exact); raises AssertionError otherwise.
    """
    rng = np.random.default_rng(seed)
    x = Tensor(to_device(rng.standard_normal((3, 4)), device), requires_grad=True)
    gy = to_device(rng.standard_normal((3, 4)), device)
    y = F.grad_reverse(x, lambd)
    y.backward(gy)
    if not np.array_equal(to_numpy(y.data), to_numpy(x.data)):
        raise AssertionError("grad_reverse forward is not the identity")
    expected = -lambd * to_numpy(gy)
    dev = float(np.max(np.abs(to_numpy(x.grad) - expected)))
    if dev != 0.0:
        raise AssertionError(f"grad_reverse backward differs from -lambd * gy by up to {dev}")
    return dev


def grl_plain_check_fails(lambd: float = 0.5, device: str = "cpu", seed: int = 0) -> str:
    """A plain finite-difference check of the GRL alone must FAIL for lambd > 0: its backward is not the
    derivative of its forward, by design. Returns the checker's message; raises if the check passed."""
    x = to_device(np.random.default_rng(seed).standard_normal((3, 4)), device)
    try:
        check_backward(lambda t: F.grad_reverse(t, lambd), [x], seed=seed)
    except AssertionError as e:
        return str(e)
    raise AssertionError(f"a plain gradient check of grad_reverse with lambd={lambd} passed; it must fail")


def dann_saddle_check(lambd: float = 0.6, device: str = "cpu", seed: int = 0, rtol: float = 1e-5,
                      atol: float = 1e-8) -> float:
    """The whole DANN update on a tiny model against finite differences of the saddle objective.

    A shared feature layer G_f (Linear + sigmoid), a label head G_y (Linear) on the source half, and GRL +
    domain head G_d (Linear, 2 classes) on source and target. One backward pass of L_y + L_d through the GRL
    must give: on theta_f the gradient of L_y - lambd * L_d; on theta_y that of L_y; on theta_d that of L_d.
    Returns the worst relative error; raises AssertionError naming the parameter on a mismatch.
    """
    rng = np.random.default_rng(seed)
    feat = L.Linear(4, 5, rng=rng).to(device)
    head_y = L.Linear(5, 3, rng=rng).to(device)
    head_d = L.Linear(5, 2, rng=rng).to(device)
    params = {"G_f": feat.parameters(), "G_y": head_y.parameters(), "G_d": head_d.parameters()}
    for group in params.values():
        for p in group:
            p.data = p.data.astype("float64")
    x = Tensor(to_device(rng.standard_normal((6, 4)), device))  # 3 source rows, then 3 target rows
    y_src = rng.integers(0, 3, size=3)
    d = np.array([0, 0, 0, 1, 1, 1])

    def losses(grl: bool):
        f = F.sigmoid(feat(x))
        L_y = dispatch.softmax_cross_entropy(head_y(f[:3]), y_src)
        L_d = dispatch.softmax_cross_entropy(head_d(F.grad_reverse(f, lambd) if grl else f), d)
        return L_y, L_d

    L_y, L_d = losses(grl=True)
    (L_y + L_d).backward()

    def saddle() -> float:  # E = L_y - lambd * L_d, what theta_f descends
        with no_grad():
            a, b = losses(grl=False)
            return a.item() - lambd * b.item()

    def domain_loss() -> float:  # what theta_d descends (footnote 6: weight 1, not lambd)
        with no_grad():
            return losses(grl=False)[1].item()

    def label_loss() -> float:
        with no_grad():
            return losses(grl=False)[0].item()

    targets = {"G_f": (saddle, "L_y - lambd * L_d"), "G_y": (label_loss, "L_y"), "G_d": (domain_loss, "L_d")}
    worst = 0.0
    for part, group in params.items():
        f, what = targets[part]
        for p in group:
            host = to_numpy(p.data).copy()

            def obj(p=p, host=host, f=f):
                p.data = to_device(host, device)
                return f()

            numeric = numerical_grad(obj, host)
            p.data = to_device(host, device)
            analytic = to_numpy(p.grad)
            if not np.all(np.abs(analytic - numeric) <= atol + rtol * np.abs(numeric)):
                raise AssertionError(f"DANN update: the gradient on {part} (shape {p.shape}) is not d({what})/d{part}"
                                     f": relative error {rel_error(analytic, numeric):.3g}")
            worst = max(worst, rel_error(analytic, numeric))
    return worst
