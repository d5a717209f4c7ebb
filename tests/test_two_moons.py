"""The two-moons toy (examples/two_moons.py): data, the logistic domain loss, and DANN beating the baseline."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minidann as md
from minidann.gradcheck import check_backward

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "two_moons.py"


@pytest.fixture(scope="module")
def tm():
    spec = importlib.util.spec_from_file_location("two_moons", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_moons_without_noise_lie_on_two_half_circles(tm):
    X, y = tm.make_moons(301, noise=0.0, rng=np.random.default_rng(0))
    assert X.shape == (301, 2) and np.bincount(y).tolist() == [151, 150]
    upper, lower = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0)  # unit circle around (0, 0), upper half
    assert (upper[:, 1] >= 0).all()
    np.testing.assert_allclose(np.hypot(*(lower - [1.0, 0.5]).T), 1.0)  # around (1, 0.5), lower half
    assert (lower[:, 1] <= 0.5).all()


def test_domains_are_centred_scaled_and_rotated(tm):
    data = tm.make_domains(n_samples=300, angle=35.0, noise=0.05, n_test=100, seed=0)
    assert data["Xs"].shape == data["Xt"].shape == (300, 2) and data["X_test"].shape == (100, 2)
    assert data["Xs"].dtype == np.float32 and data["ys"].dtype == np.int64
    assert np.bincount(data["ys"]).tolist() == [150, 150]
    assert abs(data["Xs"].mean(axis=0)).max() < 1e-5  # centred on the source mean
    c, s = math.cos(math.radians(35)), math.sin(math.radians(35))
    np.testing.assert_allclose(tm.rotation(35.0) @ np.array([1.0, 0.0]), [c, s])  # counter-clockwise
    np.testing.assert_allclose(tm.rotation(35.0) @ tm.rotation(-35.0), np.eye(2), atol=1e-12)


def test_target_is_the_source_distribution_rotated(tm):
    # Same generator draws, so rotating the target back gives moons with the source's shape: compare the
    # covariance of the noise-free clouds (a rotation-sensitive statistic).
    data = tm.make_domains(n_samples=20000, angle=35.0, noise=0.0, n_test=10, seed=1)
    back = data["Xt"] @ tm.rotation(-35.0).T
    np.testing.assert_allclose(np.cov(back.T), np.cov(data["Xs"].T), atol=0.05)
    assert not np.allclose(np.cov(data["Xt"].T), np.cov(data["Xs"].T), atol=0.05)


def test_logistic_loss_gradient_check(tm):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, 1)) * 3
    t = rng.integers(0, 2, (6, 1)).astype(np.float64)
    check_backward(lambda z: tm.logistic_loss(z, t), [z])
    # value: sum of -log sigmoid(z) for t = 1 and -log(1 - sigmoid(z)) for t = 0
    s = 1 / (1 + np.exp(-z))
    expected = -(t * np.log(s) + (1 - t) * np.log(1 - s)).sum()
    assert tm.logistic_loss(md.Tensor(z), t).item() == pytest.approx(expected)
    # no overflow for large logits, and float32 stays float32
    big = md.Tensor(np.array([[80.0], [-80.0]], np.float32), requires_grad=True)
    loss = tm.logistic_loss(big, np.array([0.0, 1.0]))
    loss.backward()
    assert loss.item() == pytest.approx(160.0) and big.grad.dtype == np.float32


def test_logistic_loss_with_a_planted_bug_fails_the_check(tm):
    class Buggy(tm.LogisticLoss):
        def backward(self, gy):
            return gy * (self.t - 0.5)  # forgot the sigmoid

    z = np.random.default_rng(0).standard_normal((4, 1))
    t = np.array([[0.0], [1.0], [1.0], [0.0]])
    with pytest.raises(AssertionError, match="gradient check failed"):
        check_backward(lambda z: Buggy(t)(z), [z])


def test_training_never_reads_target_labels(tm):
    data = tm.make_domains(n_samples=40, n_test=20, seed=0)
    scrambled = dict(data, yt=np.zeros_like(data["yt"]), y_test=np.zeros_like(data["y_test"]))
    weights = []
    for d in (data, scrambled):
        model = tm.ShallowDANN(15, 6.0, rng=np.random.default_rng(0))
        tm.train(model, d, lambd=6.0, epochs=2, seed=0)
        weights.append(model.state_dict())
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])


def test_baseline_hidden_layer_gets_no_domain_gradient(tm):
    # lambd = 0 in the GRL: the hidden layer trains on L_y alone, so a model with a different domain head
    # ends with the same hidden weights.
    data = tm.make_domains(n_samples=40, n_test=20, seed=0)
    hidden = []
    for domain_lr_scale in (6.0, 0.0):
        model = tm.ShallowDANN(15, 0.0, rng=np.random.default_rng(0))
        tm.train(model, data, lambd=0.0, domain_lr_scale=domain_lr_scale, epochs=2, seed=0)
        hidden.append(model.hidden.W.data.copy())
    np.testing.assert_allclose(hidden[0], hidden[1], atol=1e-6)


def test_dann_beats_the_baseline_on_the_target_at_reduced_size(tm, tmp_path, capsys):
    # 40 epochs instead of 300, three seeds: DANN's mean target accuracy must be clearly above the baseline's.
    base, dann = [], []
    for seed in range(3):
        r = tm.main(["--out", str(tmp_path / str(seed)), "--epochs", "40", "--seed", str(seed), "--no-plot"])
        base.append(r["baseline_target_acc"])
        dann.append(r["dann_target_acc"])
        assert r["dann_source_acc"] > 0.95 and r["baseline_source_acc"] > 0.95
    assert np.mean(dann) > np.mean(base) + 0.03, (base, dann)
    saved = json.loads((tmp_path / "2" / "results.json").read_text())
    assert saved["dann_target_acc"] == dann[2] and saved["baseline_target_acc"] == base[2]
    assert "target acc" in capsys.readouterr().out


@pytest.mark.slow
def test_default_run_writes_panels_and_results(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["dann_target_acc"] > results["baseline_target_acc"] + 0.05
    assert results["seconds"] > 0  # recorded (how long it takes is not a test's business)
    png = (out / "two_moons.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"config.json", "metrics.csv"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--hidden", "0"], "--hidden >= 1"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lambd", "-1"], "--lambd a finite number >= 0"),
])
def test_bad_flags_exit_2_with_the_reason(tm, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        tm.parse_args(flags)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tm, tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    with pytest.raises(SystemExit) as info:
        tm.parse_args(["--out", str(out)])
    assert info.value.code == 2 and "is a file" in capsys.readouterr().err and out.read_text() == "keep me"


def test_a_diverging_run_stops_with_exit_3_and_says_lower_the_lr(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "run"), "--epochs", "2",
                           "--n-samples", "20", "--n-test", "10", "--lr", "1e300", "--no-plot"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "loss became NaN or infinite in epoch 1" in proc.stderr and "lower --lr" in proc.stderr
    assert "Traceback" not in proc.stderr
