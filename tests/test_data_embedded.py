"""The embedded MNIST subset shipped in the package."""

import zipfile

import numpy as np
import pytest

from minidann.data import DataError, load_embedded
from minidann.data.embedded import EMBEDDED_COUNTS, EMBEDDED_SHA256, embedded_path


def test_shapes_dtypes_and_split_sizes():
    train, test = load_embedded()
    assert train.images.shape == (8000, 28, 28) and test.images.shape == (2000, 28, 28)
    assert train.images.dtype == np.uint8 and test.images.dtype == np.uint8
    assert train.labels.shape == (8000,) and test.labels.shape == (2000,)
    assert train.labels.dtype == np.int64 and test.labels.dtype == np.int64


def test_per_digit_counts_and_stratification():
    train, test = load_embedded()
    counts = np.bincount(train.labels, minlength=10) + np.bincount(test.labels, minlength=10)
    assert tuple(counts) == EMBEDDED_COUNTS == (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)
    np.testing.assert_array_equal(np.bincount(train.labels), np.round(0.8 * np.array(EMBEDDED_COUNTS)))
    # Classes are mixed, not sorted by digit.
    assert len(set(train.labels[:50].tolist())) > 5


def test_train_and_test_are_disjoint_real_digits():
    train, test = load_embedded()
    with np.load(embedded_path(), allow_pickle=False) as npz:
        train_index, test_index = npz["train_index"], npz["test_index"]
        images = npz["images"]
    assert len(np.intersect1d(train_index, test_index)) == 0
    assert len(np.union1d(train_index, test_index)) == 10_000
    np.testing.assert_array_equal(train.images, images[train_index])
    # Real MNIST digits: a black border and ink in the middle.
    assert train.images[:, 0, :].max() == 0 and train.images[:, 10:18, 10:18].mean() > 50


def test_file_has_no_pickled_objects_and_is_small():
    with zipfile.ZipFile(embedded_path()) as z:
        assert sorted(z.namelist()) == sorted(
            ["images.npy", "labels.npy", "train_index.npy", "test_index.npy", "provenance.npy"]
        )
    with np.load(embedded_path(), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
        assert "CC BY-SA 3.0" in str(npz["provenance"]) and "MIT" in str(npz["provenance"])
    assert embedded_path().stat().st_size < 3_000_000


def _copy_with(tmp_path, **changes):
    with np.load(embedded_path(), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    path = tmp_path / "copy.npz"
    np.savez(path, **arrays)  # uncompressed: other file bytes than the shipped file
    return path, arrays


def test_sha256_accepts_a_resaved_copy_and_rejects_a_tampered_one(tmp_path):
    path, arrays = _copy_with(tmp_path)
    assert len(load_embedded(path)[0]) == 8000  # same arrays, other container bytes: still valid
    images = arrays["images"].copy()
    images[0, 14, 14] ^= 1
    tampered, _ = _copy_with(tmp_path, images=images)
    with pytest.raises(DataError, match="sha256") as err:
        load_embedded(tampered)
    assert str(tampered) in str(err.value) and EMBEDDED_SHA256 in str(err.value)
    assert len(load_embedded(tampered, verify=False)[0]) == 8000
    swapped, _ = _copy_with(tmp_path, labels=arrays["labels"][::-1].copy())
    with pytest.raises(DataError):
        load_embedded(swapped)


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(DataError, match="missing"):
        load_embedded(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        load_embedded(tmp_path / "bad.npz")
