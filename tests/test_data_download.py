"""Checked downloads against a local HTTP server on 127.0.0.1 (no network needed)."""

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from minidann.data import DownloadError, load_mnist
from minidann.data.download import RemoteFile, download_file, download_files
from minidann.data.mnist import MNIST_FILES, download_mnist, write_idx

PAYLOAD = bytes(range(256)) * 200  # 51,200 bytes, several read chunks


class _Handler(BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path.startswith("/drop/"):
            # Announce more than we send, send half, then hang up: an interrupted download.
            body = self.files[self.path[len("/drop"):]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 10_000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    """A local server; tests put url path -> bytes into `files`."""
    handler = type("Handler", (_Handler,), {"files": {}})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.files
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _md5(data):
    return "md5:" + hashlib.md5(data).hexdigest()


def test_success_writes_verified_file_and_nothing_else(server, tmp_path):
    base, files = server
    files["/data.bin"] = PAYLOAD
    dest = tmp_path / "dl"
    path = download_file(RemoteFile("data.bin", (f"{base}/data.bin",), _md5(PAYLOAD)), dest)
    assert path == dest / "data.bin" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == ["data.bin"]


def test_sha256_and_mirror_fallback(server, tmp_path, closed_port_url):
    base, files = server
    files["/good/data.bin"] = PAYLOAD
    urls = (f"{closed_port_url}/data.bin", f"{base}/missing/data.bin", f"{base}/good/data.bin")
    expected = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    path = download_file(RemoteFile("data.bin", urls, expected), tmp_path)
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_temp_file_and_raises(server, tmp_path):
    base, files = server
    files["/data.bin"] = PAYLOAD
    with pytest.raises(DownloadError) as err:
        download_file(RemoteFile("data.bin", (f"{base}/data.bin",), _md5(b"something else")), tmp_path)
    assert "md5 mismatch" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_connection_dropped_mid_file_leaves_nothing(server, tmp_path):
    base, files = server
    files["/data.bin"] = PAYLOAD
    with pytest.raises(DownloadError) as err:
        download_file(RemoteFile("data.bin", (f"{base}/drop/data.bin",), _md5(PAYLOAD)), tmp_path)
    assert f"{base}/drop/data.bin" in str(err.value)
    assert "connection closed after 25600 of 61200 bytes" in str(err.value)  # reported as such, not as a bad hash
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_not_clobbered_by_a_failed_download(server, tmp_path):
    base, files = server
    files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin").write_bytes(b"old")
    with pytest.raises(DownloadError):
        download_file(RemoteFile("data.bin", (f"{base}/drop/data.bin",), _md5(PAYLOAD)), tmp_path)
    assert (tmp_path / "data.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_unreachable_mirrors_give_the_by_hand_message_quickly(tmp_path, closed_port_url):
    remotes = [
        RemoteFile("a.gz", (f"{closed_port_url}/a.gz", f"{closed_port_url}/mirror2/a.gz"), "md5:" + "1" * 32),
        RemoteFile("b.gz", (f"{closed_port_url}/b.gz",), "sha256:" + "2" * 64),
    ]
    start = time.perf_counter()
    with pytest.raises(DownloadError) as err:
        download_files(remotes, tmp_path)
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    for r in remotes:
        assert r.expected in msg and str(tmp_path / r.name) in msg
        for url in r.urls:
            assert url in msg
    assert "by hand" in msg
    assert list(tmp_path.iterdir()) == []


def test_download_mnist_with_injected_mirrors_and_checksums(server, tmp_path, closed_port_url):
    base, files = server
    rng = np.random.default_rng(0)
    table = {}
    for (img, lbl), n in zip(MNIST_FILES.values(), (6, 4), strict=True):
        for name, arr in ((img, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          (lbl, rng.integers(0, 10, n, dtype=np.uint8))):
            blob = write_idx(tmp_path / f"src-{name}.gz", arr).read_bytes()
            files[f"/mnist/{name}.gz"] = blob
            table[f"{name}.gz"] = _md5(blob)
    dest = tmp_path / "data"
    paths = download_mnist(dest, mirrors=(f"{closed_port_url}/", f"{base}/mnist/"), checksums=table)
    assert len(paths) == 4
    train, test = load_mnist(dest, verify=False)
    assert train.images.shape == (6, 28, 28) and test.labels.shape == (4,)
    assert download_mnist(dest, mirrors=(f"{base}/mnist/",), checksums=table) == []  # nothing missing


def test_a_data_folder_that_cannot_be_written_is_not_reported_as_no_network(server, tmp_path, capsys):
    # the server is up; the problem is local, and the message must say so (it used to say "no network")
    from minidann.data import DataFolderNotWritable, load_digits_pair
    from minidann.data.__main__ import main

    base, files = server
    files["/file.bin"] = PAYLOAD
    remote = RemoteFile("file.bin", (f"{base}/file.bin",), _md5(PAYLOAD))
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a folder")
    with pytest.raises(DataFolderNotWritable, match=r"data.txt is a file, not a folder. Fix: pass a folder"):
        download_files([remote], a_file)
    with pytest.raises(DataFolderNotWritable, match=r"cannot write to the data folder .*sub \(.*Error.*Fix: choose"):
        download_file(remote, a_file / "sub")  # its parent is a file: it cannot be created
    assert a_file.read_text() == "not a folder"
    # auto falls back to the embedded digits, and says why; the MNIST-M cache is not claimed either
    pair = load_digits_pair("auto", a_file / "sub", seed=0)
    assert pair.source == "embedded" and "cannot write to the data folder" in pair.reason
    assert pair.mnistm_cache is None
    capsys.readouterr()
    assert main(["build-mnistm", "--data-dir", str(a_file / "sub")]) == 0
    assert "not cached (could not write to" in capsys.readouterr().out
    assert main(["info", "--data-dir", str(a_file)]) == 0
    assert "a file, not a folder!" in capsys.readouterr().out


def test_temporary_files_of_a_killed_download_are_removed_by_the_next_one(server, tmp_path):
    import os

    base, files = server
    files["/data.bin"] = PAYLOAD
    dest = tmp_path / "dl"
    dest.mkdir()
    stale = dest / ".data.bin.0123456789ab.part"  # what a SIGKILL mid-download leaves
    fresh = dest / ".data.bin.ba9876543210.part"  # what a download running right now would have
    stale.write_bytes(PAYLOAD[:100])
    fresh.write_bytes(PAYLOAD[:100])
    old = time.time() - 3600
    os.utime(stale, (old, old))
    download_file(RemoteFile("data.bin", (f"{base}/data.bin",), _md5(PAYLOAD)), dest)
    assert sorted(p.name for p in dest.iterdir()) == [fresh.name, "data.bin"]


def test_a_disk_that_fills_up_stops_at_the_first_mirror_even_when_the_file_fails_to_close(server, tmp_path,
                                                                                        monkeypatch):
    # A buffered file that a full disk refused still holds bytes, and closing it fails the same way: that second
    # failure must not pass for the network's (and send the download to the next mirror, onto the same disk).
    import errno

    from minidann.data import download as download_module
    from minidann.data.download import DataFolderNotWritable

    base, files = server
    body = bytes(range(256)) * 1200  # 307,200 bytes: several blocks
    files["/a/big.bin"] = files["/b/big.bin"] = body
    opened = []

    class FullDisk:
        def __init__(self, path, mode):
            self.name, self.writes = str(path), 0
            opened.append(path)

        def write(self, block):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(block)

        def close(self):
            raise OSError(errno.ENOSPC, "No space left on device")  # the buffered rest, flushed

    monkeypatch.setattr(download_module, "open", FullDisk, raising=False)
    remote = RemoteFile("big.bin", (f"{base}/a/big.bin", f"{base}/b/big.bin"), f"size:{len(body)}")
    with pytest.raises(DataFolderNotWritable, match="cannot write .*big.bin: the disk is full"):
        download_file(remote, tmp_path)
    assert len(opened) == 1  # the second mirror was not tried
