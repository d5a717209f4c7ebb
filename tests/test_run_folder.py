"""Run folders: one run per folder, a manifest of its files, a lock for the whole run, stale locks taken over."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from minidann.data._common import process_namespace
from minidann.run_folder import (
    LOCK_NAME,
    MANIFEST_NAME,
    RunFolderBusy,
    RunFolderError,
    claim_run_folder,
    read_lock,
    read_manifest,
)

HOLD = textwrap.dedent("""
    import sys
    from minidann.run_folder import claim_run_folder
    run = claim_run_folder(sys.argv[1], resume=sys.argv[2] == "resume", command="holder")
    print("ready", flush=True)
    sys.stdin.readline()
    run.release()
""")


def _holder(folder, mode="new"):
    """A second process that claims `folder` and holds it until its stdin gets a line."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), mode], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant_lock(folder, pid, namespace=None, host=None):
    ns = namespace or process_namespace()
    (folder / LOCK_NAME).write_text(json.dumps({
        "pid": pid, "host": host or ns.split(" ")[0], "namespace": ns, "started": "2026-01-01T00:00:00+00:00",
        "command": "python examples/mnist_to_mnistm.py --out x", "run_id": "feedfeedfeed"}))


def test_a_new_folder_is_claimed_locked_recorded_and_released(tmp_path):
    out = tmp_path / "runs" / "a"
    with claim_run_folder(out, command="train --out a") as run:
        lock = read_lock(out)
        assert lock.pid == os.getpid() and lock.command == "train --out a" and lock.namespace == process_namespace()
        (out / "metrics.csv").write_text("step\n")
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "dann.npz").write_bytes(b"x")
        run.record("metrics.csv", out / "checkpoints" / "dann.npz")
        assert run.owns("checkpoints/dann.npz") and not run.owns("results.json")
        with pytest.raises(ValueError, match="outside the run folder"):
            run.record(tmp_path / "elsewhere.txt")
    assert not (out / LOCK_NAME).exists()
    m = read_manifest(out)
    assert m["run_id"] == run.run_id and m["files"] == ["checkpoints/dann.npz", "metrics.csv"]


def test_the_lock_is_released_when_the_run_raises(tmp_path):
    with pytest.raises(RuntimeError), claim_run_folder(tmp_path / "a"):
        raise RuntimeError("training failed")
    assert not (tmp_path / "a" / LOCK_NAME).exists()
    claim_run_folder(tmp_path / "a", resume=True).release()


def test_a_folder_with_files_no_run_wrote_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "metrics.csv").write_text("the user's own numbers")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match=r"files that no minidann run wrote \(metrics.csv, notes/todo.txt\).*"
                                             r"Fix: choose a new or empty output folder \(--out\), or pass --over"):
        claim_run_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "notes"]  # nothing written, no lock left
    notes = []
    with claim_run_folder(tmp_path, overwrite=True, log=notes.append) as run:
        assert run.foreign == ("metrics.csv", "notes/todo.txt")
    assert "left in place" in notes[0]
    assert (tmp_path / "metrics.csv").read_text() == "the user's own numbers"
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_another_runs_folder_is_refused_continued_with_resume_or_replaced_with_overwrite(tmp_path):
    with claim_run_folder(tmp_path, command="first") as first:
        (tmp_path / "results.json").write_text("{}")
        first.record("results.json")
    with pytest.raises(RunFolderError, match=rf"holds run {first.run_id} \(started .* first\) with 1 files "
                                             r"\(results.json\). Fix: continue that run \(--resume\)") as e:
        claim_run_folder(tmp_path)
    assert e.value.reason == "other_run"
    with claim_run_folder(tmp_path, resume=True) as again:
        assert again.resumed and again.run_id == first.run_id and again.files == {"results.json"}
    notes = []
    with claim_run_folder(tmp_path, overwrite=True, log=notes.append) as new:
        assert new.run_id != first.run_id and new.files == set()
    assert not (tmp_path / "results.json").exists() and "deleted the 1 files" in notes[0]
    # a run folder whose files are all gone (the run stopped before writing any) is simply reused
    claim_run_folder(tmp_path).release()


def test_resume_outside_a_run_folder_is_refused(tmp_path):
    (tmp_path / "source.npz").write_bytes(b"a checkpoint someone downloaded")
    with pytest.raises(RunFolderError, match=r"not the folder of a minidann run .* Fix: choose a new output folder"):
        claim_run_folder(tmp_path, resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.npz"]


def test_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(RunFolderError, match="is a file; the run needs a folder") as e:
        claim_run_folder(tmp_path / "out")
    assert e.value.reason == "not_a_folder"
    with pytest.raises(ValueError, match="exclude each other"):
        claim_run_folder(tmp_path / "b", overwrite=True, resume=True)


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    holder = _holder(tmp_path / "a")
    try:
        with pytest.raises(RunFolderBusy) as e:
            claim_run_folder(tmp_path / "a", resume=True)
        msg = str(e.value)
        assert e.value.holder.pid == holder.pid and f"pid {holder.pid} on host" in msg and "started 20" in msg
        assert "(holder)" in msg and f"kill {holder.pid}" in msg and "do not delete the folder" in msg
        with pytest.raises(RunFolderBusy):  # overwrite never takes a live run's folder either
            claim_run_folder(tmp_path / "a", overwrite=True)
    finally:
        holder.communicate("\n", timeout=30)
    claim_run_folder(tmp_path / "a", resume=True).release()  # free once the holder is done


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = _holder(tmp_path / "a")
    holder.send_signal(signal.SIGKILL)  # no chance to release anything
    holder.wait()
    assert read_lock(tmp_path / "a").pid == holder.pid
    notes = []
    with claim_run_folder(tmp_path / "a", resume=True, log=notes.append) as run:
        assert run.took_over.pid == holder.pid and read_lock(tmp_path / "a").pid == os.getpid()
    assert f"took over the lock of a run that is gone: pid {holder.pid}" in notes[0]


@pytest.mark.parametrize("pid", ["dead", "reused"])
def test_a_stale_lock_file_is_recognised(tmp_path, pid):
    # "reused": the pid now belongs to a live process that does not hold the lock (pids restart in containers)
    pid = _dead_pid() if pid == "dead" else os.getppid()
    _plant_lock(tmp_path, pid)
    notes = []
    with claim_run_folder(tmp_path, log=notes.append) as run:
        assert run.took_over.pid == pid and run.notes[0].startswith("took over the stale lock of pid")
    assert len(notes) == 1 and "2026-01-01T00:00:00" in notes[0]


def test_a_lock_from_another_machine_is_named_not_called_stale(tmp_path):
    _plant_lock(tmp_path, _dead_pid(), namespace="gpu-node-7 pid:[4026531836]", host="gpu-node-7")
    with pytest.raises(RunFolderBusy, match=r"locked by a run on another machine: pid \d+ on host gpu-node-7.*cannot "
                                            r"be checked from here. Fix: if no run is going on in gpu-node-7.*delete "
                                            r"the lock file"):
        claim_run_folder(tmp_path)
    assert read_lock(tmp_path).host == "gpu-node-7"  # left as it was


def test_processes_starting_together_get_the_folder_one_at_a_time(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from minidann.run_folder import RunFolderBusy, claim_run_folder
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
        try:
            run = claim_run_folder(sys.argv[1], resume=False)
        except RunFolderBusy:
            print("busy"); raise SystemExit(0)
        time.sleep(1.0)
        print("got", run.run_id)
        run.release()
    """)
    import time

    start = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "a"), start], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert sorted(o[0] for o in outs) == ["busy", "busy", "busy", "got"], outs
    assert read_manifest(tmp_path / "a")["run_id"] == next(o[1] for o in outs if o[0] == "got")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [MANIFEST_NAME]
