"""Hostile inputs to the readers: IDX headers that lie, downloads that never end, lie about their size or trickle."""

import gzip
import struct
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from minidann.data import DataError, DownloadError
from minidann.data import download as download_mod
from minidann.data.download import RemoteFile, download_file, download_files
from minidann.data.mnist import read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_header_declaring_far_more_than_the_file_holds_is_refused_without_allocating_it(tmp_path, gz):
    # 16 bytes of header declaring a million images (784 MB), then ten images
    data = struct.pack(">IIII", 2051, 1_000_000, 28, 28) + bytes(784 * 10)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"payload is 7840 bytes but the header declares 1000000 images "
                                            r"\(784000000 bytes\): the file is truncated"):
            read_idx(path, "images")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated for a 7.9 kB file"


class _Hostile(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        try:
            if self.path == "/endless":  # no Content-Length, and far more than any MNIST file
                self.send_response(200)
                self.end_headers()
                for _ in range(320):
                    self.wfile.write(b"\0" * 65536)
            elif self.path == "/huge":  # announces 10 GB, for a file known to be 1,000 bytes
                self.send_response(200)
                self.send_header("Content-Length", str(10**10))
                self.end_headers()
                self.wfile.write(b"\0" * 1000)
            elif self.path == "/trickle":  # a few bytes at a time, each well within the read timeout
                self.send_response(200)
                self.send_header("Content-Length", str(10**6))
                self.end_headers()
                for _ in range(200):
                    self.wfile.write(b"\0" * 50)
                    self.wfile.flush()
                    time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: what it should do
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_download_that_never_ends_stops_at_the_size_cap(hostile, tmp_path, monkeypatch):
    monkeypatch.setattr(download_mod, "MAX_DOWNLOAD_BYTES", 1 << 20)
    remote = RemoteFile("x.gz", (f"{hostile}/endless",), "sha256:" + "0" * 64)
    with pytest.raises(DownloadError, match=r"endless: OSError: the server sent more than the 1,048,576 bytes "
                                            r"expected"):
        download_file(remote, tmp_path)
    assert _listing(tmp_path) == []


def test_a_download_announcing_more_than_its_known_size_is_refused_before_reading(hostile, tmp_path):
    remote = RemoteFile("BSR_bsds500.tgz", (f"{hostile}/huge",), "size:1000")
    with pytest.raises(DownloadError, match=r"huge: OSError: the server announces 10,000,000,000 bytes, more than "
                                            r"the 1,000 expected"):
        download_file(remote, tmp_path)
    assert _listing(tmp_path) == []


def test_a_trickling_download_is_given_up_and_its_host_not_tried_again(hostile, tmp_path, monkeypatch):
    monkeypatch.setattr(download_mod, "RATE_WINDOW_S", 0.5)
    monkeypatch.setattr(download_mod, "MIN_RATE", 10_000)  # the server sends about 1,000 bytes/s
    remotes = [RemoteFile(n, (f"{hostile}/trickle",), "md5:" + "0" * 32) for n in ("a.gz", "b.gz")]
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        download_files(remotes, tmp_path)
    assert time.monotonic() - t0 < 5  # not the 10 s the server would take
    assert "trickle: TimeoutError: too slow: " in str(e.value) and "bytes/s over 1 s, less than 10,000" in str(e.value)
    assert "1 more URLs skipped: their hosts had just failed" in str(e.value)
    assert _listing(tmp_path) == []
