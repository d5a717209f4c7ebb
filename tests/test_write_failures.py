"""Writes that fail (full disk, read-only disk, no permission, a file in the way) and writes that were killed.

The full and read-only disks are real: a 1 MB tmpfs mounted for the test (as root, which CI is), remounted
read-only where needed. Where mounting is not allowed those tests skip, saying so.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from minidann.checkpoint import load_checkpoint, save_checkpoint
from minidann.data._common import (
    _host_tag,
    atomic_write,
    remove_stale_temps,
    save_npz_atomic,
    temp_path,
    write_text_atomic,
)
from minidann.data.download import DataFolderNotWritable, RemoteFile, download_file
from minidann.io_errors import EXIT_WRITE_FAILED, WriteFailed, check_folder_writable, describe_write_error

BIG = {"x": np.ones(300_000, np.float64)}  # 2.4 MB: more than the small disk holds
SMALL = {"x": np.arange(10.0)}


def _mount(folder, size="1m"):
    folder.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}); CI runs this as root")


@pytest.fixture
def small_disk(tmp_path, request):
    """A 1 MB file system of its own (another size with indirect parametrisation); `_remount_ro` makes it
    read-only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    folder = tmp_path / "disk"
    _mount(folder, getattr(request, "param", "1m"))
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _remount_ro(folder):
    r = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {r.stderr.strip()}")


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _model():
    from minidann.dann import build_model, build_optimizer

    model = build_model(np.random.default_rng(0))
    return model, build_optimizer(model)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(small_disk):
    path = small_disk / "cache.npz"
    save_npz_atomic(path, SMALL)
    with pytest.raises(WriteFailed) as e:
        save_npz_atomic(path, BIG, alternative="choose another --data-dir")
    msg = str(e.value)
    assert msg.startswith(f"cannot write {path}: the disk is full (") and "MB free on the file system of" in msg
    assert msg.endswith("Fix: free some space there, or choose another --data-dir; the file as it was before this "
                        "write is unchanged.")
    assert e.value.errno == errno.ENOSPC and e.value.exit_status == EXIT_WRITE_FAILED == 4
    assert isinstance(e.value, OSError)  # callers that handle OSError keep working
    assert _listing(small_disk) == ["cache.npz"]
    np.testing.assert_array_equal(np.load(path)["x"], SMALL["x"])


@pytest.mark.parametrize("small_disk", ["8m"], indirect=True)
def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_good_one(small_disk):
    model, optimizer = _model()
    path = small_disk / "checkpoints" / "dann.npz"
    save_checkpoint(path, model, optimizer, step=100)
    with open(small_disk / "filler", "wb") as f:  # fill what is left, less than a second checkpoint needs
        with pytest.raises(OSError):
            f.write(b"\0" * 8_000_000)
    with pytest.raises(WriteFailed, match=r"cannot write .*dann.npz: the disk is full"):
        save_checkpoint(path, model, optimizer, step=200)
    assert load_checkpoint(path).meta["step"] == 100  # the next run resumes from it
    assert _listing(path.parent) == ["dann.npz"]


def test_a_read_only_disk(small_disk):
    path = small_disk / "results.json"
    write_text_atomic(path, "{}")
    _remount_ro(small_disk)
    with pytest.raises(WriteFailed, match=r"results.json: the file system of .* is mounted read-only. Fix: write "
                                          r"to a writable disk, or choose another --out; the file as it was"):
        write_text_atomic(path, '{"new": 1}', alternative="choose another --out")
    assert path.read_text() == "{}"
    with pytest.raises(WriteFailed, match=r"cannot write in the folder .*out: the file system .* read-only"):
        check_folder_writable(small_disk / "out")


def test_check_folder_writable_finds_a_full_disk_before_any_work(small_disk):
    check_folder_writable(small_disk / "a" / "b")
    assert (small_disk / "a" / "b").is_dir() and _listing(small_disk / "a" / "b") == []  # the probe is gone
    with pytest.raises(WriteFailed, match=r"only .* MB free on its file system, about 5.0 MB are needed"):
        check_folder_writable(small_disk, need_bytes=5_000_000)
    (small_disk / "filler").write_bytes(b"\0" * 1_000_000)  # fills it
    with pytest.raises(WriteFailed, match=r"cannot write in the folder .*: the disk is full"):
        check_folder_writable(small_disk / "a")


def test_a_download_onto_a_full_disk_is_a_local_problem_not_the_network(small_disk):
    import http.server
    import threading

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            body = b"\1" * 2_000_000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        remote = RemoteFile("big.bin", (f"{base}/a/big.bin", f"{base}/b/big.bin"), "size:2000000")
        with pytest.raises(DataFolderNotWritable, match=r"cannot write .*big.bin: the disk is full .* Fix: free some "
                                                        r"space there, or choose another data folder with --data-dir"):
            download_file(remote, small_disk)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert hits == ["/a/big.bin"]  # the next mirror would fill the same disk: not tried
    assert _listing(small_disk) == []


def test_the_mnistm_cache_on_a_full_disk_costs_only_the_cache(small_disk, capsys):
    from minidann.data import build_mnistm

    rng = np.random.default_rng(0)
    digits = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    photos = [rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)]
    m = build_mnistm(digits[:1500], digits[1500:], photos, seed=0, cache_dir=small_disk)  # 4.7 MB of images
    assert m.cache_path is None and m.train.shape == (1500, 28, 28, 3)
    assert "could not write the MNIST-M cache" in capsys.readouterr().err
    assert _listing(small_disk) == []


@pytest.mark.parametrize("code, words", [
    (errno.EACCES, r"permission denied \(user .* may not write in .*\). Fix: make the folder writable \(chmod u\+w"),
    (errno.EPERM, r"permission denied"),
    (errno.EDQUOT, r"the disk quota is used up"),
    (errno.ENOENT, r"the folder .*gone does not exist \(was it deleted or unmounted while running\?\). Fix: recreate"),
    (errno.EIO, r"OSError: Input/output error. Fix: check the disk and the folder"),
])
def test_every_cause_is_named(tmp_path, code, words):
    path = tmp_path / "gone" / "metrics.csv"
    assert __import__("re").search(words, describe_write_error(path, OSError(code, os.strerror(code)))), code


def test_a_file_where_a_folder_should_be(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(WriteFailed, match=r"cannot write .*out/checkpoints/dann.npz: .*out is a file, not a folder. "
                                          r"Fix: rename or move that file"):
        save_npz_atomic(tmp_path / "out" / "checkpoints" / "dann.npz", SMALL)
    with pytest.raises(WriteFailed, match=r"cannot write in the folder .*out: .*out is a file, not a folder"):
        check_folder_writable(tmp_path / "out")
    assert (tmp_path / "out").read_text() == "a file"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot be tested as root")
def test_a_folder_without_write_permission(tmp_path):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    try:
        with pytest.raises(WriteFailed, match="permission denied"):
            save_npz_atomic(tmp_path / "ro" / "x.npz", SMALL)
    finally:
        os.chmod(tmp_path / "ro", 0o755)


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    for exc in (RuntimeError("matplotlib failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), atomic_write(path) as f:
            f.write(b"half a new fi")
            raise exc
        assert path.read_bytes() == b"old" and _listing(tmp_path) == ["plot.png"]


KILLED_WRITE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from minidann.data import _common

    def savez(f, **arrays):  # write half of the file, then die as a SIGKILL (out of memory, kill -9) would
        f.write(b"\\0" * 100_000)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    np.savez = savez
    _common.save_npz_atomic(sys.argv[1], {"x": np.zeros(3)})
""")


def test_temporaries_of_a_killed_write_are_removed_by_the_next_write_of_that_file(tmp_path):
    path = tmp_path / "mnistm-bsds500-seed0-0123.npz"
    save_npz_atomic(path, SMALL)
    p = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)])
    assert p.returncode == -signal.SIGKILL
    left = [n for n in _listing(tmp_path) if n.endswith(".part")]
    assert len(left) == 1 and left[0].startswith(f".{path.name}.{_host_tag()}-")  # it says whose temporary it is
    other = tmp_path / f".other.npz.{_host_tag()}-999999999-0badcafe.part"  # another file's temporary: not ours
    live = tmp_path / f".{path.name}.{_host_tag()}-{os.getppid()}-0badcafe.part"  # a write still going
    old_style = tmp_path / f".{path.name}.0123456789ab.part"  # an older name; judged by its age
    fresh_old_style = tmp_path / f".{path.name}.ba9876543210.part"
    for f in (other, live, old_style, fresh_old_style):
        f.write_bytes(b"x")
    os.utime(old_style, (time.time() - 3600,) * 2)
    save_npz_atomic(path, BIG)
    assert _listing(tmp_path) == sorted([path.name, other.name, live.name, fresh_old_style.name])
    np.testing.assert_array_equal(np.load(path)["x"], BIG["x"])


def test_every_writer_that_takes_a_temporary_name_cleans_up(tmp_path):
    # plots (viz.save_png) and downloads ask temp_path for their temporary: that alone removes stale ones
    from matplotlib.figure import Figure

    from minidann.viz import save_png

    stale = tmp_path / f".curves.png.{_host_tag()}-999999999-0badcafe.part"  # pid 999999999 does not exist
    stale.write_bytes(b"half a png")
    save_png(Figure(), tmp_path / "curves.png")
    assert _listing(tmp_path) == ["curves.png"]
    stale.write_bytes(b"x")
    assert remove_stale_temps(tmp_path / "curves.png") == [stale]
    assert temp_path(tmp_path / "a.npz").name.startswith(f".a.npz.{_host_tag()}-{os.getpid()}-")
