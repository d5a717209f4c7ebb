"""The identity of a run's data, and how a resume names what changed."""

import io
import json
import re
import shutil
import tarfile

import imageio.v3 as iio
import numpy as np
import pytest

from minidann.data import DigitsPair, Split, load_digits_pair
from minidann.data.backgrounds import BSDS500_FILE, BSDS500_TRAIN_DIR
from minidann.data.identity import data_identity, describe_data_difference


def _pair(n_train=20, n_test=10, source="full", backgrounds="bsds500", seed=0, flip_label=False, photo=0):
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n_train + n_test)
    if flip_label:
        labels[0] = (labels[0] + 1) % 10
    colour = np.random.default_rng(100 + photo).integers(0, 256, (n_train + n_test, 28, 28, 3), dtype=np.uint8)
    return DigitsPair(Split(digits[:n_train], labels[:n_train]), Split(digits[n_train:], labels[n_train:]),
                      Split(colour[:n_train], labels[:n_train]), Split(colour[n_train:], labels[n_train:]),
                      source, backgrounds, "test data", "made up")


def _identity(pair, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("data_dir", "/data/a")
    kw.setdefault("pixel_mean", [0.25, 0.5, 0.75])
    return data_identity(pair, **kw)


def test_identical_data_give_no_difference_and_the_identity_is_json():
    a = _identity(_pair())
    assert json.loads(json.dumps(a)) == a
    assert describe_data_difference(a, _identity(_pair())) is None
    # the same arrays from another folder, or loaded without the checksum check, are the same data
    assert describe_data_difference(a, _identity(_pair(), data_dir="/data/b", verify=False)) is None


@pytest.mark.parametrize("changed, words", [
    (dict(pair=dict(source="embedded", n_train=8)), r"MNIST: full MNIST there, the embedded MNIST subset now; the "
     r"MNIST train and test digits differ \(20 train there, 8 now\); the MNIST-M"),
    (dict(pair=dict(flip_label=True)), r"^the MNIST train digits differ \(same counts, other images or labels\); "
     r"the MNIST-M train images differ \(data folder"),
    (dict(pair=dict(backgrounds="skimage", photo=1)), r"^the MNIST-M train and test images differ \(backgrounds: "
     r"BSDS500 photos there, scikit-image photos now\) \(data folder /data/a there, /data/b now\)$"),
    (dict(pair=dict(photo=1)), r"MNIST-M train and test images differ \(other background photos of the same kind\)"),
    (dict(kw=dict(limit_train=1000)), r"^--limit-train 0 there, 1000 now"),
    (dict(kw=dict(pixel_mean=[0.25, 0.5, 0.7])), r"pixel mean \[0.2500, 0.5000, 0.7500\] there, \[0.2500, 0.5000, "
     r"0.7000\] now"),
])
def test_each_difference_is_named(changed, words):
    saved = _identity(_pair())
    now = _identity(_pair(**changed.get("pair", {})), data_dir="/data/b", **changed.get("kw", {}))
    why = describe_data_difference(saved, now)
    assert why is not None
    assert re.search(words, why), why


def test_entries_an_older_identity_lacks_are_not_compared():
    saved = _identity(_pair())
    del saved["pixel_mean"], saved["mnistm"]
    assert describe_data_difference(saved, _identity(_pair(photo=1), pixel_mean=[0, 0, 0])) is None


def _tarball(path, count=3):
    with tarfile.open(path, "w:gz") as tar:
        for i in range(count):
            data = iio.imwrite("<bytes>", np.random.default_rng(i).integers(0, 256, (200, 300, 3), dtype=np.uint8),
                               extension=".jpg")
            info = tarfile.TarInfo(f"{BSDS500_TRAIN_DIR}{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bsds500_copied_into_the_data_folder_between_start_and_resume_is_named(tmp_path):
    # what `python -m minidann.data download` does to a data folder while a run is interrupted
    root = tmp_path / "data"
    before = load_digits_pair("embedded", root, verify=False, seed=0)
    again = load_digits_pair("embedded", root, verify=False, seed=0)  # from the MNIST-M cache
    saved = data_identity(before, seed=0, data_dir=root)
    assert describe_data_difference(saved, data_identity(again, seed=0, data_dir=root)) is None
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert describe_data_difference(saved, data_identity(load_digits_pair("embedded", moved, verify=False, seed=0),
                                                         seed=0, data_dir=moved)) is None
    _tarball(root / BSDS500_FILE)
    after = load_digits_pair("embedded", root, verify=False, seed=0)
    assert after.backgrounds == "bsds500"
    why = describe_data_difference(saved, data_identity(after, seed=0, data_dir=root))
    assert why == ("the MNIST-M train and test images differ (backgrounds: scikit-image photos there, BSDS500 "
                   "photos now)")
