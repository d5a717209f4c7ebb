"""The DANN model, schedules, training step, training loop (resume, NaN guard, Ctrl-C) and checkpoints.

Everything here runs on tiny synthetic data so the file takes seconds; the example script's end-to-end run is
in test_example_mnist.py.
"""

import math
import os
import signal

import numpy as np
import pytest

import minidann as md
import minidann.functions as F
from minidann.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minidann.dann import (
    FEATURE_DIM,
    StepStats,
    build_model,
    build_optimizer,
    domain_labels,
    evaluate,
    extract_features,
    lambda_schedule,
    lr_schedule,
    pixel_mean,
    predict,
    prepare_mnist,
    prepare_mnistm,
    preprocess,
    train_step,
)
from minidann.optim import SGD
from minidann.train import METRIC_COLUMNS, DomainData, EpochSampler, Trainer, TrainingDiverged, TrainingInterrupted

# --------------------------------------------------------------------------------------------------------------
# schedules


def test_schedules_match_the_paper_formulas():
    assert lambda_schedule(0.0) == 0.0
    assert lr_schedule(0.0) == pytest.approx(0.01, abs=0, rel=1e-15)
    assert lambda_schedule(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1, rel=1e-15)
    assert lambda_schedule(1.0) == pytest.approx(0.9999092, abs=1e-7)
    assert lr_schedule(1.0) == pytest.approx(0.01 / 11**0.75, rel=1e-15)
    assert lr_schedule(1.0) == pytest.approx(0.0016556, abs=1e-7)
    for p in (0.1, 0.25, 0.5, 0.9):
        assert lambda_schedule(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1, rel=1e-15)
        assert lr_schedule(p) == pytest.approx(0.01 / (1 + 10 * p) ** 0.75, rel=1e-15)
    assert lambda_schedule(0.5, gamma=1.0) == pytest.approx(2 / (1 + math.exp(-0.5)) - 1)
    assert lr_schedule(0.5, mu0=0.1, alpha=2.0, beta=1.0) == pytest.approx(0.05)
    # monotone: lambda rises, lr falls
    ps = np.linspace(0, 1, 11)
    assert np.all(np.diff([lambda_schedule(p) for p in ps]) > 0)
    assert np.all(np.diff([lr_schedule(p) for p in ps]) < 0)


# --------------------------------------------------------------------------------------------------------------
# model


def test_model_shapes_names_and_tf_dann_init():
    model = build_model(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((5, 3, 28, 28)).astype(np.float32)
    f = model.features(x)
    assert f.shape == (5, FEATURE_DIM) == (5, 2352)
    assert model(x).shape == (5, 10)
    assert model.domain_classifier(f).shape == (5, 2)
    shapes = {k: v.shape for k, v in model.named_parameters()}
    assert shapes == {
        "feature_extractor.0.W": (32, 3, 5, 5), "feature_extractor.0.b": (32,),
        "feature_extractor.3.W": (48, 32, 5, 5), "feature_extractor.3.b": (48,),
        "label_predictor.0.W": (2352, 100), "label_predictor.0.b": (100,),
        "label_predictor.2.W": (100, 100), "label_predictor.2.b": (100,),
        "label_predictor.4.W": (100, 10), "label_predictor.4.b": (10,),
        "domain_classifier.1.W": (2352, 100), "domain_classifier.1.b": (100,),
        "domain_classifier.3.W": (100, 2), "domain_classifier.3.b": (2,),
    }
    assert isinstance(model.domain_classifier[0], md.GradientReversal) and model.grl is model.domain_classifier[0]
    for name, p in model.named_parameters():
        assert p.dtype == np.float32
        if name.endswith(".b"):
            assert np.all(p.data == np.float32(0.1)), name
        else:  # truncated normal, std 0.1: within 2 std, spread about 0.088 (the truncated std)
            assert np.abs(p.data).max() <= 0.2 + 1e-7, name
            assert 0.07 < p.data.std() < 0.1, name


def test_pool_then_relu_is_the_papers_relu_then_pool_bit_for_bit():
    # G_f is built conv, pool, ReLU (cheaper); the paper's order is conv, ReLU, pool. Same parameters, same
    # batch: features and every gradient must be identical. The batch has flat regions (all-zero images and
    # a constant band), where a window's four conv outputs tie, and negative values, where ReLU stops gradients.
    model = build_model(np.random.default_rng(0))
    fe = model.feature_extractor
    paper = md.Sequential(fe[0], md.ReLU(), md.MaxPool2d(2, 2), fe[3], md.ReLU(), md.MaxPool2d(2, 2), md.Flatten())
    assert [type(m).__name__ for m in fe] == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU",
                                              "Flatten"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 28, 28)).astype(np.float32)
    x[:2] = 0.0
    x[2, :, 10:20] = -0.4
    gf = rng.standard_normal((6, FEATURE_DIM)).astype(np.float32)
    results = []
    for net in (fe, paper):
        for p in model.parameters():
            p.grad = None
        f = net(md.Tensor(x))
        f.backward(gf)
        results.append((f.data, [p.grad.copy() for p in fe.parameters()]))
    (f_ours, g_ours), (f_paper, g_paper) = results
    np.testing.assert_array_equal(f_ours, f_paper)
    assert (f_ours == 0).mean() > 0.2  # the ReLU did cut: the check is not vacuous
    for a, b in zip(g_ours, g_paper, strict=True):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_weights_other_seed_other_weights():
    a = build_model(np.random.default_rng(3)).state_dict()
    b = build_model(np.random.default_rng(3)).state_dict()
    c = build_model(np.random.default_rng(4)).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["feature_extractor.0.W"], c["feature_extractor.0.W"])


def test_preprocessing_as_tf_dann():
    rng = np.random.default_rng(0)
    mnist = rng.integers(0, 256, (4, 28, 28)).astype(np.uint8)
    mnist[0, 0, 0], mnist[0, 0, 1] = 0, 1
    xs = prepare_mnist(mnist)
    assert xs.shape == (4, 3, 28, 28) and xs.dtype == np.uint8
    assert set(np.unique(xs)) <= {0, 255}
    assert xs[0, 0, 0, 0] == 0 and xs[0, 0, 0, 1] == 255  # x > 0 -> 255
    assert np.array_equal(xs[:, 0], xs[:, 2])
    mnistm = rng.integers(0, 256, (4, 28, 28, 3)).astype(np.uint8)
    xt = prepare_mnistm(mnistm)
    assert xt.shape == (4, 3, 28, 28) and xt[1, 2, 5, 7] == mnistm[1, 5, 7, 2]
    mean = pixel_mean(xs, xt)
    expected = np.concatenate([xs, xt]).astype(np.float64).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, expected, rtol=1e-6)
    x = preprocess(xt, mean)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, (xt.astype(np.float64) - expected[None, :, None, None]) / 255, atol=1e-6)
    with pytest.raises(ValueError):
        prepare_mnist(mnistm)
    with pytest.raises(ValueError):
        prepare_mnistm(mnist)


def test_domain_labels():
    assert domain_labels(2, 3).tolist() == [0, 0, 1, 1, 1]


# --------------------------------------------------------------------------------------------------------------
# the training step


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 28, 28)).astype(np.float32) * 0.5, rng.integers(0, 10, n)


def test_dann_step_is_the_papers_three_updates():
    """One train_step in dann mode moves G_f by -lr (gL_y - lambd gL_d), G_y by -lr gL_y and G_d by -lr gL_d."""
    lambd, lr = 0.37, 0.01
    x, y = _batch(8)
    y_src = y[:4]

    def grads(which):
        model = build_model(np.random.default_rng(0))
        f = model.features(x)
        if which == "y":
            loss = F.softmax_cross_entropy(model.label_predictor(f[:4]), y_src)
        else:  # L_d with no reversal: the plain derivative of the domain loss
            model.grl.lambd = -1.0  # grad_reverse(-1) is the identity in both directions
            loss = F.softmax_cross_entropy(model.domain_classifier(f), domain_labels(4, 4))
        loss.backward()
        return {k: p.grad for k, p in model.named_parameters()}, model.state_dict()

    gy, theta0 = grads("y")
    gd, _ = grads("d")
    model = build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    stats = train_step(model, opt, x, y_src, "dann", lambd, lr)
    theta1 = model.state_dict()
    for k in theta0:
        g_label = gy[k] if gy[k] is not None else 0.0
        g_domain = gd[k] if gd[k] is not None else 0.0
        if k.startswith("feature_extractor"):
            expected = theta0[k] - lr * (g_label - lambd * g_domain)
        elif k.startswith("label_predictor"):
            expected = theta0[k] - lr * g_label
            assert gd[k] is None  # L_d does not reach G_y
        else:
            expected = theta0[k] - lr * g_domain  # G_d descends L_d with weight 1 (footnote 6)
            assert gy[k] is None
        np.testing.assert_allclose(theta1[k], expected, rtol=1e-5, atol=1e-7, err_msg=k)
    assert opt.lr == lr and model.grl.lambd == lambd
    host = stats.to_host()
    assert 0.0 <= host["domain_acc"] <= 1.0
    assert host["domain_loss"] > 0 and host["label_loss"] > 0


@pytest.mark.parametrize("mode", ["source", "target"])
def test_source_and_target_steps_train_only_the_label_path(mode):
    x, y = _batch(6)
    model = build_model(np.random.default_rng(0))
    before = model.state_dict()
    stats = train_step(model, build_optimizer(model), x, y, mode, 0.5, 0.01)
    after = model.state_dict()
    assert stats.domain_loss is None and stats.domain_acc is None
    for k in before:
        changed = not np.array_equal(before[k], after[k])
        assert changed == (not k.startswith("domain_classifier")), k


def test_train_step_returns_arrays_not_python_floats():
    """No .item()/float() inside the step: on a GPU that would be a sync every step."""
    x, y = _batch(8)
    model = build_model(np.random.default_rng(0))
    stats = train_step(model, build_optimizer(model), x, y[:4], "dann", 0.5, 0.01)
    assert isinstance(stats, StepStats)
    for v in (stats.label_loss, stats.domain_loss, stats.domain_acc):
        assert type(v) is not float and v.dtype == np.float32 and np.ndim(v) == 0


def test_train_step_rejects_bad_batches():
    x, y = _batch(8)
    model = build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    with pytest.raises(ValueError, match="mode"):
        train_step(model, opt, x, y, "adapt", 0.5, 0.01)
    with pytest.raises(ValueError, match="dann"):
        train_step(model, opt, x, y, "dann", 0.5, 0.01)  # no target rows
    with pytest.raises(ValueError, match="source"):
        train_step(model, opt, x, y[:4], "source", 0.5, 0.01)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(TypeError, match=r"x is float64 but the model's parameters are float32.*astype"):
        train_step(model, opt, x.astype(np.float64), y[:4], "dann", 0.5, 0.01)
    with pytest.raises(TypeError, match="x is uint8"):
        train_step(model, opt, (x * 0).astype(np.uint8), y[:4], "dann", 0.5, 0.01)  # raw images, not preprocessed
    for lr in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
            train_step(model, opt, x, y[:4], "dann", 0.5, lr)
    with pytest.raises(ValueError, match="lambd must be a finite number"):
        train_step(model, opt, x, y[:4], "dann", float("nan"), 0.01)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters(), strict=True))  # untouched
    for bad in ({"lr": float("nan")}, {"lr": -1.0}, {"lr": 0.1, "momentum": float("inf")}):
        with pytest.raises(ValueError, match="SGD needs finite lr, momentum, weight_decay >= 0"):
            SGD(model.parameters(), **bad)


def test_a_few_dann_steps_lower_the_label_loss():
    x, y = _batch(16, seed=2)
    model = build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    losses = [float(train_step(model, opt, x, y[:8], "dann", 0.1, 0.01).label_loss) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def test_evaluate_and_features():
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (10, 3, 28, 28)).astype(np.uint8)
    xt = rng.integers(0, 256, (7, 3, 28, 28)).astype(np.uint8)
    ys, yt = rng.integers(0, 10, 10), rng.integers(0, 10, 7)
    model = build_model(np.random.default_rng(0))
    mean = pixel_mean(xs, xt)
    r = evaluate(model, xs, ys, xt, yt, mean, batch_size=4)
    assert set(r) == {"source_acc", "target_acc", "domain_acc"}
    logits = model(preprocess(xs, mean)).data
    assert r["source_acc"] == pytest.approx(np.mean(logits.argmax(1) == ys))
    f = extract_features(model, xs, mean, batch_size=3)
    assert f.shape == (10, FEATURE_DIM) and f.dtype == np.float32
    np.testing.assert_allclose(f, model.features(preprocess(xs, mean)).data, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# the loop: samplers, checkpoints, resume, NaN guard, Ctrl-C


def test_epoch_sampler_visits_every_item_once_per_epoch():
    s = EpochSampler(10, 3, np.random.default_rng(0))
    first = np.concatenate([s.next() for _ in range(3)])  # 9 of 10, no repeats
    assert len(set(first.tolist())) == 9
    s.next()  # only 1 left: a new permutation
    assert s.pos == 3


def _tiny_data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    xs = prepare_mnist((rng.random((n, 28, 28)) > 0.7).astype(np.uint8) * rng.integers(1, 256, (n, 28, 28)))
    xt = rng.integers(0, 256, (n, 3, 28, 28)).astype(np.uint8)
    ys = rng.integers(0, 10, n)
    return DomainData(xs, ys, xt, ys.copy(), pixel_mean(xs, xt))


def _trainer(tmp_path, mode="dann", steps=12, seed=0, rows=None, **kw):
    rng = np.random.default_rng(seed)
    model = build_model(rng)
    opt = build_optimizer(model)
    kw.setdefault("checkpoint_path", tmp_path / f"{mode}.npz")
    kw.setdefault("log_every", 4)
    return Trainer(model, opt, _tiny_data(), mode, steps, 8, rng, progress=False,
                   on_row=None if rows is None else rows.append, **kw)


def _weights_and_momentum(trainer):
    return trainer.model.state_dict(), trainer.optimizer.state_dict()


def _assert_same_state(a, b):
    for da, db in zip(a, b, strict=True):
        assert da.keys() == db.keys()
        for k in da:
            assert np.array_equal(da[k], db[k]), k


def test_seeded_runs_are_identical(tmp_path):
    a = _trainer(tmp_path / "a")
    a.run()
    b = _trainer(tmp_path / "b")
    b.run()
    c = _trainer(tmp_path / "c", seed=1)
    c.run()
    _assert_same_state(_weights_and_momentum(a), _weights_and_momentum(b))
    assert not np.array_equal(a.model.state_dict()["feature_extractor.0.W"],
                              c.model.state_dict()["feature_extractor.0.W"])


@pytest.mark.parametrize("mode", ["dann", "source"])
def test_interrupt_then_resume_ends_with_identical_weights(tmp_path, mode):
    rows_full = []
    full = _trainer(tmp_path / "full", mode, rows=rows_full, checkpoint_every=4)
    full.run()

    rows = []
    first = _trainer(tmp_path / "cut", mode, rows=rows, checkpoint_every=4, interrupt_at_step=6)
    # Python's default_int_handler in a terminal; SIG_IGN when the tests run as a background job (nohup, `&`)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        first.run()
    assert info.value.step == 6 and info.value.checkpoint == tmp_path / "cut" / f"{mode}.npz"
    assert "checkpoint saved to" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handler was put back
    ckpt = load_checkpoint(info.value.checkpoint)
    assert ckpt.meta["step"] == 6 and ckpt.meta["progress"] == 0.5 and ckpt.meta["mode"] == mode

    second = _trainer(tmp_path / "cut", mode, rows=rows, checkpoint_every=4, seed=123)  # seed is overwritten
    second.restore(ckpt)
    assert second.step == 6
    second.run()
    _assert_same_state(_weights_and_momentum(full), _weights_and_momentum(second))
    assert rows == rows_full  # even the metrics rows match (the unlogged window was checkpointed)
    assert [r["step"] for r in rows] == [4, 8, 12]


def test_ctrl_c_in_the_last_step_still_stops_the_run(tmp_path):
    t = _trainer(tmp_path, "source", steps=6, interrupt_at_step=6)
    with pytest.raises(TrainingInterrupted) as info:
        t.run()
    assert info.value.step == 6 and load_checkpoint(info.value.checkpoint).meta["step"] == 6


def test_checkpoint_contents_and_atomic_write(tmp_path):
    t = _trainer(tmp_path)
    t.run()
    path = tmp_path / "dann.npz"
    assert os.listdir(tmp_path) == ["dann.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
    assert "meta" in keys and "param/feature_extractor.0.W" in keys and "velocity/0" in keys
    assert {"state/source.perm", "state/source.pos", "state/target.perm", "state/target.pos"} <= keys
    ckpt = load_checkpoint(path)
    assert ckpt.meta["step"] == 12 and ckpt.meta["num_steps"] == 12 and ckpt.meta["progress"] == 1.0
    assert ckpt.meta["rng_state"] == t.rng.bit_generator.state
    assert ckpt.meta["last_eval"] is None
    model = build_model(np.random.default_rng(99))
    ckpt.restore(model)
    _assert_same_state((model.state_dict(),), (t.model.state_dict(),))


def test_checkpoint_refuses_nan_weights_and_bad_files(tmp_path):
    model = build_model(np.random.default_rng(0))
    model.parameters()[0].data[0, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        save_checkpoint(tmp_path / "x.npz", model)
    assert not any(tmp_path.iterdir())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a minidann checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CheckpointError, match="truncated or not a minidann checkpoint") as info:
        load_checkpoint(tmp_path / "noise.npz")
    assert "allow_pickle" not in str(info.value)  # NumPy's hint to unpickle is no advice for a checkpoint
    np.savez(tmp_path / "bad_meta.npz", meta=np.array("{not json"))
    with pytest.raises(CheckpointError, match="'meta' entry is not valid JSON"):
        load_checkpoint(tmp_path / "bad_meta.npz")
    np.savez(tmp_path / "list_meta.npz", meta=np.array("[1, 2]"))
    with pytest.raises(CheckpointError, match="not a JSON object"):
        load_checkpoint(tmp_path / "list_meta.npz")


def test_nan_guard_names_mode_step_lambda_lr_and_last_checkpoint(tmp_path):
    rows = []
    t = _trainer(tmp_path, "dann", steps=12, rows=rows, checkpoint_every=4, nan_at_step=7)
    with pytest.raises(TrainingDiverged) as info:
        t.run()
    msg = str(info.value)
    _, lambd, lr = t.schedule(7)
    assert "mode 'dann'" in msg and "at step 7 of 12" in msg
    assert f"lambda {lambd:.6g}" in msg and f"lr {lr:.6g}" in msg
    assert f"last good checkpoint: {tmp_path / 'dann.npz'} (step 4)" in msg
    assert [r["step"] for r in rows] == [4]  # nothing logged past the divergence
    assert load_checkpoint(tmp_path / "dann.npz").meta["step"] == 4  # the good checkpoint was not overwritten


def test_nan_guard_without_checkpoint(tmp_path):
    t = _trainer(tmp_path, "source", steps=6, nan_at_step=2, checkpoint_path=None)
    with pytest.raises(TrainingDiverged, match=r"mode 'source' at step 2 of 6 .*no checkpoint was saved"):
        t.run()


def test_metric_rows_have_the_documented_columns(tmp_path):
    rows = []

    def fake_eval(model):
        return {"source_acc": 0.5, "target_acc": 0.25, "domain_acc": 0.5}

    t = _trainer(tmp_path, "dann", steps=8, rows=rows, eval_every=6, evaluate=fake_eval)
    t.run()
    assert [r["step"] for r in rows] == [4, 6, 8]
    for r in rows:
        assert tuple(r) == METRIC_COLUMNS
        assert r["mode"] == "dann" and r["domain_loss"] > 0 and 0 <= r["domain_acc"] <= 1
    assert rows[0]["source_acc"] is None and rows[1]["target_acc"] == 0.25 and rows[2]["source_acc"] == 0.5
    assert rows[-1]["lambda"] == pytest.approx(lambda_schedule(7 / 8))
    assert t.last_eval["domain_acc"] == 0.5 and t.eval_seconds >= 0 and t.train_seconds > 0


# --------------------------------------------------------------------------------------------------------------
# GPU (on the CuPy stand-in, tests/cupy_standin.py, without CuPy and a CUDA device)


@pytest.mark.gpu
def test_gpu_step_matches_cpu_and_keeps_stats_on_the_device(tmp_path):
    from minidann.backend import is_cupy_array, to_device

    x, y = _batch(16)
    models = {d: build_model(np.random.default_rng(0), d) for d in ("cpu", "gpu")}
    for device, model in models.items():
        opt = build_optimizer(model)
        for _ in range(3):
            stats = train_step(model, opt, to_device(x, device), y[:8], "dann", 0.5, 0.01)
        if device == "gpu":
            assert all(is_cupy_array(v) for v in (stats.label_loss, stats.domain_loss, stats.domain_acc))
    cpu, gpu = models["cpu"].state_dict(), models["gpu"].state_dict()
    for k in cpu:
        np.testing.assert_allclose(gpu[k], cpu[k], rtol=1e-3, atol=1e-5, err_msg=k)


@pytest.mark.gpu
def test_gpu_trainer_resume_and_nan_guard(tmp_path):
    def gpu_trainer(path, **kw):
        rng = np.random.default_rng(0)
        model = build_model(rng, "gpu")
        return Trainer(model, build_optimizer(model), _tiny_data(), "dann", 12, 8, rng, progress=False,
                       log_every=4, checkpoint_path=path, **kw)

    full = gpu_trainer(tmp_path / "full.npz")
    full.run()
    cut = gpu_trainer(tmp_path / "cut.npz", interrupt_at_step=6)
    with pytest.raises(TrainingInterrupted):
        cut.run()
    resumed = gpu_trainer(tmp_path / "cut.npz")
    resumed.restore(load_checkpoint(tmp_path / "cut.npz"))
    resumed.run()
    _assert_same_state(_weights_and_momentum(full), _weights_and_momentum(resumed))
    with pytest.raises(TrainingDiverged, match="at step 3 of 12"):
        gpu_trainer(None, nan_at_step=3).run()


# ---- the loop and the evaluation refuse what would give silently wrong numbers ----

def test_evaluation_refuses_a_batch_size_below_1_float_images_and_broadcasting_labels():
    model = build_model(np.random.default_rng(0))
    d = _tiny_data(8)
    for bad in (0, -1, 2.5):  # -1 used to return np.empty's garbage: range(0, N, -1) is empty
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            predict(model, d.source_images, d.mean, batch_size=bad)
    with pytest.raises(ValueError, match="uint8 pixels .*not preprocessed already"):
        predict(model, preprocess(d.source_images, d.mean), d.mean)  # preprocessing twice
    with pytest.raises(ValueError, match=r"source labels of shape \(N,\) for N > 0 images: got 8 images and labels "
                                         r"of shape \(8, 1\)"):
        evaluate(model, d.source_images, d.source_labels[:, None], d.target_images, d.target_labels, d.mean)
    with pytest.raises(ValueError, match="uint8 pixels"):
        pixel_mean(d.source_images.transpose(0, 2, 3, 1))  # NHWC


@pytest.mark.parametrize("p", [-0.5, 1.5, float("nan")])
def test_schedules_refuse_progress_outside_0_1(p):
    for schedule in (lambda_schedule, lr_schedule):
        with pytest.raises(ValueError, match=r"progress p must lie in \[0, 1\]"):
            schedule(p)


def test_trainer_checks_its_arguments_and_data_before_training(tmp_path):
    d = _tiny_data(24)

    def make(mode="dann", data=d, **kw):
        rng = np.random.default_rng(0)
        model = build_model(rng)
        args = {"num_steps": 4, "batch_size": 8, **kw}
        return Trainer(model, build_optimizer(model), data, mode, args.pop("num_steps"), args.pop("batch_size"),
                       rng, progress=False, **args)

    with pytest.raises(TypeError, match="num_steps must be an integer, got 2.5"):
        make(num_steps=2.5)
    with pytest.raises(ValueError, match="eval_every and checkpoint_every must be >= 0"):
        make(eval_every=-1)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        make("source", batch_size=0)
    float_images = DomainData(preprocess(d.source_images, d.mean), d.source_labels, d.target_images,
                              d.target_labels, d.mean)
    with pytest.raises(ValueError, match="source_images must be uint8 pixels"):
        make(data=float_images)
    with pytest.raises(ValueError, match="24 source images but 3 source labels"):
        make(data=DomainData(d.source_images, d.source_labels[:3], d.target_images, d.target_labels, d.mean))
    # in dann mode the target labels are never read: they may be empty, and the sampler counts the images
    t = make(data=DomainData(d.source_images, d.source_labels, d.target_images, np.zeros(0, np.int64), d.mean))
    assert t.samplers["target"].n == 24
    t.run()
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(ValueError, match="is a file, so the checkpoint cannot be saved there"):
        make(checkpoint_path=a_file / "dann.npz")
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        make(checkpoint_path=tmp_path)
    with pytest.raises(ValueError, match=r"meta\['config'\] cannot be saved in a checkpoint .*float\(x\)"):
        make(meta={"config": {"bs": np.float32(4)}})
    with pytest.raises(ValueError, match=r"meta keys \['lr'\] are written by every checkpoint already"):
        make(meta={"lr": 0.1})


def test_restore_with_other_data_changes_nothing(tmp_path):
    t = _trainer(tmp_path, "dann", steps=4)
    t.run()
    ckpt = load_checkpoint(tmp_path / "dann.npz")
    rng = np.random.default_rng(5)
    model = build_model(rng)
    other = Trainer(model, build_optimizer(model), _tiny_data(16), "dann", 4, 8, rng, progress=False)
    before = model.state_dict()
    with pytest.raises(ValueError, match="has a permutation of .*the data has 16"):
        other.restore(ckpt)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items()) and other.step == 0


def test_save_checkpoint_names_what_cannot_be_saved_and_writes_nothing(tmp_path):
    model = build_model(np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"checkpoint meta \['lr'\] cannot be saved .*float\(x\)"):
        save_checkpoint(tmp_path / "a.npz", model, lr=np.float32(0.1), step=3)
    with pytest.raises(TypeError, match="'state/names' has dtype object"):
        save_checkpoint(tmp_path / "b.npz", model, state={"names": np.array(["a", None], dtype=object)})
    assert not any(tmp_path.iterdir())


def test_build_model_and_domain_labels_name_a_wrong_argument():
    with pytest.raises(ValueError, match=r"pass rng=numpy.random.default_rng\(seed\), got 0"):
        build_model(0)
    with pytest.raises(ValueError, match="domain_labels: row counts must be >= 0"):
        domain_labels(-1, 2)


@pytest.mark.parametrize("mode, unread", [("source", "target"), ("dann", "target"), ("target", "source")])
def test_labels_a_mode_never_reads_may_be_left_empty(tmp_path, mode, unread):
    d = _tiny_data(16)
    setattr(d, f"{unread}_labels", np.zeros(0, np.int64))
    model = build_model(np.random.default_rng(0))
    t = Trainer(model, build_optimizer(model), d, mode, 2, 8, np.random.default_rng(0), progress=False)
    t.run()
    assert t.step == 2
