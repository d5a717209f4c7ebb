"""End-to-end runs of examples/mnist_to_mnistm.py on a small slice of the embedded data (offline, seconds)."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from example_script import PNG_MAGIC, SCRIPT, load_example

from minidann.backend import gpu_available
from minidann.checkpoint import load_checkpoint
from minidann.dann import lambda_schedule, lr_schedule
from minidann.fast.parallel import auto_threads
from minidann.train import METRIC_COLUMNS

example = load_example("mnist_to_mnistm")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def tiny_args(data_dir, out, *extra, steps=16, modes="source,dann"):
    """A seeded run small enough for a test: 200 training and 60 test images per domain, batch 8."""
    return ["--device", "cpu", "--data", "embedded", "--data-dir", str(data_dir), "--out", str(out),
            "--steps", str(steps), "--batch-size", "8", "--limit-train", "200", "--limit-test", "60",
            "--eval-every", "8", "--modes", modes, "--no-progress", "--seed", "0", *extra]


def run(args, capsys):
    code = example.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as info:
        example.parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--device", "--seed", "--steps", "--batch-size", "--modes", "--data", "--data-dir", "--no-verify",
                 "--out", "--resume", "--no-progress", "--eval-every", "--limit-train", "--limit-test", "--threads",
                 "--kernels"):
        assert flag in text, flag
    for default in ("(default: auto)", "(default: 8600)", "(default: 64)", "(default: source,dann)",
                    "(default: 1000)", "(default: 0)"):
        assert default in text, default
    assert "(default: fast; with --resume, the run's own)" in " ".join(text.split())  # (argparse wraps lines)
    assert "runs/" in text and "debug" not in text  # words for None defaults; testing aids stay hidden


def test_end_to_end_writes_every_output(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(tiny_args(data_dir, out, modes="all"), capsys)
    assert code == 0
    # the start: resolved configuration and the data used
    assert "device: cpu" in stdout and "embedded MNIST subset" in stdout and "MNIST-M variant" in stdout
    # the final table, with the paper's numbers beside ours
    assert "JMLR MNIST-M" in stdout and "tf-dann MNIST-M" in stdout
    for ref in ("0.5225", "0.7666", "0.9596", "0.5342", "0.7076", "0.9873", "0.9781"):
        assert ref in stdout

    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 0 and config["steps"] == 16 and config["modes"] == ["source", "dann", "target"]
    assert config["data_used"] == "embedded" and config["device_used"] == "cpu" and config["kernels"] == "fast"

    results = json.loads((out / "results.json").read_text())
    assert {"modes", "device", "seed", "data", "versions", "proxy_a_distance"} <= set(results)
    assert set(results["modes"]) == {"source", "dann", "target"}
    for mode, r in results["modes"].items():
        assert {"source_acc", "target_acc", "steps", "seconds", "ms_per_step"} <= set(r)
        assert ("domain_acc" in r) == (mode == "dann")
        assert r["steps"] == 16 and r["seconds"] > 0 and r["ms_per_step"] > 0
        assert 0 <= r["source_acc"] <= 1 and 0 <= r["target_acc"] <= 1
    assert results["device"] == "cpu" and results["seed"] == 0 and results["kernels"] == "fast"
    assert results["data"]["source"] == "embedded" and results["data"]["train"] == 200
    assert results["versions"]["numpy"] == np.__version__
    pad = results["proxy_a_distance"]
    assert {"raw_pixels", "source_only_features", "dann_features"} <= set(pad)
    assert "proxy A-distance" in stdout

    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == METRIC_COLUMNS
    assert [(r["mode"], r["step"]) for r in rows] == [(m, s) for m in ("source", "dann", "target")
                                                      for s in ("8", "16")]
    assert all(r["source_acc"] != "" and r["target_acc"] != "" for r in rows)  # evaluated every 8 steps
    assert all((r["domain_loss"] != "") == (r["mode"] == "dann") for r in rows)
    last = results["modes"]["dann"]
    assert float(rows[3]["target_acc"]) == pytest.approx(last["target_acc"], abs=1e-6)  # the last iterate

    for png in ("curves.png", "samples.png", "embedding.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC, png
    for mode in ("source", "dann", "target"):
        ckpt = load_checkpoint(out / "checkpoints" / f"{mode}.npz")
        assert ckpt.meta["mode"] == mode and ckpt.meta["step"] == 16


def test_refuses_to_overwrite_a_run(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    code, _, err = run(tiny_args(data_dir, out), capsys)
    assert code == 2 and "holds files that no minidann run wrote (config.json)" in err
    assert (out / "config.json").read_text() == "{}"


def _final_weights(out, mode):
    ckpt = load_checkpoint(out / "checkpoints" / f"{mode}.npz")
    return ckpt.params, ckpt.optimizer


def _same(a, b):
    return all(a[i].keys() == b[i].keys() and all(np.array_equal(a[i][k], b[i][k]) for k in a[i]) for i in (0, 1))


@pytest.mark.parametrize("threads, resume_threads", [("1", "1"), ("2", "2"), ("2", "1"), ("1", "2")])
def test_interrupted_then_resumed_run_ends_with_identical_weights(tmp_path, data_dir, capsys, threads,
                                                                  resume_threads):
    """Ctrl-C in dann at step 6 of 12 (source is finished); --resume keeps source and finishes dann.

    The resumed run may use another thread count: it changes the speed of a CPU step, never its numbers."""
    full = tmp_path / "full"
    assert run(tiny_args(data_dir, full, "--threads", threads, steps=12), capsys)[0] == 0

    cut = tmp_path / "cut"
    code, _, err = run(tiny_args(data_dir, cut, "--threads", threads, "--debug-interrupt-at", "dann:6", steps=12),
                       capsys)
    assert code == 130
    assert load_checkpoint(cut / "checkpoints" / "source.npz").meta["step"] == 12
    ckpt = cut / "checkpoints" / "dann.npz"
    assert f"checkpoint saved to {ckpt}" in err and f"--resume {ckpt}" in err
    assert load_checkpoint(ckpt).meta["step"] == 6
    assert not (cut / "results.json").exists()

    code, stdout, _ = run(["--resume", str(ckpt), "--device", "cpu", "--no-progress", "--steps", "99",
                           "--threads", resume_threads], capsys)
    assert code == 0, stdout
    assert "ignoring --steps" in stdout and "--threads" not in stdout.split("ignoring")[1].split("\n")[0]
    assert f"threads      {resume_threads}" in stdout  # how this machine runs it, from the flag
    assert f"source: finished from {cut / 'checkpoints' / 'source.npz'}" in stdout
    assert f"dann: resuming from {ckpt} at step 6" in stdout
    for mode in ("source", "dann"):
        assert _same(_final_weights(full, mode), _final_weights(cut, mode)), mode
    # and the log is the same, row for row
    assert (full / "metrics.csv").read_text() == (cut / "metrics.csv").read_text()
    a = json.loads((full / "results.json").read_text())["modes"]
    b = json.loads((cut / "results.json").read_text())["modes"]
    for mode in a:
        for key in ("source_acc", "target_acc", "steps"):
            assert a[mode][key] == b[mode][key]


def test_nan_guard_stops_with_the_documented_message(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, _, err = run(tiny_args(data_dir, out, "--debug-nan-at", "5", steps=16, modes="dann"), capsys)
    assert code == 3
    assert "non-finite loss in mode 'dann' at step 5 of 16" in err
    p = 4 / 16  # step 5 runs at p = (5 - 1) / 16
    assert f"lambda {lambda_schedule(p):.6g}, lr {lr_schedule(p):.6g}" in err
    assert "no checkpoint was saved before it" in err
    assert "Traceback" not in err
    assert not (out / "checkpoints" / "dann.npz").exists()


@pytest.mark.skipif(gpu_available(), reason="a GPU is available here, so --device gpu would not fail")
def test_device_gpu_without_a_gpu_fails_cleanly(tmp_path):
    env = dict(os.environ, MINIDANN_DATA=str(tmp_path))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "gpu", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert "error: --device gpu:" in proc.stderr and "CuPy" in proc.stderr and "--device cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written before the device check


def test_one_thread_or_two_train_the_same_model_bit_for_bit(tmp_path, data_dir, capsys):
    """--threads 1 and 2 record themselves in config.json and end with the same weights and log, bit for bit;
    the default, auto, takes two on a CPU with at least two cores."""
    runs = {}
    for threads in ("1", "2", None):
        out = tmp_path / f"threads-{threads}"
        code, stdout, _ = run(tiny_args(data_dir, out, *(("--threads", threads) if threads else ()), steps=8), capsys)
        expected = int(threads) if threads else auto_threads("cpu")
        assert code == 0 and f"threads      {expected}" in stdout
        assert json.loads((out / "config.json").read_text())["threads"] == expected
        runs[threads] = out
    for other in ("2", None):
        for mode in ("source", "dann"):
            assert _same(_final_weights(runs["1"], mode), _final_weights(runs[other], mode)), (other, mode)
        assert (runs["1"] / "metrics.csv").read_text() == (runs[other] / "metrics.csv").read_text()


def test_resuming_with_two_threads_a_run_whose_batch_does_not_halve_says_so(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, _, _ = run(tiny_args(data_dir, out, "--batch-size", "6", "--debug-interrupt-at", "dann:4", steps=8), capsys)
    assert code == 130
    ckpt = out / "checkpoints" / "dann.npz"
    code, _, err = run(["--resume", str(ckpt), "--device", "cpu", "--no-progress", "--threads", "2"], capsys)
    assert code == 2
    assert "--threads 2 with --kernels fast and --batch-size 6" in err and "got 3 and 3" in err
    assert "threads 1" in err and "Traceback" not in err
    assert load_checkpoint(ckpt).meta["step"] == 4  # nothing lost: the checkpoint is as it was


def test_auto_threads_falls_back_to_one_when_the_batch_does_not_halve_or_the_kernels_are_reference():
    assert example.resolve_threads("auto", "cpu", "fast", 6, ["source", "dann"]) == 1  # 3 + 3 rows
    assert example.resolve_threads("auto", "cpu", "fast", 8, ["source", "dann"]) == auto_threads("cpu")
    assert example.resolve_threads("auto", "cpu", "fast", 6, ["source"]) == auto_threads("cpu")
    assert example.resolve_threads("auto", "gpu", "fast", 8, ["dann"]) == 1
    assert example.resolve_threads("auto", "cpu", "reference", 8, ["dann"]) == 1  # one whole-batch pass
    assert example.resolve_threads("2", "cpu", "fast", 8, ["dann"]) == 2


@pytest.mark.parametrize("flags, reason", [
    (["--batch-size", "6"], "got 3 and 3; use a batch size divisible by 4"),
    (["--kernels", "reference"], "the reference kernels train on the whole batch in one forward and one backward "
                                 "pass, on one thread: use threads 1, or the fast kernels (--kernels fast"),
])
def test_two_threads_are_refused_with_the_reason_before_anything_is_written(tmp_path, data_dir, capsys, flags,
                                                                           reason):
    out = tmp_path / "run"
    code, _, err = run(tiny_args(data_dir, out, "--threads", "2", *flags), capsys)
    assert code == 2 and "error: --threads 2 with --kernels" in err and reason in err and "Traceback" not in err
    assert not out.exists()


def test_reference_kernels_run_end_to_end_as_one_whole_batch_pass(tmp_path, data_dir, capsys, monkeypatch):
    """--kernels reference: every step one forward and one backward pass, on the reference ops, on one thread."""
    import minidann
    from minidann.fast import conv, parallel, pool, tuning

    def never(*args, **kwargs):
        raise AssertionError("the fast layer ran under --kernels reference")

    for module, name in ((parallel, "mean_of_halves"), (parallel, "replicate"), (tuning, "set_blas_threads"),
                         (tuning, "keep_freed_host_memory"), (conv, "conv2d"), (pool, "max_pool2d")):
        monkeypatch.setattr(module, name, never)
    out = tmp_path / "run"
    code, stdout, _ = run(tiny_args(data_dir, out, "--kernels", "reference", "--threads", "auto", steps=8), capsys)
    assert code == 0 and "kernels      reference" in stdout and "threads      1" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["kernels"] == "reference" and config["threads"] == 1
    results = json.loads((out / "results.json").read_text())
    assert results["kernels"] == "reference" and set(results["modes"]) == {"source", "dann"}
    for mode in ("source", "dann"):
        assert load_checkpoint(out / "checkpoints" / f"{mode}.npz").meta["kernels"] == "reference"
    assert minidann.active_kernels() == "fast"  # the run's kernels applied while it ran, not after


def test_resume_goes_on_with_the_runs_kernels_and_refuses_others(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, _, _ = run(tiny_args(data_dir, out, "--kernels", "reference", "--threads", "1", "--debug-interrupt-at",
                               "dann:4", steps=8), capsys)
    assert code == 130
    ckpt = out / "checkpoints" / "dann.npz"
    before = _snapshot(out)
    code, _, err = run(["--resume", str(ckpt), "--device", "cpu", "--no-progress", "--kernels", "fast"], capsys)
    assert code == 2 and "--kernels fast: this run trained with --kernels reference" in err
    assert "leave --kernels out or give --kernels reference" in err and "Traceback" not in err
    assert _snapshot(out) == before  # refused before anything was written
    code, stdout, _ = run(["--resume", str(ckpt), "--device", "cpu", "--no-progress"], capsys)
    assert code == 0 and "kernels      reference" in stdout
    assert json.loads((out / "results.json").read_text())["kernels"] == "reference"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir):
    """A finished tiny run (source and dann, 8 steps each) for the resume guards below to copy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert example.main(tiny_args(data_dir, out, steps=8)) == 0
    return out


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_refuses_to_write_into_another_run(tmp_path, finished_run, capsys):
    victim = _copy_run(finished_run, tmp_path / "victim")
    before = _snapshot(victim)
    other = _copy_run(finished_run, tmp_path / "other")
    code, _, err = run(["--resume", str(other / "checkpoints" / "dann.npz"), "--out", str(victim), "--device", "cpu",
                        "--no-progress"], capsys)
    assert code == 2 and f"--out {victim} already holds another run" in err and "leave --out out" in err
    assert _snapshot(victim) == before  # nothing of it was touched


def test_resume_refuses_a_checkpoint_of_another_run_beside_it(tmp_path, data_dir, finished_run, capsys):
    run_dir = _copy_run(finished_run, tmp_path / "run")
    stranger = tmp_path / "stranger"  # the same modes, another batch size
    assert example.main(tiny_args(data_dir, stranger, steps=8)[:-2] + ["--seed", "0", "--batch-size", "4"]) == 0
    capsys.readouterr()
    (run_dir / "checkpoints" / "source.npz").write_bytes((stranger / "checkpoints" / "source.npz").read_bytes())
    before = _snapshot(run_dir)
    code, _, err = run(["--resume", str(run_dir / "checkpoints" / "dann.npz"), "--device", "cpu", "--no-progress"],
                       capsys)
    assert code == 2 and "source.npz belongs to another run (batch size 4 there, 8 in this run)" in err
    assert "delete it to train mode source again" in err
    assert _snapshot(run_dir) == before  # refused before config.json or metrics.csv were rewritten
    # a damaged one beside it is refused the same way, with the fix
    (run_dir / "checkpoints" / "source.npz").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run(["--resume", str(run_dir / "checkpoints" / "dann.npz"), "--device", "cpu", "--no-progress"],
                       capsys)
    assert code == 2 and "cannot read checkpoint" in err and "to train mode source again" in err


def test_resume_uses_the_checkpoint_given_whatever_its_name(tmp_path, finished_run, capsys):
    run_dir = _copy_run(finished_run, tmp_path / "run")
    copy = run_dir / "checkpoints" / "dann-backup.npz"
    (run_dir / "checkpoints" / "dann.npz").rename(copy)
    code, stdout, _ = run(["--resume", str(copy), "--device", "cpu", "--no-progress", "--out", str(tmp_path / "new")],
                          capsys)
    assert code == 0 and f"dann: finished from {copy}" in stdout


def test_resume_refuses_a_checkpoint_without_a_run_configuration(tmp_path, capsys):
    from minidann.checkpoint import save_checkpoint
    from minidann.dann import build_model

    path = save_checkpoint(tmp_path / "mine.npz", build_model(np.random.default_rng(0)), step=3)
    code, _, err = run(["--resume", str(path), "--device", "cpu"], capsys)
    assert code == 2 and "holds no run of this example" in err and "load_checkpoint" in err


def test_a_run_that_stopped_before_its_first_checkpoint_is_not_offered_for_resume(tmp_path, data_dir, capsys):
    from minidann.run_folder import claim_run_folder

    out = tmp_path / "run"
    with claim_run_folder(out) as claimed:  # a run that wrote its config, then stopped
        (out / "config.json").write_text("{}")
        claimed.record("config.json")
    code, _, err = run(tiny_args(data_dir, out), capsys)
    assert code == 2 and "stopped before its first checkpoint" in err and f"--resume {out}" not in err
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "source.npz").write_bytes(b"")
    code, _, err = run(tiny_args(data_dir, out), capsys)
    assert code == 2 and f"--resume {out / 'checkpoints' / 'source.npz'}" in err


def test_out_that_is_a_file_is_refused(tmp_path, data_dir, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    code, _, err = run(tiny_args(data_dir, out), capsys)
    assert code == 2 and "is a file" in err and out.read_text() == "keep me"


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--batch-size", "16", "--limit-train", "5"], "--limit-train 5 leaves fewer training images per domain than "
                                                   "one batch takes (16"),
    (["--batch-size", "16", "--limit-train", "8", "--modes", "dann"], None),  # dann takes 8 per domain: fine
    (["--limit-test", "3"], "--limit-test must be 0 (all) or at least 8"),
])
def test_limits_and_seed_are_checked_before_anything_runs(capsys, flags, message):
    if message is None:
        example.parse_args(flags)
        return
    with pytest.raises(SystemExit) as info:
        example.parse_args(flags)
    assert info.value.code == 2 and message in capsys.readouterr().err
