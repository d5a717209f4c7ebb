"""Every op and layer passes a float64 gradient check with a random upstream gradient, on both layers of ops;
the checker itself catches planted bugs and names what failed."""

import subprocess
import sys

import numpy as np
import pytest

import minidann as md
import minidann.functions as F
from minidann import dispatch
from minidann.core import Function
from minidann.gradcheck import away_from_zero, cases, check_backward, numerical_grad
from minidann.gradcheck.__main__ import main
from minidann.gradcheck.cases import case_id


@pytest.mark.parametrize("kernels", dispatch.KERNELS)
@pytest.mark.parametrize("case", cases.ALL_CASES, ids=cases.case_id)
def test_every_op_and_layer_passes_gradcheck(case, kernels):
    assert cases.run_case(case, "cpu", kernels=kernels) < 1e-4
    assert dispatch.active_kernels() == "fast"  # run_case restores the layer that was active


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_convolutions_pass_for_other_seeds_too(seed):
    # the tolerance leaves room for the rounding of long sums, which some seeds bring near a small gradient element
    for case in cases.ALL_CASES:
        if case.conv is not None:
            assert cases.run_case(case, "cpu", seed) < 1e-4, case_id(case)


def _conv_cases():
    return [(c.conv, c.shapes) for c in cases.ALL_CASES if c.name == "conv2d"]


def test_conv_cases_cover_every_route_of_the_fast_layer():
    # every CPU route of the fast conv (im2col-batch is the GPU's) runs in the table, each also with a batch whose
    # last chunk of 4 images is smaller; both max-pool routes run too
    from minidann.fast import conv, pool

    convs = [conv for conv, _ in _conv_cases()]
    taken = {(part, r[part]) for c in convs for r in [conv.routes(*c)] for part in r}
    cpu = {(part, name) for part, names in conv.ROUTES.items() for name in names if name != "im2col-batch"}
    assert taken == cpu, f"routes without a gradient check: {cpu - taken}"
    small_last = {conv.routes(*c)["forward"] for c in convs if c[0][0] > 4 and c[0][0] % 4}
    assert small_last == set(conv.ROUTES["forward"]) - {"im2col-batch"}, "a smaller last chunk on each route"
    assert (3, 5) in {(x[1], W[3]) for x, W, s, p in convs if s == 1}, "DANN's first layer, C = 3, K = 5"
    pools = {pool.routes(*c.pool, device=d)["forward"] for c in cases.ALL_CASES if c.pool is not None
             for d in ("cpu", "gpu")}
    assert pools == set(pool.ROUTES["forward"]), "tiled (CPU), fused (GPU) and overlapping max-pool"


def test_table_covers_every_public_function_and_layer():
    import minidann.layers as L

    checked = {c.name for c in cases.ALL_CASES}
    # im2col/col2im are not ops of the graph; they are tested through conv2d and their adjoint identity
    ops = set(F.__all__) - {"im2col", "col2im"}
    assert ops <= checked, f"functions without a gradient check: {ops - checked}"
    layers = {n for n, v in vars(L).items() if isinstance(v, type) and issubclass(v, L.Module) and v is not L.Module}
    assert layers <= checked, f"layers without a gradient check: {layers - checked}"


class TwiceRelu(Function):
    """A planted bug: the backward returns 2 * the right gradient."""

    def forward(self, x):
        self.x = x
        return np.maximum(x, 0)

    def backward(self, gy):
        return 2 * gy * (self.x > 0)


class TransposedGy(Function):
    """A planted bug: y = x @ W, but gx uses gy transposed-shaped wrongly (gy.T.T-like index mix-up)."""

    def forward(self, x):
        return x * 3.0

    def backward(self, gy):
        # correct would be 3 * gy; this routes gradients to the transposed positions
        return 3.0 * gy.T.reshape(gy.shape)


def test_checker_catches_doubled_gradient():
    x = away_from_zero(np.random.default_rng(0), (3, 4))
    with pytest.raises(AssertionError, match=r"input 0 .*analytic .*numeric .*relative error"):
        check_backward(lambda t: TwiceRelu()(t), [x])


def test_checker_catches_transposed_gradient():
    x = np.random.default_rng(0).standard_normal((3, 3))
    with pytest.raises(AssertionError, match="element"):
        check_backward(lambda t: TransposedGy()(t), [x])


class NanGrad(Function):
    """A planted bug: the backward returns NaN (say, 0 / 0 in a student's formula)."""

    def forward(self, x):
        return x * 3.0

    def backward(self, gy):
        return gy * np.nan


def test_checker_fails_on_nan_gradients_inputs_and_upstream():
    # NaN compares False with every tolerance: without its own check, a NaN gradient would pass
    x = np.random.default_rng(0).standard_normal((3, 3))
    with pytest.raises(AssertionError, match=r"input 0 .*the analytic \(backward\) gradient is nan at element"):
        check_backward(lambda t: NanGrad()(t), [x])
    x_nan = x.copy()
    x_nan[1, 2] = np.inf
    with pytest.raises(AssertionError, match="input 0: it holds NaN or infinity"):
        check_backward(lambda t: t * 2.0, [x_nan])
    with pytest.raises(AssertionError, match="gy holds NaN or infinity"):
        check_backward(lambda t: t * 2.0, [x], gy=np.full((3, 3), np.nan))


@pytest.mark.parametrize("eps", [0.0, -1e-6, float("nan")])
def test_checker_needs_a_positive_step(eps):
    with pytest.raises(ValueError, match="eps must be a small positive step"):
        check_backward(lambda t: t * 2.0, [np.ones(3)], eps=eps)


def test_checker_needs_fn_to_return_one_tensor():
    with pytest.raises(ValueError, match=r"fn must return one Tensor .*got tuple.*lambda x: fn\(x\)\[0\]"):
        check_backward(lambda t: (t * 2.0, t), [np.ones(3)])


def test_transposed_gradient_would_pass_with_an_all_ones_upstream():
    # Why the upstream gradient is random: with gy = 1 the transposed routing is invisible.
    x = np.random.default_rng(0).standard_normal((3, 3))
    check_backward(lambda t: TransposedGy()(t), [x], gy=np.ones((3, 3)))


def test_checker_returns_worst_relative_error_and_uses_float64():
    seen = []

    def fn(x):
        seen.append(x.dtype)
        return F.mul(x, x)

    err = check_backward(fn, [np.random.default_rng(0).standard_normal(5).astype(np.float32)])
    assert 0 <= err < 1e-6 and seen[0] == np.float64


def test_checker_holds_integer_inputs_constant():
    logits = np.random.default_rng(1).standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2])
    assert check_backward(F.softmax_cross_entropy, [logits, labels]) < 1e-6


def test_numerical_grad_restores_input():
    x = np.random.default_rng(0).standard_normal(6)
    before = x.copy()
    g = numerical_grad(lambda: float((x**2).sum()), x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-6)


def _rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["op", "shapes", "kernels"] and set(lines[2]) <= {"-", " "}
    starts = [i for i, ch in enumerate(lines[2]) if ch == "-" and (i == 0 or lines[2][i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [[line[a:b].strip() for a, b in bounds] for line in lines[3:-1]]


@pytest.mark.parametrize("layers", [["--kernels", "both"], []])
def test_gradcheck_command_passes_on_both_layers_with_a_row_per_case(capsys, layers):
    assert main(["--device", "cpu", *layers]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    expected = [(c.name, c.shapes) for c in cases.ALL_CASES]
    for name in dispatch.KERNELS:
        mine = [r for r in rows if r[2] == name]
        assert [(r[0], r[1]) for r in mine[:len(expected)]] == expected
        assert len(mine) == len(expected) + 3  # and the two GRL checks and the DANN update
        assert all(r[5] == "pass" for r in mine)
    assert len(rows) == 2 * (len(expected) + 3)
    for name in set(F.__all__) - {"im2col", "col2im"}:
        assert name in out
    assert "FAIL" not in out and out.splitlines()[-1] == f"{len(rows)} of {len(rows)} checks passed"
    assert dispatch.active_kernels() == "fast"


@pytest.mark.parametrize("layer", dispatch.KERNELS)
def test_gradcheck_command_runs_one_layer(capsys, layer):
    assert main(["--kernels", layer, "--seed", "3"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert {r[2] for r in rows} == {layer} and len(rows) == len(cases.ALL_CASES) + 3


def test_gradcheck_command_shows_the_fast_routes(capsys, monkeypatch):
    from minidann.fast import conv

    def routes(x_shape, W_shape, stride, pad, device="cpu"):
        assert device == "cpu"
        return {"forward": f"fwd-s{stride}", "input_grad": f"gx-p{pad}", "weight_grad": f"gW-n{x_shape[0]}"}

    monkeypatch.setattr(conv, "routes", routes, raising=False)
    assert main(["--kernels", "both"]) == 0
    rows = _rows(capsys.readouterr().out)
    convs = [c for c in cases.ALL_CASES if c.conv is not None]
    for c in convs:
        (x, _, s, p) = c.conv
        fast = next(r for r in rows if r[:3] == [c.name, c.shapes, "fast"])
        ref = next(r for r in rows if r[:3] == [c.name, c.shapes, "reference"])
        assert fast[3] == f"fwd-s{s} / gx-p{p} / gW-n{x[0]}" and ref[3] == "-"
    from minidann.fast import pool

    pools = [c for c in cases.ALL_CASES if c.pool is not None]
    assert {c.pool for c in pools} >= {(2, 2), (3, 2)}  # the tiled trick and the reference fallback
    for c in pools:
        fast = next(r for r in rows if r[:3] == [c.name, c.shapes, "fast"])
        r = pool.routes(*c.pool)
        assert fast[3] == f"{r['forward']} / {r['input_grad']}"
    routed = {(c.name, c.shapes) for c in convs + pools}
    assert all(r[3] == "-" for r in rows if (r[0], r[1]) not in routed)


def test_gradcheck_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "minidann.gradcheck", "--kernels", "reference"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kernels: reference" in done.stdout and "checks passed" in done.stdout


def test_gradcheck_command_refuses_an_unknown_layer(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--kernels", "slow"])
    assert info.value.code == 2 and "invalid choice: 'slow'" in capsys.readouterr().err


class WrongBiasLinear(Function):
    """A planted bug in a layer: y = x W + b, but the bias gradient forgets to sum over the batch (takes row 0)."""

    def forward(self, x, W, b):
        self.x, self.W = x, W
        return x @ W + b

    def backward(self, gy):
        return gy @ self.W.T, self.x.T @ gy, gy[0]


class PlantedLinear(md.Linear):
    def forward(self, x):
        return WrongBiasLinear()(x, self.W, self.b)


def _net(last):
    rng = np.random.default_rng(0)
    inner = md.Sequential(md.Linear(4, 5, rng=rng), md.ReLU(), last(5, 2, rng=rng))
    return md.Sequential(md.Linear(3, 4, rng=rng), inner)


def test_a_failure_names_the_parameter_as_the_module_names_it():
    x = np.random.default_rng(1).standard_normal((4, 3))
    net = _net(PlantedLinear)
    for params in (net, net.parameters()):  # the Module, or its parameters: named as named_parameters names them
        with pytest.raises(AssertionError, match=r"gradient check failed for parameter 1\.2\.b \(shape \(2,\)\)"):
            check_backward(net, [x], params=params)
    correct = _net(md.Linear)
    assert check_backward(correct, [x], params=correct) < 1e-5


def test_parameters_without_a_module_are_named_by_key_or_position():
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((4, 3)), md.Parameter(rng.standard_normal((3, 2))), md.Parameter(np.zeros(2))
    with pytest.raises(AssertionError, match=r"failed for parameter 1 \(shape"):
        check_backward(lambda t: WrongBiasLinear()(t, W, b), [x], params=[W, b])
    with pytest.raises(AssertionError, match=r"failed for parameter bias \(shape"):
        check_backward(lambda t: WrongBiasLinear()(t, W, b), [x], params={"weight": W, "bias": b})


class DoubledGradient(Function):
    """A planted bug for a whole layer of ops: the identity going forward, twice the gradient going back."""

    def forward(self, y):
        return y

    def backward(self, gy):
        return 2 * gy


@pytest.mark.parametrize("layer", dispatch.KERNELS)
def test_a_bug_in_one_layer_of_ops_fails_only_that_layers_rows(capsys, monkeypatch, layer):
    import minidann.fast.conv

    module = minidann.fast.conv if layer == "fast" else F
    right = module.conv2d
    monkeypatch.setattr(module, "conv2d", lambda *args, **kw: DoubledGradient()(right(*args, **kw)))
    assert main(["--kernels", "both"]) == 1
    rows = _rows(capsys.readouterr().out)
    failed = {(r[0], r[2]) for r in rows if r[5] != "pass"}
    assert failed == {("conv2d", layer), ("Conv2d", layer), ("Sequential", layer)}
    assert all(r[5].startswith("FAIL: gradient check failed for input 0") for r in rows
               if r[0] == "conv2d" and r[2] == layer)


def test_the_table_in_the_docs_is_the_table_the_command_prints(capsys):
    # the rows, layers and results; the relative errors depend on the machine's BLAS, the routes on the fast layer
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "gradcheck.md").read_text()
    table = doc[doc.index("minidann gradient checks on cpu"):]
    table = table[:table.index("```")]
    assert main([]) == 0
    printed = capsys.readouterr().out
    assert table.splitlines()[0] == printed.splitlines()[0]
    assert [(r[0], r[1], r[2], r[5]) for r in _rows(table)] == [(r[0], r[1], r[2], r[5]) for r in _rows(printed)], \
        "docs/gradcheck.md: paste the output of python -m minidann.gradcheck into the table"
