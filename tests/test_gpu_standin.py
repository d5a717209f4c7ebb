"""The GPU path on the CuPy stand-in, on every machine: its strictness, CuPy-only traps, and the step's budgets.

The budgets count what one training step asks of the device (tests/cupy_standin.py counts it): kernel launches,
host syncs and host-to-device copies. They hold on the stand-in on any machine, so CI guards them.
"""

import os
import subprocess
import sys
from pathlib import Path

import cupy_standin
import numpy as np
import pytest

import minidann as md
import minidann.functions as F
from minidann import backend
from minidann import train as train_module
from minidann.backend import is_cupy_array, to_device, to_numpy
from minidann.checkpoint import load_checkpoint, save_checkpoint
from minidann.dann import build_model, build_optimizer, domain_labels, pixel_mean, prepare_mnist, train_step
from minidann.dann import step as step_module
from minidann.train import DomainData, Trainer

ROOT = Path(__file__).resolve().parents[1]

#: Launches of one DANN step (forward, backward, SGD) as measured on the stand-in: the same at every batch size.
#: Measured 79 (188 before the fused kernels of minidann.fast.fused and the gradient slots): the five linear layers
#: 25, the two convolutions 21, SGD 4 (a fresh zeroed gradient buffer, whose slots the linear layers and the conv
#: biases write their gradients into; the two conv weights' gradients copied there; one fused update), ReLU 5 forward
#: and 5 fused gradients, max-pool 4 (a fused kernel each way, per pool), cross-entropy 6 (rows and mean forward, one
#: gradient, per loss), domain accuracy 3; the other 6: L_y + L_d, backward's seed, the GRL, the features' slice (2)
#: and the sum of the features' two gradients.
DANN_STEP_LAUNCHES = 79


# ---- the stand-in is as strict as CuPy ----

def test_standin_refuses_implicit_conversion_and_host_operands(standin):
    a = cupy_standin.asarray(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    for op in (lambda: a + np.ones(3), lambda: np.ones(3) + a, lambda: a * np.float32(2) + np.zeros((2, 3))):
        with pytest.raises(TypeError, match="Unsupported type"):
            op()
    assert isinstance(a * np.float32(2), cupy_standin.ndarray)  # NumPy scalars are fine, as in CuPy
    assert not isinstance(a, np.ndarray)


def test_standin_ufunc_results_are_c_contiguous_and_reductions_stay_on_the_device(standin):
    a = cupy_standin.asarray(np.arange(6.0).reshape(2, 3))
    assert (a.T * 2).flags.c_contiguous and not a.T.flags.c_contiguous
    total = a.sum()
    assert isinstance(total, cupy_standin.ndarray) and total.shape == ()
    assert standin.n_syncs == 0
    assert float(total) == 15.0 and standin.syncs["float"] == 1
    a.get(), int(a[0, 0]), bool(a[0, 1]), a[0, 2].item(), cupy_standin.asnumpy(a)
    cupy_standin.cuda.get_current_stream().synchronize()
    assert standin.n_syncs == 7


def test_standin_wraps_out_of_range_indices_as_cupy_does(standin):
    a = cupy_standin.asarray(np.arange(10.0).reshape(2, 5))
    idx = cupy_standin.asarray(np.array([0, 2]))
    np.testing.assert_array_equal(a[cupy_standin.arange(2), idx + 5].get(), [0.0, 7.0])  # 5 -> 0, 7 -> 2
    np.testing.assert_array_equal(cupy_standin.take(a[0], idx + 5).get(), [0.0, 2.0])


def test_standin_counts_views_as_free_and_copies_as_launches(standin):
    a = cupy_standin.zeros((4, 4), np.float32)
    standin.reset()
    a.T, a.reshape(16), a[1:3], a.transpose(1, 0)
    assert standin.n_launches == 0
    a.T.reshape(16)  # a transposed array cannot be viewed flat: a copy
    a + a
    a[1:3] = 1.0
    assert standin.n_launches == 3


# ---- CuPy-only traps ----

def test_cupy_array_times_tensor_is_tensor_times_cupy_array(standin):
    x = md.Tensor(to_device(np.arange(4.0), "gpu"), requires_grad=True)
    c = to_device(np.full(4, 2.0), "gpu")
    for y in (c * x, x * c, c + x, c - x):
        assert isinstance(y, md.Tensor) and is_cupy_array(y.data)
    np.testing.assert_array_equal(to_numpy((c * x).data), [0.0, 2.0, 4.0, 6.0])
    np.testing.assert_array_equal(to_numpy((c - x).data), [2.0, 1.0, 0.0, -1.0])
    (c * x).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [2.0, 2.0, 2.0, 2.0])


def test_numpy_array_and_scalar_times_tensor_stay_tensors():
    x = md.Tensor(np.arange(3.0), requires_grad=True)
    for y, want in ((np.full(3, 2.0) * x, [0.0, 2.0, 4.0]), (np.float64(3.0) * x, [0.0, 3.0, 6.0]),
                    (np.ones(3) - x, [1.0, 0.0, -1.0]), (np.ones(3) + x, [1.0, 2.0, 3.0])):
        assert isinstance(y, md.Tensor)
        np.testing.assert_array_equal(y.data, want)


def test_tensor_of_a_cupy_array_made_before_minidann_imported_cupy(standin, monkeypatch):
    a = cupy_standin.asarray(np.ones((2, 2), np.float32))
    monkeypatch.setattr(backend, "_cupy", None)  # the program imported CuPy itself; minidann has not yet
    t = md.Tensor(a)
    assert t.data is a and backend._cupy is cupy_standin
    assert backend.get_array_module(a) is cupy_standin


def test_load_state_dict_takes_device_arrays(standin):
    gpu_model = build_model(np.random.default_rng(0), "gpu")
    cpu_model = build_model(np.random.default_rng(1))
    state = {name: p.data for name, p in gpu_model.named_parameters()}  # device arrays
    cpu_model.load_state_dict(state)
    assert all(isinstance(p.data, np.ndarray) for p in cpu_model.parameters())
    other = build_model(np.random.default_rng(2), "gpu")
    other.load_state_dict(state)
    for (name, a), (_, b) in zip(gpu_model.named_parameters(), other.named_parameters(), strict=True):
        assert is_cupy_array(b.data) and b.data is not a.data, name  # copied, not aliased
        np.testing.assert_array_equal(to_numpy(a.data), to_numpy(b.data))
        np.testing.assert_array_equal(to_numpy(a.data), cpu_model.state_dict()[name])


def test_save_checkpoint_takes_device_arrays(standin, tmp_path):
    model = build_model(np.random.default_rng(0), "gpu")
    opt = build_optimizer(model)
    opt.velocities[0] = to_device(np.ones(model.parameters()[0].shape, np.float32), "gpu")
    path = save_checkpoint(tmp_path / "c.npz", model, opt, state={"acc": to_device(np.arange(3.0), "gpu")}, step=1)
    ckpt = load_checkpoint(path)
    np.testing.assert_array_equal(ckpt.state["acc"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(ckpt.optimizer["velocity.0"], 1.0)
    opt.load_state_dict({k: to_device(v, "gpu") for k, v in ckpt.optimizer.items()})  # device momentum too
    assert is_cupy_array(opt.velocities[0])


@pytest.mark.parametrize("value,on", [(None, False), ("0", False), ("1", True), ("2", True), ("-1", False)])
def test_cupy_tf32_is_on_for_any_integer_above_0(value, on):
    env = {} if value is None else {"CUPY_TF32": value}
    assert backend.cupy_tf32_enabled(env) is on


def test_cupy_tf32_that_is_not_an_integer_is_an_error():
    with pytest.raises(ValueError, match="CUPY_TF32='yes' is not an integer"):
        backend.cupy_tf32_enabled({"CUPY_TF32": "yes"})


# ---- budgets of one step ----

@pytest.fixture(scope="module")
def dann_step_counts():
    """What one DANN step at batch 64 and one at 512 asked of the device: {batch: (launches, syncs, h2d)}.

    Both in the steady state of training: after a first step at that batch size, so that the momentum buffers
    and the batch split's domain labels exist. (Measured once for the tests below; one model for both batch
    sizes: a batch of 512 through NumPy takes a while.)
    """
    mp = pytest.MonkeyPatch()
    counted = {}
    try:
        counters = cupy_standin.install(mp)
        model = build_model(np.random.default_rng(0), "gpu")
        opt = build_optimizer(model)
        rng = np.random.default_rng(1)
        for batch in (64, 64, 512, 512):
            x_host = rng.standard_normal((batch, 3, 28, 28)).astype(np.float32)
            y = rng.integers(0, 10, batch // 2)
            counters.reset()
            x = to_device(x_host, "gpu")
            stats = train_step(model, opt, x, y, "dann", 0.5, 0.01)
            assert all(is_cupy_array(v) for v in (stats.label_loss, stats.domain_loss, stats.domain_acc))
            counted[batch] = (counters.n_launches, dict(counters.syncs), list(counters.h2d))
    finally:
        mp.undo()
    return counted


@pytest.mark.parametrize("batch", [64, 512])
def test_a_dann_step_makes_no_host_sync(dann_step_counts, batch):
    assert dann_step_counts[batch][1] == {}


def test_a_dann_step_launches_as_many_kernels_at_batch_64_as_at_512(dann_step_counts):
    n64, n512 = dann_step_counts[64][0], dann_step_counts[512][0]
    assert n64 == n512 <= DANN_STEP_LAUNCHES


@pytest.mark.parametrize("batch", [64, 512])
def test_a_dann_step_copies_only_its_batch_to_the_device(dann_step_counts, batch):
    # the images, then the source labels (given as host labels here: the loss checks them on the host for free,
    # then copies them); the domain labels are made on the device once per batch split, not copied
    assert [shape for shape, _ in dann_step_counts[batch][2]] == [(batch, 3, 28, 28), (batch // 2,)]


def _tiny_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    xs = prepare_mnist((rng.random((n, 28, 28)) > 0.7).astype(np.uint8) * 255)
    xt = rng.integers(0, 256, (n, 3, 28, 28)).astype(np.uint8)
    ys = rng.integers(0, 10, n)
    return DomainData(xs, ys, xt, ys.copy(), pixel_mean(xs, xt))


@pytest.mark.parametrize("mode", ["dann", "source"])
def test_the_training_loop_syncs_once_per_logging_interval(standin, mode):
    rng = np.random.default_rng(0)
    model = build_model(rng, "gpu")
    steps, log_every = 20, 5
    t = Trainer(model, build_optimizer(model), _tiny_data(), mode, steps, 8, rng, log_every=log_every,
                progress=False)
    standin.reset()
    t.run()
    # one copy of the window's statistics per metrics row; at the end, waits for the run's clock
    assert set(standin.syncs) <= {"get", "stream.synchronize"}
    assert standin.syncs["get"] == steps // log_every and standin.syncs["stream.synchronize"] <= 2
    # per step one copy: its batch's uint8 pixels and, behind them, its labels; nothing else (the domain labels
    # are made on the device once)
    n_labelled = 4 if mode == "dann" else 8
    assert standin.h2d == [((8 * 3 * 28 * 28 + n_labelled * 8,), "uint8")] * steps


@pytest.mark.parametrize("n_labels,dtype", [(4, np.int64), (3, np.int64), (5, np.int32), (7, np.uint8)])
def test_a_batch_goes_to_the_device_in_one_copy_and_is_preprocessed_there_bit_for_bit(standin, n_labels, dtype):
    from minidann.dann import preprocess
    from minidann.fast.batch_copy import ALIGN, batch_to_device

    rng = np.random.default_rng(n_labels)
    pixels = rng.integers(0, 256, (5, 3, 4, 6)).astype(np.uint8)  # 360 bytes: the labels start at 368
    labels = rng.integers(0, 10, n_labels).astype(dtype)
    mean = pixel_mean(pixels)
    mean_on_device = to_device(mean, "gpu")
    standin.reset()
    x, y = batch_to_device(pixels, labels, mean_on_device)
    # one copy, the labels starting at the next multiple of ALIGN bytes after the pixels
    assert standin.h2d == [((368 + labels.nbytes,), "uint8")] and 368 % ALIGN == 0
    assert standin.launches == {"minidann_preprocess_pixels": 1}
    assert x.dtype == np.float32 and y.dtype == dtype and is_cupy_array(x) and is_cupy_array(y)
    np.testing.assert_array_equal(to_numpy(y), labels)
    assert to_numpy(x).tobytes() == preprocess(pixels, mean).tobytes()  # the host's arithmetic, bit for bit


def test_the_training_loop_gives_the_step_device_labels(standin, monkeypatch):
    seen = []

    def step(model, opt, x, y, *args, **kwargs):
        seen.append((is_cupy_array(x), is_cupy_array(y)))
        return train_step(model, opt, x, y, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)
    rng = np.random.default_rng(0)
    model = build_model(rng, "gpu")
    Trainer(model, build_optimizer(model), _tiny_data(), "dann", 2, 8, rng, progress=False).run()
    assert seen == [(True, True)] * 2


@pytest.mark.parametrize("mode, domain", [("dann", "source"), ("source", "source"), ("target", "target")])
def test_the_training_loop_refuses_labels_out_of_range_before_training(standin, mode, domain):
    """The loop copies labels to the device, where the loss trusts them: they are checked once, on the host."""
    d = _tiny_data()
    getattr(d, f"{domain}_labels")[3] = 10
    rng = np.random.default_rng(0)
    model = build_model(rng, "gpu")
    standin.reset()
    with pytest.raises(ValueError, match=rf"DomainData.{domain}_labels must lie in \[0, 9\] for 10 classes, "
                                         "got values from 0 to 10"):
        Trainer(model, build_optimizer(model), d, mode, 2, 8, rng, progress=False)
    assert standin.h2d == [] and standin.n_syncs == 0
    if mode == "dann":  # the target labels are never read there: not checked either
        d.target_labels[3] = 99
        getattr(d, f"{domain}_labels")[3] = 9
        Trainer(model, build_optimizer(model), d, mode, 2, 8, rng, progress=False).run()


def test_device_labels_are_trusted_by_the_loss_without_a_sync(standin):
    rng = np.random.default_rng(0)
    logits_host, y_host = rng.standard_normal((6, 10)).astype(np.float32), np.array([3, 0, 9, 1, 1, 7])
    logits, y = to_device(logits_host, "gpu"), to_device(y_host, "gpu")
    want = F.softmax_cross_entropy(logits_host, y_host).data
    standin.reset()
    loss = F.softmax_cross_entropy(md.Tensor(logits, requires_grad=True), y)
    loss.backward()
    assert standin.n_syncs == 0 and standin.h2d == []
    assert to_numpy(loss.data) == want
    # their shape and dtype are still checked (free: no values read)
    standin.reset()
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        F.softmax_cross_entropy(logits, y.reshape(6, 1))
    with pytest.raises(ValueError, match="labels must be integers"):
        F.softmax_cross_entropy(logits, y.astype(np.float32))
    assert standin.n_syncs == 0


def test_host_labels_out_of_range_are_refused_on_the_host_before_any_copy(standin):
    logits = to_device(np.zeros((2, 10), np.float32), "gpu")
    standin.reset()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\] for 10 classes, got values from 0 to 10"):
        F.softmax_cross_entropy(logits, np.array([0, 10]))
    with pytest.raises(ValueError, match="got values from -1 to 1"):
        F.softmax_cross_entropy(logits, np.array([-1, 1]))
    assert standin.h2d == [] and standin.n_syncs == 0
    model = build_model(np.random.default_rng(0), "gpu")
    x = to_device(np.zeros((4, 3, 28, 28), np.float32), "gpu")
    with pytest.raises(ValueError, match="got values from 0 to 10"):  # train_step takes host labels too
        train_step(model, build_optimizer(model), x, np.array([0, 10]), "dann", 0.5, 0.01)


def test_a_dann_step_after_the_batch_changes_gets_its_own_domain_labels(standin):
    """The device domain labels are made once per batch split: a new batch size (the last partial batch) or a new
    split of the same size gets its own, the loss and accuracy of host domain labels."""
    rng = np.random.default_rng(0)
    model = build_model(rng, "gpu")
    opt = build_optimizer(model)
    for n, n_src in ((16, 8), (12, 6), (12, 4), (16, 8)):
        x = to_device(rng.standard_normal((n, 3, 28, 28)).astype(np.float32), "gpu")
        y = to_device(rng.integers(0, 10, n_src), "gpu")
        d_logits = model.domain_classifier(model.features(x))
        d_host = domain_labels(n_src, n - n_src)
        want_loss = to_numpy(F.softmax_cross_entropy(d_logits, d_host).data)
        want_acc = np.mean(to_numpy(d_logits.data).argmax(axis=1) == d_host, dtype=np.float32)
        stats = train_step(model, opt, x, y, "dann", 0.5, 0.01)
        assert to_numpy(stats.domain_loss) == want_loss and to_numpy(stats.domain_acc) == want_acc, (n, n_src)


def test_the_domain_accuracy_takes_three_launches_on_the_gpu(standin):
    rng = np.random.default_rng(0)
    d_logits = rng.standard_normal((64, 2)).astype(np.float32)
    d = domain_labels(32, 32)
    want = np.mean(d_logits.argmax(axis=1) == d, dtype=np.float32)
    d_logits_gpu, d_gpu = to_device(d_logits, "gpu"), to_device(d, "gpu")
    standin.reset()
    acc = step_module._domain_accuracy(d_logits_gpu, d_gpu)
    assert standin.n_launches <= 3 and standin.n_syncs == 0 and to_numpy(acc) == want


@pytest.mark.parametrize("n_src, n_tgt", [(3, 3), (32, 32), (50, 50), (7, 4)])
def test_the_domain_accuracy_on_the_cpu_is_the_published_arithmetic(n_src, n_tgt):
    """float32(count) * float32(1 / N), to the bit: the metrics of the published runs were made with it (count / N
    rounded once, the GPU's mean, can differ in the last bit when N is not a power of two)."""
    N = n_src + n_tgt
    d = domain_labels(n_src, n_tgt)
    for count in range(N + 1):
        d_logits = np.zeros((N, 2), np.float32)
        d_logits[np.arange(N), np.where(np.arange(N) < count, d, 1 - d)] = 1.0  # the first `count` rows right
        acc = step_module._domain_accuracy(d_logits, d)
        want = np.asarray(count, np.float32) * np.float32(1.0 / N)
        assert type(acc) is type(want) and acc.tobytes() == want.tobytes(), count


# ---- the programs, through the stand-in ----

def _run_with_standin(args, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MINIDANN_STANDIN_REPORT": str(tmp_path / "counts.json")}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "cupy_standin.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_gradcheck_cli_on_the_gpu_through_the_standin(tmp_path):
    proc = _run_with_standin(["-m", "minidann.gradcheck", "--device", "gpu"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gradient checks on gpu" in proc.stdout and "FAIL" not in proc.stdout
    assert (tmp_path / "counts.json").exists()


@pytest.mark.slow
def test_the_example_on_the_gpu_through_the_standin(tmp_path):
    out = tmp_path / "run"
    proc = _run_with_standin([str(ROOT / "examples" / "mnist_to_mnistm.py"), "--device", "gpu", "--data", "embedded",
                              "--data-dir", str(tmp_path / "data"), "--out", str(out), "--steps", "8",
                              "--batch-size", "8", "--limit-train", "200", "--limit-test", "60", "--eval-every", "8",
                              "--no-progress", "--seed", "0"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "device: gpu (CuPy)" in proc.stdout
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "gpu" and set(results["modes"]) == {"source", "dann"}


def test_a_batch_that_is_not_uint8_pixels_is_refused_before_any_copy(standin):
    from minidann.fast.batch_copy import batch_to_device

    mean = to_device(np.zeros(3, np.float32), "gpu")
    standin.reset()
    with pytest.raises(ValueError, match="pixels must be uint8 of shape .N, 3, H, W., not preprocessed already"):
        batch_to_device(np.zeros((2, 3, 4, 4), np.float32), np.zeros(1, np.int64), mean)
    assert standin.h2d == []
