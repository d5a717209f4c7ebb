"""The coursework example of docs/coursework.md: the student's LeakyReLU passes the check, buggy variants raise."""

import re
from pathlib import Path

import numpy as np
import pytest

import minidann as md
from minidann.gradcheck import away_from_zero, check_backward

DOC = Path(__file__).resolve().parents[1] / "docs" / "coursework.md"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The namespace left by running every ```python block of docs/coursework.md, in order."""
    text = DOC.read_text()
    namespace: dict = {"__name__": "coursework"}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("coursework"))
    try:
        for block in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M):
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - running the worked example
    finally:
        os.chdir(cwd)
    return namespace


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5, 2.0])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2, 2)])
def test_leaky_relu_passes_the_check(example, alpha, shape):
    x = away_from_zero(np.random.default_rng(1), shape)
    assert check_backward(lambda t: example["leaky_relu"](t, alpha), [x]) < 1e-6


def test_leaky_relu_forward_and_dtype(example):
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0], np.float32)
    t = md.Tensor(x, requires_grad=True)
    y = example["leaky_relu"](t, 0.1)
    np.testing.assert_allclose(y.data, [-0.2, -0.05, 0.0, 0.5, 3.0], rtol=1e-6)
    assert y.dtype == np.float32
    y.backward(np.ones(5, np.float32))
    np.testing.assert_allclose(t.grad, [0.1, 0.1, 0.1, 1.0, 1.0], rtol=1e-6)
    assert t.grad.dtype == np.float32


def test_the_documented_bug_raises_and_the_doc_shows_the_real_message(example):
    message = example["message"]
    assert message.startswith("gradient check failed for input 0 (shape (4, 5)) at element")
    # the ```text block under the bug in the doc is exactly what the checker printed
    shown = re.search(r"^prints\n\n```text\n(.*?)\n```", DOC.read_text(), re.S | re.M).group(1)
    assert shown == message
    # 6 of 20 elements fail: exactly the negative entries of x
    assert f"{int((example['x'] <= 0).sum())} of 20 elements" in message


def _variant(base, backward):
    return type("Buggy", (base,), {"backward": backward})


BUGS = {
    "forgot alpha": lambda self, gy: gy * self.positive,
    "wrong sign": lambda self, gy: np.where(self.positive, gy, -self.alpha * gy),
    "branches swapped": lambda self, gy: np.where(self.positive, self.alpha * gy, gy),
    "ignores gy": lambda self, gy: np.where(self.positive, 1.0, self.alpha) + 0 * gy,
    "gy transposed": lambda self, gy: np.where(self.positive, gy.T, self.alpha * gy.T),
}


@pytest.mark.parametrize("bug", BUGS)
def test_buggy_variants_raise(example, bug):
    Buggy = _variant(example["LeakyReLU"], BUGS[bug])
    x = away_from_zero(np.random.default_rng(2), (4, 4))  # square, so a transposed gy has the right shape
    with pytest.raises(AssertionError, match="gradient check failed for input 0"):
        check_backward(lambda t: Buggy(0.1)(t), [x])


def test_buggy_layer_inside_a_network_is_caught(example):
    Buggy = _variant(example["LeakyReLU"], BUGS["forgot alpha"])

    class Layer(md.Module):
        def forward(self, x):
            return Buggy(0.1)(x)

    rng = np.random.default_rng(0)
    net = md.Sequential(md.Linear(3, 4, rng=rng), Layer(), md.Linear(4, 2, rng=rng))
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_backward(net, [rng.standard_normal((5, 3))], params=net.parameters())
