"""The example's output folders, resumes, signals and failed writes, tried as a hostile user would.

Every run is the tiny one of test_example_mnist.py (200 + 200 training images, batch 8, 8 steps per mode), with
a checkpoint every 4 steps so that a failure can fall between two checkpoints.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from example_script import load_example

from minidann.checkpoint import load_checkpoint

example = load_example("mnist_to_mnistm_safety")
EVERY = 4  # steps between checkpoints in these tests


@pytest.fixture(autouse=True)
def _checkpoint_often(monkeypatch):
    monkeypatch.setattr(example, "CHECKPOINT_EVERY", EVERY)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def tiny_args(data_dir, out, *extra, steps=8):
    return ["--device", "cpu", "--data", "embedded", "--data-dir", str(data_dir), "--out", str(out),
            "--steps", str(steps), "--batch-size", "8", "--limit-train", "200", "--limit-test", "60",
            "--eval-every", "8", "--modes", "source,dann", "--no-progress", "--seed", "0", "--threads", "1", *extra]


def run(args, capsys):
    code = example.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def resume_args(ckpt, *extra):
    return ["--resume", str(ckpt), "--device", "cpu", "--no-progress", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    """The run the interrupted ones must end as: its metrics.csv."""
    out = tmp_path_factory.mktemp("full") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(example, "CHECKPOINT_EVERY", EVERY)
        assert example.main(tiny_args(data_dir, out)) == 0
    return out


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_with_files_no_run_wrote_is_refused_until_overwrite(tmp_path, data_dir, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.csv").write_text("my own measurements\n")
    code, stdout, err = run(tiny_args(data_dir, out), capsys)
    assert code == 2 and "holds files that no minidann run wrote (metrics.csv)" in err and "--overwrite" in err
    assert "data:" not in stdout  # refused before the data load
    assert (out / "metrics.csv").read_text() == "my own measurements\n"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv"]  # no lock or manifest left behind
    with pytest.raises(SystemExit):  # --overwrite never goes with --resume
        example.parse_args(["--overwrite", "--resume", "x.npz"])
    capsys.readouterr()
    code, _, _ = run(tiny_args(data_dir, out, "--overwrite"), capsys)
    assert code == 0 and (out / "metrics.csv").read_text().startswith("step,mode")
    assert not (out / ".minidann-run.lock").exists()
    manifest = example.read_manifest(out)
    assert {"config.json", "metrics.csv", "results.json", "checkpoints/dann.npz"} <= set(manifest["files"])


def test_a_second_run_on_the_same_out_is_refused_naming_the_first(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from minidann.run_folder import claim_run_folder
            with claim_run_folder({str(out)!r}, command="the first run"):
                print("claimed", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        code, stdout, err = run(tiny_args(data_dir, out), capsys)
        assert code == 2 and f"pid {holder.pid}" in err and "data:" not in stdout
        assert "--overwrite" not in err and "delete it" not in err  # no advice that destroys the running run
    finally:
        holder.communicate("")
    assert not (out / "config.json").exists()


def _interrupted(tmp_path, data_dir, capsys, signal_name="INT"):
    cut = tmp_path / "cut"
    code, _, err = run(tiny_args(data_dir, cut, "--debug-interrupt-at", f"dann:6:{signal_name}"), capsys)
    return cut, code, err


def test_sigterm_saves_exits_143_and_the_resume_ends_as_an_uninterrupted_run(tmp_path, data_dir, capsys,
                                                                              uninterrupted):
    cut, code, err = _interrupted(tmp_path, data_dir, capsys, "TERM")
    ckpt = cut / "checkpoints" / "dann.npz"
    assert code == 143 and "SIGTERM" in err and f"--resume {ckpt}" in err
    assert load_checkpoint(ckpt).meta["step"] == 6
    assert not (cut / ".minidann-run.lock").exists()
    with open(cut / "metrics.csv", "a") as f:  # the kill also tore a row in half
        f.write("8,dann,0.69")
    code, stdout, _ = run(resume_args(ckpt), capsys)
    assert code == 0, stdout
    assert (cut / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()


def test_a_resume_on_other_data_is_refused_naming_the_difference(tmp_path, data_dir, capsys, monkeypatch):
    cut, code, _ = _interrupted(tmp_path, data_dir, capsys)
    assert code == 130
    before = _snapshot(cut)
    real = example.data_identity

    def other_backgrounds(*args, **kwargs):  # as if BSDS500 had been copied into the data folder
        ident = real(*args, **kwargs)
        ident["backgrounds"]["kind"] = "bsds500"
        ident["mnistm"]["train"] = "0" * 64
        return ident

    monkeypatch.setattr(example, "data_identity", other_backgrounds)
    code, _, err = run(resume_args(cut / "checkpoints" / "dann.npz"), capsys)
    assert code == 2 and "the data changed since" in err
    assert "backgrounds: scikit-image photos there, BSDS500 photos now" in err and "start a new run" in err
    after = _snapshot(cut)
    assert {k: v for k, v in after.items() if k.name != ".minidann-run.json"} == \
        {k: v for k, v in before.items() if k.name != ".minidann-run.json"}


def test_a_lone_checkpoint_needs_a_new_out_and_nothing_is_written(tmp_path, data_dir, capsys, uninterrupted):
    downloads = tmp_path / "some" / "Downloads"
    downloads.mkdir(parents=True)
    shutil.copy(uninterrupted / "checkpoints" / "source.npz", downloads / "source.npz")
    (tmp_path / "some" / "metrics.csv").write_text("the user's\n")
    before = _snapshot(tmp_path)
    code, _, err = run(resume_args(downloads / "source.npz"), capsys)
    assert code == 2 and "not in the folder of a run" in err and "--out NEW_FOLDER" in err
    assert _snapshot(tmp_path) == before
    # with --out, a new run folder goes on from it
    code, stdout, _ = run(resume_args(downloads / "source.npz", "--out", str(tmp_path / "new")), capsys)
    assert code == 0, stdout
    assert load_checkpoint(tmp_path / "new" / "checkpoints" / "dann.npz").meta["step"] == 8
    assert _snapshot(tmp_path / "some") == {k.relative_to("some"): v for k, v in before.items()
                                            if k.parts[0] == "some"}


def _mount_tmpfs(path, options):
    path.mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux mount")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")


def test_a_read_only_out_exits_4_before_the_data_load(tmp_path, data_dir, capsys):
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "ro,size=1m")
    try:
        code, stdout, err = run(tiny_args(data_dir, ro / "run"), capsys)
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    assert code == 4 and "read-only" in err and "Fix:" in err
    assert "data:" not in stdout


def test_a_full_disk_at_a_checkpoint_exits_4_and_the_last_good_one_resumes(tmp_path, data_dir, capsys, monkeypatch,
                                                                          uninterrupted):
    import minidann.checkpoint as checkpoint
    from minidann.data._common import atomic_write

    real = checkpoint.save_npz_atomic

    def full_at_dann_step_8(path, arrays, **kwargs):
        if Path(path).name == "dann.npz" and '"step": 8' in str(arrays["meta"]):
            with atomic_write(path) as f:
                f.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, arrays, **kwargs)

    monkeypatch.setattr(checkpoint, "save_npz_atomic", full_at_dann_step_8)
    out = tmp_path / "run"
    code, _, err = run(tiny_args(data_dir, out), capsys)
    ckpt = out / "checkpoints" / "dann.npz"
    assert code == 4 and "the disk is full" in err and f"last good checkpoint: {ckpt} (step 4)" in err
    assert f"--resume {ckpt}" in err
    assert load_checkpoint(ckpt).meta["step"] == 4  # intact
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(checkpoint, "save_npz_atomic", real)
    code, stdout, _ = run(resume_args(ckpt), capsys)
    assert code == 0, stdout
    assert (out / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()


def test_sighup_stops_like_ctrl_c_with_status_129(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    code, _, err = run(tiny_args(data_dir, out, "--debug-interrupt-at", "source:3:HUP", "--modes", "source"), capsys)
    assert code == 129 and "SIGHUP" in err and load_checkpoint(out / "checkpoints" / "source.npz").meta["step"] == 3


def test_sigterm_while_loading_the_data_exits_143_and_releases_the_folder(tmp_path, data_dir, capsys, monkeypatch):
    import signal

    def killed(cfg):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(example, "load_data", killed)
    out = tmp_path / "run"
    code, _, err = run(tiny_args(data_dir, out), capsys)
    assert code == 143 and "SIGTERM: stopped outside training" in err
    assert not (out / ".minidann-run.lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers were put back


def test_a_really_full_disk_exits_4_and_the_run_resumes_once_there_is_space(tmp_path, data_dir, capsys,
                                                                           uninterrupted):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=6m")  # room for one checkpoint (about 4.2 MB), not for its replacement beside it
    try:
        out = disk / "run"
        code, _, err = run(tiny_args(data_dir, out), capsys)
        ckpt = out / "checkpoints" / "source.npz"
        assert code == 4 and "the disk is full" in err and f"last good checkpoint: {ckpt} (step 4)" in err, err
        assert load_checkpoint(ckpt).meta["step"] == 4
        assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".part")]
        subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)
        code, stdout, _ = run(resume_args(ckpt), capsys)
        assert code == 0, stdout
        assert (out / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
    finally:
        subprocess.run(["umount", str(disk)], check=False)
