"""The DANN model of the MNIST -> MNIST-M experiment, its preprocessing, schedules and one training step.

The network (JMLR Fig. 4a; tf-dann) shares one feature vector f = G_f(x) between two heads::

    x (N, 3, 28, 28) -> G_f: conv 5x5 3->32 pad 2, ReLU, max-pool 2x2, conv 5x5 32->48 pad 2, ReLU, max-pool 2x2,
                             flatten                                             -> f (N, 2352 = 48 * 7 * 7)
                             (built as conv, max-pool, ReLU: the same function and gradients, see DANN)
    f[:n_src]        -> G_y: fc 100, ReLU, fc 100, ReLU, fc 10                  -> label logits  (n_src, 10)
    f                -> G_d: GRL(lambd), fc 100, ReLU, fc 2                      -> domain logits (N, 2)

One descent step on L_y + L_d then gives exactly the paper's three updates: the GRL multiplies the gradient of
L_d that reaches G_f by -lambd, while G_d itself descends L_d with weight 1 (JMLR eq. 13-15 and footnote 6).

Everything here is device-agnostic: the model lives where ``model.to(...)`` put it, batches arrive already on
that device, and :func:`train_step` never waits for the GPU (its statistics stay device arrays).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import functions as F
from . import parallel
from .backend import get_array_module, to_device, to_numpy
from .core import Tensor, no_grad
from .layers import Conv2d, Flatten, GradientReversal, Linear, MaxPool2d, Module, ReLU, Sequential
from .optim import SGD

__all__ = [
    "DANN", "FEATURE_DIM", "MODES", "StepStats", "build_model", "build_optimizer", "domain_labels", "evaluate",
    "evaluate_accuracy", "extract_features", "lambda_schedule", "lr_schedule", "pixel_mean", "predict",
    "preprocess", "prepare_mnist", "prepare_mnistm", "train_step",
]

#: Training modes: source only (lower bound), DANN, and train on labelled target (upper bound).
MODES = ("source", "dann", "target")

#: Length of f = G_f(x) for a 28x28 input: 48 maps of 7x7 (SAME padding keeps 28 -> 28 -> 14 -> 14 -> 7).
FEATURE_DIM = 48 * 7 * 7

#: tf-dann's initialisation: weights from a normal with std 0.1 truncated at 2 std, every bias 0.1.
INIT_STD = 0.1
INIT_BIAS = 0.1


# --------------------------------------------------------------------------------------------------------------
# The model


class DANN(Module):
    """G_f, G_y and G_d of the MNIST -> MNIST-M network, initialised as tf-dann does.

    Weights are truncated-normal with std 0.1 and biases 0.1 (tf-dann's ``weight_variable`` and
    ``bias_variable``), drawn on the host from ``rng`` in a fixed order (conv1, conv2, G_y, G_d), so the same
    seed gives the same model on the CPU and on the GPU.

    The paper's blocks are conv, ReLU, max-pool; here the ReLU comes after the pool. That is the same function
    with the same gradients, at a quarter of the ReLU's work: ReLU never lowers an order (a <= b gives
    relu(a) <= relu(b)), so max(relu(a), relu(b), ...) = relu(max(a, b, ...)). Backward agrees too: where a
    window's maximum is positive both orders route the gradient to the same first winner; where it is <= 0 the
    ReLU's zero slope stops it in both. (``tests/test_dann.py`` checks both orders bit for bit.)

    Args:
        rng: the run's host generator.

    Attributes:
        feature_extractor: G_f, x (N, 3, 28, 28) -> f (N, 2352).
        label_predictor: G_y, f (N, 2352) -> label logits (N, 10).
        domain_classifier: G_d, GRL then f (N, 2352) -> domain logits (N, 2); domain 0 is the source.
    """

    def __init__(self, rng: np.random.Generator):
        super().__init__()
        init = {"rng": rng, "weight_std": INIT_STD, "bias_init": INIT_BIAS}
        self.feature_extractor = Sequential(
            Conv2d(3, 32, 5, stride=1, pad=2, **init), MaxPool2d(2, 2), ReLU(),   # (N, 32, 14, 14)
            Conv2d(32, 48, 5, stride=1, pad=2, **init), MaxPool2d(2, 2), ReLU(),  # (N, 48, 7, 7)
            Flatten(),                                                            # (N, 2352)
        )
        self.label_predictor = Sequential(
            Linear(FEATURE_DIM, 100, **init), ReLU(), Linear(100, 100, **init), ReLU(), Linear(100, 10, **init),
        )
        # The GRL is the first layer of G_d: it sits between the shared features and the domain classifier,
        # so only the gradient flowing from L_d into G_f is reversed and scaled.
        self.domain_classifier = Sequential(
            GradientReversal(0.0), Linear(FEATURE_DIM, 100, **init), ReLU(), Linear(100, 2, **init),
        )

    @property
    def grl(self) -> GradientReversal:
        """The gradient reversal layer; set ``model.grl.lambd`` to lambda_p before each DANN step."""
        return self.domain_classifier[0]

    def features(self, x) -> Tensor:
        """f = G_f(x): x (N, 3, 28, 28) float32 -> (N, 2352)."""
        return self.feature_extractor(x if isinstance(x, Tensor) else Tensor(x))

    def forward(self, x) -> Tensor:
        """Label logits G_y(G_f(x)): x (N, 3, 28, 28) -> (N, 10)."""
        return self.label_predictor(self.features(x))


def build_model(rng: np.random.Generator, device: str = "cpu") -> DANN:
    """A fresh :class:`DANN` drawn from ``rng`` on the host, then moved to ``device`` ('cpu' or 'gpu')."""
    return DANN(rng).to(device)


def build_optimizer(model: Module, lr: float = 0.01, momentum: float = 0.9) -> SGD:
    """SGD with momentum 0.9 over every parameter (tf-dann's MomentumOptimizer; no weight decay)."""
    return SGD(model.parameters(), lr=lr, momentum=momentum)


# --------------------------------------------------------------------------------------------------------------
# Schedules (JMLR p. 21-22). p = (step - 1) / num_steps, steps counted from 1, is the progress of training, from 0
# at the first step to (num_steps - 1) / num_steps at the last (as tf-dann): not an iteration count, so the
# schedules have the same shape whatever the number of steps.


def lambda_schedule(p: float, gamma: float = 10.0) -> float:
    """Adaptation factor lambda_p = 2 / (1 + exp(-gamma p)) - 1.

    It rises from 0 at p = 0 (the domain classifier is noise at the start, so its gradient is kept out of G_f)
    towards 1 (0.99991 at p = 1 with gamma = 10).

    Args:
        p: training progress in [0, 1].
        gamma: steepness (10 in the paper).
    """
    _check_progress(p)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def lr_schedule(p: float, mu0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Learning rate mu_p = mu0 / (1 + alpha p)^beta (0.01 at p = 0, 0.01 / 11^0.75 = 0.00166 at p = 1).

    Args:
        p: training progress in [0, 1].
        mu0, alpha, beta: 0.01, 10 and 0.75 in the paper.
    """
    _check_progress(p)
    return mu0 / (1.0 + alpha * p) ** beta


def _check_progress(p: float) -> None:
    if not 0.0 <= p <= 1.0:  # (NaN fails too) outside [0, 1] the formulas give complex numbers or overflow
        raise ValueError(f"training progress p must lie in [0, 1] (p = (step - 1) / num_steps), got {p}")


# --------------------------------------------------------------------------------------------------------------
# Preprocessing (tf-dann): binarise MNIST and repeat it to 3 channels; subtract the per-channel pixel mean of
# MNIST-train + MNIST-M-train; divide by 255. Images are kept on the host as uint8 (N, 3, 28, 28) and turned
# into float32 one batch at a time, so even full MNIST needs only 2 x 141 MB of host memory.


def prepare_mnist(images: np.ndarray) -> np.ndarray:
    """Binarised MNIST repeated to 3 channels, as tf-dann feeds it: (N, 28, 28) uint8 -> (N, 3, 28, 28) uint8.

    Every pixel > 0 becomes 255, so the digit strokes look like the {0, 255} masks MNIST-M was blended with.
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28):  # (any dtype: binarised to uint8 0/255 below)
        raise ValueError(f"MNIST images must have shape (N, 28, 28), got {images.shape}")
    binary = np.where(images > 0, np.uint8(255), np.uint8(0))
    return np.ascontiguousarray(np.broadcast_to(binary[:, None], (len(images), 3, 28, 28)))


def prepare_mnistm(images: np.ndarray) -> np.ndarray:
    """MNIST-M from NHWC to NCHW: (N, 28, 28, 3) uint8 -> (N, 3, 28, 28) uint8."""
    if images.ndim != 4 or images.shape[1:] != (28, 28, 3) or images.dtype != np.uint8:
        raise ValueError(f"MNIST-M images must be uint8 of shape (N, 28, 28, 3), got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def pixel_mean(*image_sets: np.ndarray) -> np.ndarray:
    """Per-channel mean of the pooled (N, 3, 28, 28) uint8 sets: (3,) float32, in pixel units (0-255).

    tf-dann pools MNIST-train and MNIST-M-train (one mean for both domains; per-domain normalisation would
    hand the network a shortcut around the domain shift).
    """
    for s in image_sets:
        _check_pixels(s, "pixel_mean")
    total = sum(s.sum(axis=(0, 2, 3), dtype=np.float64) for s in image_sets)
    count = sum(s.shape[0] * s.shape[2] * s.shape[3] for s in image_sets)
    return (total / count).astype(np.float32)


def preprocess(images_u8: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(x - mean) / 255 in float32: (N, 3, 28, 28) uint8 -> (N, 3, 28, 28) float32, on the host."""
    _check_pixels(images_u8, "preprocess")
    x = images_u8.astype(np.float32)
    x -= mean.reshape(1, 3, 1, 1)
    x /= np.float32(255.0)
    return x


def _check_pixels(images: np.ndarray, where: str) -> None:
    """uint8 (N, 3, H, W): float images here would be preprocessed a second time without a word."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{where}: images must be uint8 pixels of shape (N, 3, H, W) (from prepare_mnist or "
                         f"prepare_mnistm, not preprocessed already), got {images.dtype} {images.shape}")


def domain_labels(n_src: int, n_tgt: int) -> np.ndarray:
    """Host int64 labels (n_src + n_tgt,): 0 for the source rows, which come first, then 1 for the target rows."""
    if n_src < 0 or n_tgt < 0:
        raise ValueError(f"domain_labels: row counts must be >= 0, got {n_src} and {n_tgt}")
    return np.concatenate([np.zeros(n_src, np.int64), np.ones(n_tgt, np.int64)])


# --------------------------------------------------------------------------------------------------------------
# One training step


@dataclass
class StepStats:
    """What one :func:`train_step` measured, as 0-d arrays on the model's device (reading them syncs a GPU).

    Attributes:
        label_loss: L_y, mean cross-entropy of G_y on the labelled rows.
        domain_loss: L_d, mean cross-entropy of G_d on all rows (``dann`` mode; None otherwise).
        domain_acc: fraction of rows whose domain G_d got right (``dann`` mode; None otherwise).
    """

    label_loss: object
    domain_loss: object | None = None
    domain_acc: object | None = None

    def to_host(self) -> dict[str, float | None]:
        """The statistics as Python floats (None where absent). On a GPU this waits for the step to finish."""
        return {k: None if v is None else float(to_numpy(v)) for k, v in
                (("label_loss", self.label_loss), ("domain_loss", self.domain_loss), ("domain_acc", self.domain_acc))}


def train_step(model: DANN, optimizer: SGD, x, y_src: np.ndarray, mode: str, lambd: float, lr: float,
               threads: int = 1) -> StepStats:
    """One SGD step of ``mode`` on one batch; the unit that ``python -m minidann.bench`` times.

    ``source`` and ``target`` minimise L_y over the whole batch. ``dann`` minimises L_y over the first
    ``len(y_src)`` rows plus L_d over all rows, through the GRL with coefficient ``lambd``: a single descent step
    on L_y + L_d that moves G_f by -(dL_y/dtheta_f - lambd dL_d/dtheta_f), G_y by -dL_y and G_d by -dL_d.

    No host-device synchronisation happens here: the losses come back as device arrays (see
    :class:`StepStats`), and the labels are host arrays that the loss checks on the host and copies.

    Args:
        model: the :class:`DANN` network, on the same device as ``x``.
        optimizer: SGD over ``model.parameters()``; its ``lr`` is set to ``lr`` before the update.
        x: (N, 3, 28, 28) float32 preprocessed batch on the model's device (array or Tensor). In ``dann`` mode
            the source rows come first, then the target rows.
        y_src: (n_src,) host int labels of the first n_src rows (n_src = N except in ``dann`` mode).
        mode: "source", "dann" or "target".
        lambd: lambda_p for the GRL (used in ``dann`` mode only).
        lr: mu_p for this step.
        threads: 1, or 2 on the CPU. On the CPU the step runs as two halves of the batch (each with half of the
            source rows and half of the target rows) whose gradients are averaged (:mod:`minidann.parallel`): the
            whole batch's gradient up to float rounding. ``threads=2`` runs the halves at once on two cores,
            ``threads=1`` one after the other, with the same result bit for bit. (A batch whose source or target
            rows are odd in number runs whole; ``threads=2`` refuses it.)

    Returns:
        StepStats with device 0-d arrays.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    x = x if isinstance(x, Tensor) else Tensor(x)
    N, n_src = x.shape[0], len(y_src)
    if mode == "dann" and not 0 < n_src < N:
        raise ValueError(f"dann mode needs source rows then target rows: got {n_src} labels for a batch of {N}")
    if mode != "dann" and n_src != N:
        raise ValueError(f"{mode} mode trains on every row: got {n_src} labels for a batch of {N}")

    dtype = next(model.named_parameters())[1].dtype  # (the first parameter: no walk over all of them per step)
    if x.dtype != dtype:  # caught here, not after a whole forward and backward pass in the optimizer
        raise TypeError(f"train_step: x is {x.dtype} but the model's parameters are {dtype}: give the batch in "
                        f"{dtype} (minidann.dann.preprocess returns float32 images; or x.astype(np.float32))")
    if not (math.isfinite(lr) and lr >= 0):  # a negative lr would ascend the loss, a NaN one ruin every weight
        raise ValueError(f"train_step: lr must be a finite number >= 0, got {lr}")
    if mode == "dann" and not math.isfinite(lambd):
        raise ValueError(f"train_step: lambd must be a finite number, got {lambd}")
    if threads not in (1, 2):
        raise ValueError(f"threads must be 1 or 2, got {threads!r}")
    on_cpu = get_array_module(x.data) is np
    if threads == 2 and not on_cpu:
        raise ValueError("threads=2 runs two halves of the batch on two CPU cores; on a GPU use threads=1")
    # On the CPU the step is two halves whose gradients are averaged (minidann.parallel), run one after the other
    # (threads=1) or at once (threads=2): the same arithmetic, so the thread count changes the speed, never the
    # result. A GPU, or a batch whose source and target rows do not both split in two, takes the whole batch.
    halves = _split_in_halves(x, y_src, mode) if on_cpu else None
    if threads == 2 and halves is None:
        n_tgt = N - n_src if mode == "dann" else 0
        raise ValueError(f"threads=2 splits the batch into two equal halves: it needs an even number of source "
                         f"rows and of target rows, got {n_src} and {n_tgt}; use a batch size divisible by 4 in "
                         f"dann mode (by 2 otherwise), or threads=1")
    optimizer.zero_grad()
    if mode == "dann":
        model.grl.lambd = float(lambd)  # (with halves each replica's GRL is set too, in _forward_backward)
    if halves is None:
        stats = _forward_backward(model, x, y_src, mode, lambd)
    else:
        half_a, half_b = halves
        a, b = parallel.mean_of_halves(model, _forward_backward, (*half_a, mode, lambd), (*half_b, mode, lambd),
                                       threads=threads)
        # the whole batch's statistics: each half's are means over the same shares of source and target rows
        stats = StepStats(*(None if va is None else (va + vb) * 0.5
                            for va, vb in ((a.label_loss, b.label_loss), (a.domain_loss, b.domain_loss),
                                           (a.domain_acc, b.domain_acc))))
    optimizer.lr = float(lr)
    optimizer.step()
    return stats


def _forward_backward(model: DANN, x: Tensor, y_src: np.ndarray, mode: str, lambd: float) -> StepStats:
    """The losses of :func:`train_step` on one batch, and their gradients added to the parameters' ``.grad``."""
    N, n_src = x.shape[0], len(y_src)
    f = model.features(x)  # (N, 2352), feeds both heads: backward adds the two gradients
    domain_loss = domain_acc = None
    if mode == "dann":
        label_loss = F.softmax_cross_entropy(model.label_predictor(f[:n_src]), y_src)  # source rows only
        model.grl.lambd = float(lambd)
        d_logits = model.domain_classifier(f)  # (N, 2), through the GRL
        domain_loss = F.softmax_cross_entropy(d_logits, domain_labels(n_src, N - n_src))
        loss = label_loss + domain_loss
        # Domain accuracy from the logits already computed, on the device (no labels to copy): source rows
        # should predict 0, target rows 1.
        xp = get_array_module(d_logits.data)
        pred = d_logits.data.argmax(axis=1)
        correct = (pred[:n_src] == 0).sum() + (pred[n_src:] == 1).sum()
        domain_acc = xp.asarray(correct, dtype=xp.float32) * xp.float32(1.0 / N)
    else:
        loss = label_loss = F.softmax_cross_entropy(model.label_predictor(f), y_src)
    loss.backward()
    return StepStats(label_loss.data, None if domain_loss is None else domain_loss.data, domain_acc)


def halves_evenly(batch_size: int, mode: str) -> bool:
    """Whether the training loop's batches of ``batch_size`` in ``mode`` split into the two halves of train_step.

    That needs an even number of source rows and of target rows; the loop's ``dann`` batches are batch_size // 2
    source rows and the rest target rows, the other modes' all one kind.
    """
    n_src = batch_size // 2 if mode == "dann" else batch_size
    return n_src % 2 == 0 and (batch_size - n_src) % 2 == 0


def _split_in_halves(x: Tensor, y_src: np.ndarray, mode: str) -> tuple[tuple, tuple] | None:
    """Two halves of the batch, ((x_a, y_a), (x_b, y_b)), each with half of the source and half of the target rows.

    Each half's mean losses then weigh its rows as the whole batch's do, so (g_a + g_b) / 2 is the whole batch's
    gradient. None when the source rows or the target rows are odd in number (the halves would weigh them unevenly).
    """
    N, n_src = x.shape[0], len(y_src)
    n_tgt = N - n_src if mode == "dann" else 0
    if n_src % 2 or n_tgt % 2:
        return None
    hs, ht = n_src // 2, n_tgt // 2
    rows_a = np.r_[0:hs, n_src:n_src + ht]
    rows_b = np.r_[hs:n_src, n_src + ht:N]
    return (Tensor(x.data[rows_a]), y_src[:hs]), (Tensor(x.data[rows_b]), y_src[hs:])


# --------------------------------------------------------------------------------------------------------------
# Evaluation: whole test sets in batches, without recording a graph. Nothing is ever selected on these numbers.


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


def evaluate_accuracy(model: DANN, images_u8: np.ndarray, labels: np.ndarray, mean: np.ndarray,
                      batch_size: int = 128) -> float:
    """Digit accuracy of G_y(G_f(x)) on a whole set: images (N, 3, 28, 28) uint8, labels (N,) int."""
    _check_eval_labels(images_u8, labels, "")
    return float(np.mean(predict(model, images_u8, mean, batch_size)[0] == labels))


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
