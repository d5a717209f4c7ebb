"""MNIST IDX files: round trips, every kind of bad file, and checksum verification of the decompressed content."""

import gzip
import hashlib
import struct

import numpy as np
import pytest

from minidann.data import DataError, load_mnist
from minidann.data import mnist as mnist_mod
from minidann.data.mnist import MNIST_FILES, read_idx, write_idx


def _digits(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def _write_set(folder, n_train=12, n_test=5, gz=True):
    """Write the four standard files into `folder`; return the arrays written."""
    suffix = ".gz" if gz else ""
    out = {}
    for (split, (img, lbl)), n in zip(MNIST_FILES.items(), (n_train, n_test), strict=True):
        images, labels = _digits(n, seed=n)
        write_idx(folder / f"{img}{suffix}", images)
        write_idx(folder / f"{lbl}{suffix}", labels)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, gz):
    images, labels = _digits(7)
    suffix = ".gz" if gz else ""
    got_images, raw = read_idx(write_idx(tmp_path / f"x-images{suffix}", images), "images")
    got_labels, _ = read_idx(write_idx(tmp_path / f"x-labels{suffix}", labels), "labels")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    assert raw[:4] == struct.pack(">I", 2051) and len(raw) == 16 + 7 * 784


def test_gzip_detected_by_content_not_name(tmp_path):
    """A gunzipped copy that kept its .gz name, and a gzipped one without it, both read."""
    images, _ = _digits(3)
    plain = write_idx(tmp_path / "a", images).read_bytes()
    (tmp_path / "plain.gz").write_bytes(plain)
    (tmp_path / "zipped").write_bytes(gzip.compress(plain))
    for name in ("plain.gz", "zipped"):
        np.testing.assert_array_equal(read_idx(tmp_path / name, "images")[0], images)


def test_load_mnist_round_trip_unverified(tmp_path, capsys):
    written = _write_set(tmp_path)
    train, test = load_mnist(tmp_path, verify=False)
    np.testing.assert_array_equal(train.images, written["train"][0])
    np.testing.assert_array_equal(test.labels, written["test"][1])
    assert train.labels.dtype == np.int64
    assert "NOT checked" in capsys.readouterr().err


def _header(magic, count, rows=28, cols=28):
    return struct.pack(">IIII", magic, count, rows, cols) if magic == 2051 else struct.pack(">II", magic, count)


@pytest.mark.parametrize(
    "kind, content, problem",
    [
        ("images", _header(2049, 1) + bytes(784), "magic number 2049"),
        ("labels", _header(2051, 1) + bytes(1), "magic number 2051"),
        ("images", _header(2051, 2) + bytes(784), "truncated"),
        ("images", _header(2051, 1) + bytes(785), "trailing"),
        ("labels", _header(2049, 3) + bytes([1, 2]), "truncated"),
        ("labels", _header(2049, 3) + bytes([1, 10, 2]), "label 10"),
        ("images", _header(2051, 1, 32, 32) + bytes(32 * 32), "32x32"),
        ("images", b"\x00\x00", "shorter than"),
        ("images", _header(2051, 0), "0 images: the file holds no data"),
        ("labels", _header(2049, 0), "0 labels"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_files_raise_value_error_naming_the_file(tmp_path, kind, content, problem, gz):
    path = tmp_path / ("bad-file.gz" if gz else "bad-file")
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(ValueError) as err:
        read_idx(path, kind)
    assert isinstance(err.value, DataError)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_truncated_gzip_stream(tmp_path):
    images, _ = _digits(4)
    blob = gzip.compress(_header(2051, 4) + images.tobytes())
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(path, "images")


def test_count_mismatch_between_images_and_labels(tmp_path):
    _write_set(tmp_path)
    img, lbl = MNIST_FILES["test"]
    write_idx(tmp_path / f"{lbl}.gz", np.zeros(4, np.uint8))  # 5 images, 4 labels
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, verify=False)
    assert f"{img}.gz" in str(err.value) and f"{lbl}.gz" in str(err.value) and "5 images" in str(err.value)


def test_missing_files_give_by_hand_instructions(tmp_path):
    with pytest.raises(DataError) as err:
        load_mnist(tmp_path, download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in msg
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in msg


def test_verify_rejects_non_official_content(tmp_path):
    _write_set(tmp_path)
    with pytest.raises(DataError, match="does not match official MNIST") as err:
        load_mnist(tmp_path, verify=True)
    assert "verify=False" in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_verify_checks_the_decompressed_payload(tmp_path, monkeypatch, gz):
    """Pretend the generated files are official: plain and re-compressed copies both pass."""
    _write_set(tmp_path, gz=gz)
    table = {}
    for img, lbl in MNIST_FILES.values():
        for name in (img, lbl):
            path = tmp_path / (f"{name}.gz" if gz else name)
            raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
            table[name] = (hashlib.md5(raw).hexdigest(), len(raw))
    monkeypatch.setattr(mnist_mod, "MNIST_RAW_MD5", table)
    if gz:  # re-compress one file at another level: other bytes, same content
        path = tmp_path / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=123))
    train, test = load_mnist(tmp_path, verify=True)
    assert len(train) == 12 and len(test) == 5
    # One changed pixel must fail.
    images, _ = read_idx(mnist_mod.find_mnist_file(tmp_path, "t10k-images-idx3-ubyte"), "images")
    images[0, 0, 0] ^= 1
    write_idx(tmp_path / ("t10k-images-idx3-ubyte.gz" if gz else "t10k-images-idx3-ubyte"), images)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path, verify=True)


def test_official_gz_route(tmp_path, monkeypatch):
    """A .gz whose own bytes have the official .gz md5 passes even if the raw table disagrees."""
    _write_set(tmp_path)
    table = {f"{n}.gz": hashlib.md5((tmp_path / f"{n}.gz").read_bytes()).hexdigest()
             for pair in MNIST_FILES.values() for n in pair}
    monkeypatch.setattr(mnist_mod, "MNIST_GZ_MD5", table)
    train, _ = load_mnist(tmp_path, verify=True)
    assert len(train) == 12
