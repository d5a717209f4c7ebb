"""The training step on both layers. Fast (minidann.fast.parallel, train_step on the CPU): two halves of the batch
give the whole batch's step up to float rounding, the same bit for bit on one thread or two and on every run; BLAS
gets its threads back whatever happens. Reference: one forward and one backward pass over the whole batch, equal
to the fast step up to float rounding, with no replicas, no BLAS-thread change and one thread."""

import os
import time

import numpy as np
import pytest

import minidann as md
from minidann.core import Tensor
from minidann.dann import build_model, build_optimizer, halves_evenly, train_step
from minidann.dann.step import _split_in_halves, forward_backward
from minidann.fast.parallel import auto_threads, check_threads, replicate
from minidann.fast.tuning import blas_kernel, set_blas_threads


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 28, 28)).astype(np.float32) * 0.5, rng.integers(0, 10, n)


def _model64(seed=0):
    """The DANN model in float64, so that two ways of summing the same gradient agree to ~1e-15."""
    model = build_model(np.random.default_rng(seed))
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    return model


def _run(threads, mode, steps=3, n=8, dtype=np.float64):
    model = _model64() if dtype == np.float64 else build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    x, y = _batch(n)
    x = x.astype(dtype)
    y_src = y[: n // 2] if mode == "dann" else y
    stats = [train_step(model, opt, x, y_src, mode, 0.4, 0.01, threads=threads).to_host() for _ in range(steps)]
    return model, opt, stats


def _run_whole_batch(mode, steps=3, n=8):
    """What train_step would do without halves: one forward and backward over all n rows, then SGD."""
    model = _model64()
    opt = build_optimizer(model)
    x, y = _batch(n)
    y_src = y[: n // 2] if mode == "dann" else y
    stats = []
    for _ in range(steps):
        opt.zero_grad()
        model.grl.lambd = 0.4
        stats.append(forward_backward(model, Tensor(x.astype(np.float64)), y_src, mode, 0.4).to_host())
        opt.lr = 0.01
        opt.step()
    return model, opt, stats


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mode", ["dann", "source"])
def test_two_halves_give_the_whole_batch_step(mode, threads):
    one, opt1, stats1 = _run_whole_batch(mode)
    two, opt2, stats2 = _run(threads, mode)
    for (name, p1), p2 in zip(one.named_parameters(), two.parameters(), strict=True):
        assert p2.data.dtype == np.float64
        np.testing.assert_allclose(p2.data, p1.data, rtol=1e-12, atol=1e-14, err_msg=name)
    for v1, v2 in zip(opt1.velocities, opt2.velocities, strict=True):
        if v1 is None:  # source mode: G_d gets no gradient, whole or in halves
            assert v2 is None
        else:
            np.testing.assert_allclose(v2, v1, rtol=1e-12, atol=1e-14)
    for s1, s2 in zip(stats1, stats2, strict=True):  # the losses and domain accuracy of the whole batch
        assert s1.keys() == s2.keys()
        for k in s1:
            assert (s1[k] is None) == (s2[k] is None)
            if s1[k] is not None:
                assert s2[k] == pytest.approx(s1[k], rel=1e-12), k
    assert two.grl.lambd == 0.4 or mode != "dann"


@pytest.mark.parametrize("mode", ["dann", "source", "target"])
def test_one_thread_and_two_give_the_same_step_bit_for_bit(mode):
    # the thread count is a matter of speed only: float32, the sums that differ first if anything differs
    one, opt1, stats1 = _run(1, mode, dtype=np.float32)
    two, opt2, stats2 = _run(2, mode, dtype=np.float32)
    for (name, p1), p2 in zip(one.named_parameters(), two.parameters(), strict=True):
        np.testing.assert_array_equal(p2.data, p1.data, err_msg=name)
    for v1, v2 in zip(opt1.velocities, opt2.velocities, strict=True):
        assert (v1 is None) == (v2 is None)
        if v1 is not None:
            np.testing.assert_array_equal(v2, v1)
    assert stats1 == stats2


def test_a_batch_that_does_not_halve_runs_whole_on_one_thread():
    model = build_model(np.random.default_rng(0))
    x, y = _batch(6)
    train_step(model, build_optimizer(model), x, y[:3], "dann", 0.5, 0.01)  # 3 + 3 rows: no halves
    reference = build_model(np.random.default_rng(0))
    opt = build_optimizer(reference)
    opt.zero_grad()
    reference.grl.lambd = 0.5
    forward_backward(reference, Tensor(x), y[:3], "dann", 0.5)
    opt.lr = 0.01
    opt.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("mode", ["dann", "source", "target"])
def test_halves_evenly_says_whether_train_step_will_split_the_loops_batches(mode):
    # the check that the example, the Trainer and the benchmark make before a step must match what train_step does
    for batch_size in range(2, 14):
        x, y = _batch(batch_size)
        n_src = batch_size // 2 if mode == "dann" else batch_size
        split = _split_in_halves(Tensor(x), y[:n_src], mode)
        assert halves_evenly(batch_size, mode) == (split is not None), batch_size
        if split is not None:
            (x_a, _), (x_b, _) = split
            assert len(x_a) == len(x_b) == batch_size // 2


def test_auto_threads_is_two_on_a_multicore_cpu_and_one_elsewhere(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert (auto_threads("cpu"), auto_threads("gpu")) == (2, 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert auto_threads("cpu") == 1
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one
    assert auto_threads("cpu") == 1


def test_two_thread_runs_are_identical_and_stay_float32():
    a, _, stats_a = _run(2, "dann", dtype=np.float32)
    b, _, stats_b = _run(2, "dann", dtype=np.float32)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert pa.data.dtype == np.float32
        np.testing.assert_array_equal(pa.data, pb.data)
    assert stats_a == stats_b


def test_blas_threads_are_restored_even_when_a_half_fails():
    previous = set_blas_threads(2)  # a known count (one the step does not use inside), whatever ran before
    if previous is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS minidann can control")
    try:
        model = build_model(np.random.default_rng(0))
        opt = build_optimizer(model)
        x, y = _batch(8)
        bad = y[:4].copy()
        bad[3] = 10  # out of range for 10 classes: the second half's loss raises
        with pytest.raises(ValueError, match="label"):
            train_step(model, opt, x, bad, "dann", 0.5, 0.01, threads=2)
        assert blas_kernel().endswith(", 2 threads")
        train_step(model, opt, x, y[:4], "dann", 0.5, 0.01, threads=2)
        assert blas_kernel().endswith(", 2 threads")
    finally:
        set_blas_threads(previous)


def test_set_blas_threads_returns_the_previous_count():
    before = set_blas_threads(1)
    if before is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS minidann can control")
    try:
        assert ", 1 threads" in blas_kernel()
        assert set_blas_threads(before) == 1
    finally:
        set_blas_threads(before)
    assert blas_kernel().endswith(f", {before} threads")


def test_uneven_halves_and_bad_thread_counts_are_refused():
    model = build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    x, y = _batch(6)
    with pytest.raises(ValueError, match="even number of each, got 3 and 3"):
        train_step(model, opt, x, y[:3], "dann", 0.5, 0.01, threads=2)
    with pytest.raises(ValueError, match="threads must be 1 or 2"):
        train_step(model, opt, x, y[:3], "dann", 0.5, 0.01, threads=4)


def test_a_refused_step_leaves_the_gradients_as_they_were():
    # the checks come before anything is changed: a refused call must not wipe the gradients of the last step
    model = build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    x, y = _batch(6)
    train_step(model, opt, x, y[:3], "dann", 0.5, 0.01)
    before = [p.grad.copy() for p in model.parameters()]
    for threads in (2, 4):  # uneven halves (3 + 3 rows), then a thread count that does not exist
        with pytest.raises(ValueError):
            train_step(model, opt, x, y[:3], "dann", 0.5, 0.01, threads=threads)
        for p, g in zip(model.parameters(), before, strict=True):
            assert p.grad is not None
            np.testing.assert_array_equal(p.grad, g)


def test_replica_shares_the_weights_but_not_the_gradients():
    model = build_model(np.random.default_rng(0))
    x, y = _batch(4)
    train_step(model, build_optimizer(model), x, y[:2], "dann", 0.5, 0.01)  # leaves gradients on the model
    replica = replicate(model)
    for p, r in zip(model.parameters(), replica.parameters(), strict=True):
        assert r is not p and r.data is p.data and r.grad is None
        assert p.grad is not None  # the model's own gradients are untouched


def test_new_weights_reach_the_replicas():
    """After load_state_dict (new arrays), a two-thread step starts from the loaded weights, not stale copies."""
    x, y = _batch(8)
    stepped = _model64()
    opt = build_optimizer(stepped)
    train_step(stepped, opt, x.astype(np.float64), y[:4], "dann", 0.5, 0.01, threads=2)  # replicas made now
    other = _model64(seed=1)
    stepped.load_state_dict(other.state_dict())
    fresh_opt = build_optimizer(stepped)
    train_step(stepped, fresh_opt, x.astype(np.float64), y[:4], "dann", 0.5, 0.01, threads=2)
    reference = _model64(seed=1)
    train_step(reference, build_optimizer(reference), x.astype(np.float64), y[:4], "dann", 0.5, 0.01)
    for p, q in zip(stepped.parameters(), reference.parameters(), strict=True):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12, atol=1e-14)


def test_a_failed_step_leaves_nothing_behind():
    """Half a raises while half b runs: the next step is exactly a fresh model's first step."""
    x, y = _batch(8)
    model = _model64()
    opt = build_optimizer(model)
    bad = y[:4].copy()
    bad[0] = -1  # out of range, in half a (the calling thread)
    with pytest.raises(ValueError, match="label"):
        train_step(model, opt, x.astype(np.float64), bad, "dann", 0.5, 0.01, threads=2)
    train_step(model, opt, x.astype(np.float64), y[:4], "dann", 0.5, 0.01, threads=2)
    reference = _model64()
    train_step(reference, build_optimizer(reference), x.astype(np.float64), y[:4], "dann", 0.5, 0.01, threads=2)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_can_take_two_thread_steps():
    """The worker thread does not survive fork(); the child must start its own instead of waiting forever."""
    model = build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    x, y = _batch(8)
    train_step(model, opt, x, y[:4], "dann", 0.5, 0.01, threads=2)  # the parent's worker thread exists now
    pid = os.fork()
    if pid == 0:  # the child: one more step, then report by exit status (never return into pytest)
        code = 1
        try:
            train_step(model, opt, x, y[:4], "dann", 0.5, 0.01, threads=2)
            code = 0
        finally:
            os._exit(code)
    deadline_s, waited = 60, 0.0
    while waited < deadline_s:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
        waited += 0.1
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's two-thread step hung")
    assert os.waitstatus_to_exitcode(status) == 0


def test_trainer_refuses_a_bad_thread_count_before_training(tmp_path):
    from minidann.train import DomainData, Trainer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 3, 28, 28), dtype=np.uint8)
    data = DomainData(images, rng.integers(0, 10, 8), images, rng.integers(0, 10, 8), np.zeros(3, np.float32))
    model = build_model(rng)
    with pytest.raises(ValueError, match="threads must be 1 or 2"):
        Trainer(model, build_optimizer(model), data, "dann", 4, 4, rng, progress=False, threads=3)
    # a batch whose halves would be uneven (3 source + 3 target rows) is refused before any step, too
    with pytest.raises(ValueError, match="even number of each, got 3 and 3"):
        Trainer(model, build_optimizer(model), data, "dann", 4, 6, rng, progress=False, threads=2)


# -- the reference kernels' step: the whole batch, one forward and one backward pass ----------------------------


def _spy_on_the_fast_step(monkeypatch):
    """Make every piece of the two-halves step raise, so that a step that takes it fails."""
    import minidann.fast.parallel as parallel

    def never(*args, **kwargs):
        raise AssertionError("the two-halves step ran under the reference kernels")

    for name in ("mean_of_halves", "replicate", "set_blas_threads"):
        monkeypatch.setattr(parallel, name, never)


@pytest.mark.parametrize("mode", ["dann", "source", "target"])
def test_the_reference_step_is_the_fast_step_up_to_float_rounding(mode, monkeypatch):
    fast, opt_fast, stats_fast = _run(1, mode)  # float64: two ways of summing the same gradient agree to ~1e-15
    _spy_on_the_fast_step(monkeypatch)
    with md.kernels("reference"):
        ref, opt_ref, stats_ref = _run(1, mode)
    whole, _, _ = _run_whole_batch(mode)
    for (name, p_ref), p_fast, p_whole in zip(ref.named_parameters(), fast.parameters(), whole.parameters(),
                                              strict=True):
        np.testing.assert_allclose(p_ref.data, p_fast.data, rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(p_ref.data, p_whole.data, rtol=1e-12, atol=1e-14, err_msg=name)
    for v_ref, v_fast in zip(opt_ref.velocities, opt_fast.velocities, strict=True):
        assert (v_ref is None) == (v_fast is None)
        if v_ref is not None:
            np.testing.assert_allclose(v_ref, v_fast, rtol=1e-12, atol=1e-14)
    for s_ref, s_fast in zip(stats_ref, stats_fast, strict=True):
        assert s_ref.keys() == s_fast.keys()
        for k in s_ref:
            assert (s_ref[k] is None) == (s_fast[k] is None)
            if s_ref[k] is not None:
                assert s_ref[k] == pytest.approx(s_fast[k], rel=1e-12), k


def test_the_reference_step_leaves_blas_threads_alone_and_makes_no_replicas(monkeypatch):
    import minidann.fast.parallel as parallel

    before = set_blas_threads(2)
    try:
        calls = []
        real_set, real_replicate = parallel.set_blas_threads, parallel.replicate
        monkeypatch.setattr(parallel, "set_blas_threads", lambda n: calls.append(n) or real_set(n))
        monkeypatch.setattr(parallel, "replicate", lambda m: calls.append("replicate") or real_replicate(m))
        model = build_model(np.random.default_rng(0))
        with md.kernels("reference"):
            _, _, _ = _run(1, "dann", dtype=np.float32)
            train_step(model, build_optimizer(model), *_dann_batch(8), "dann", 0.5, 0.01)
        assert calls == [] and model not in parallel._replicas
        if before is not None:
            assert blas_kernel().endswith(", 2 threads")
        train_step(model, build_optimizer(model), *_dann_batch(8), "dann", 0.5, 0.01)  # the fast step: both
        assert "replicate" in calls and 1 in calls
    finally:
        if before is not None:
            set_blas_threads(before)


def _dann_batch(n):
    x, y = _batch(n)
    return x, y[: n // 2]


def test_two_threads_are_refused_under_the_reference_kernels():
    model = build_model(np.random.default_rng(0))
    opt = build_optimizer(model)
    with md.kernels("reference"):
        with pytest.raises(ValueError, match=r"the reference kernels train on the whole batch in one forward and one "
                                             r"backward pass, on one thread: use threads 1, or the fast kernels "
                                             r"\(--kernels fast"):
            train_step(model, opt, *_dann_batch(8), "dann", 0.5, 0.01, threads=2)
    assert all(p.grad is None for p in model.parameters())  # refused before anything changed


def test_check_threads_is_the_one_check_of_a_thread_count():
    assert check_threads(1, "gpu", "reference", (3, 3)) == 1  # one thread runs anywhere, any batch
    assert check_threads(2, "cpu", "fast", (4, 4)) == 2
    assert check_threads(2, "cpu", "fast") == 2  # batch not known yet
    for bad in (0, 3, "2", 2.0 + 0.5, True, None):
        with pytest.raises(ValueError, match="threads must be 1 or 2"):
            check_threads(bad)
    with pytest.raises(ValueError, match="on the gpu use threads 1"):
        check_threads(2, "gpu", "fast")
    with pytest.raises(ValueError, match="got 4 and 3"):
        check_threads(2, "cpu", "fast", (4, 3))
    with pytest.raises(ValueError, match="reference kernels"):
        check_threads(2, "cpu", "reference", (4, 4))
    with md.kernels("reference"):  # None: the active layer
        with pytest.raises(ValueError, match="reference kernels"):
            check_threads(2)
        assert auto_threads("cpu") == 1


def test_trainer_trains_under_its_kernels_and_records_them(tmp_path, monkeypatch):
    from minidann.checkpoint import load_checkpoint
    from minidann.train import DomainData, Trainer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 3, 28, 28), dtype=np.uint8)
    data = DomainData(images, rng.integers(0, 10, 16), images, rng.integers(0, 10, 16), np.zeros(3, np.float32))

    def trainer(kernels, path):
        model = build_model(np.random.default_rng(0))
        return Trainer(model, build_optimizer(model), data, "dann", 4, 8, np.random.default_rng(1), progress=False,
                       log_every=2, checkpoint_path=path, kernels=kernels)

    seen = []
    real_train_step = train_step

    def spy(*args, **kwargs):
        seen.append(md.active_kernels())
        return real_train_step(*args, **kwargs)

    monkeypatch.setattr("minidann.train.train_step", spy)
    ref = trainer("reference", tmp_path / "ref.npz")
    assert ref.kernels == "reference"
    ref.run()
    assert seen == ["reference"] * 4 and md.active_kernels() == "fast"  # applied while it ran, restored after
    ckpt = load_checkpoint(tmp_path / "ref.npz")
    assert ckpt.meta["kernels"] == "reference"
    fast = trainer(None, tmp_path / "fast.npz")  # None: the active layer
    assert fast.kernels == "fast"
    with pytest.raises(ValueError, match=r"trained with the reference kernels, this Trainer runs the fast kernels: "
                                         r"resume it with kernels='reference'"):
        fast.restore(ckpt)
    assert fast.step == 0
    with pytest.raises(ValueError, match="kernels must be one of"):
        trainer("slow", None)
    with pytest.raises(ValueError, match="reference kernels"):
        model = build_model(np.random.default_rng(0))
        Trainer(model, build_optimizer(model), data, "dann", 4, 8, rng, progress=False, kernels="reference",
                threads=2)
