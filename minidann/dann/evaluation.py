"""Evaluation: whole test sets in batches, without recording a graph. Nothing is ever selected on these numbers."""

from __future__ import annotations

import numpy as np

from ..backend import to_device, to_numpy
from ..core import no_grad
from .model import DANN, FEATURE_DIM
from .preprocessing import preprocess


def _batches(images_u8: np.ndarray, mean: np.ndarray, device: str, batch_size: int):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:  # range() would yield nothing: np.empty
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")  # results never filled
    for i in range(0, len(images_u8), batch_size):
        yield i, to_device(preprocess(images_u8[i:i + batch_size], mean), device)


def extract_features(model: DANN, images_u8: np.ndarray, mean: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """f = G_f(x) for every image, on the host: (N, 3, 28, 28) uint8 -> (N, 2352) float32.

    For the embedding plot and the proxy A-distance.
    """
    out = np.empty((len(images_u8), FEATURE_DIM), np.float32)
    with no_grad():
        for i, x in _batches(images_u8, mean, model.device, batch_size):
            out[i:i + len(x)] = to_numpy(model.features(x).data)
    return out


def predict(model: DANN, images_u8: np.ndarray, mean: np.ndarray, batch_size: int = 128
            ) -> tuple[np.ndarray, np.ndarray]:
    """Digit and domain predictions for every image, from one pass of G_f.

    Args:
        images_u8: (N, 3, 28, 28) uint8 (from :func:`prepare_mnist` or :func:`prepare_mnistm`).
        mean: (3,) pixel mean used in training.
        batch_size: images per forward pass (bounds the memory of im2col).

    Returns:
        (digits, domains): two (N,) int64 host arrays; domain 0 is the source, 1 the target.
    """
    digits = np.empty(len(images_u8), np.int64)
    domains = np.empty(len(images_u8), np.int64)
    with no_grad():
        for i, x in _batches(images_u8, mean, model.device, batch_size):
            f = model.features(x)
            # one small copy per batch: evaluation is not on the training path
            digits[i:i + len(x)] = to_numpy(model.label_predictor(f).data.argmax(axis=1))
            domains[i:i + len(x)] = to_numpy(model.domain_classifier(f).data.argmax(axis=1))
    return digits, domains


def _check_eval_labels(images_u8: np.ndarray, labels: np.ndarray, which: str) -> None:
    """(N,) labels for N > 0 images: (N, 1) labels would broadcast against the predictions without a word."""
    labels = np.asarray(labels)
    if len(images_u8) == 0 or labels.shape != (len(images_u8),):
        raise ValueError(f"evaluation needs {which}labels of shape (N,) for N > 0 images: got {len(images_u8)} "
                         f"images and labels of shape {labels.shape}")


def evaluate(model: DANN, source_images: np.ndarray, source_labels: np.ndarray, target_images: np.ndarray,
             target_labels: np.ndarray, mean: np.ndarray, batch_size: int = 128) -> dict[str, float]:
    """Accuracies on the source and target test sets, and the domain classifier's accuracy on both pooled.

    Args:
        source_images, target_images: (Ns, 3, 28, 28) and (Nt, 3, 28, 28) uint8.
        source_labels, target_labels: (Ns,) and (Nt,) int digit labels.
        mean: (3,) pixel mean used in training.

    Returns:
        {"source_acc", "target_acc", "domain_acc"}. A domain accuracy near 0.5 means G_d can no longer tell the
        domains apart; it is meaningful only for a model trained in ``dann`` mode.
    """
    _check_eval_labels(source_images, source_labels, "source ")
    _check_eval_labels(target_images, target_labels, "target ")
    digits_s, domains_s = predict(model, source_images, mean, batch_size)
    digits_t, domains_t = predict(model, target_images, mean, batch_size)
    return {
        "source_acc": float(np.mean(digits_s == source_labels)),
        "target_acc": float(np.mean(digits_t == target_labels)),
        "domain_acc": float((np.sum(domains_s == 0) + np.sum(domains_t == 1)) / (len(domains_s) + len(domains_t))),
    }
