"""Proxy A-distance (JMLR 2016, section 3.2): how well a linear classifier tells source features from target features.

Recipe (Ben-David et al. 2007, as used by Ganin et al.):

1. Pool the two feature sets, label source rows 0 and target rows 1, shuffle with a seeded generator.
2. Train a linear classifier on one half; measure its error ``eps`` on the other half.
3. ``d_A = 2 (1 - 2 eps)``: 0 when the classifier does no better than chance (the domains look the same to a
   linear probe), 2 when it separates them perfectly.

The classifier. The paper trains linear SVMs over a range of C and keeps the lowest error. minidann has no
scikit-learn, so it uses the closed-form relative of the linear SVM: a ridge (L2-regularised least-squares)
classifier on the labels -1/+1, also known as the least-squares SVM. Features are standardised with the training
half's mean and standard deviation. Each regularisation strength costs one linear solve, so the fit is exact (no
convergence to worry about) and fast: about 2 s for 4,000 x 2,352 features on two CPU cores. The strength is picked
on a validation split of the training half, never on the test half, and the model is then refitted on the whole
training half. The numbers follow the paper's SVM proxy closely but not digit for digit: on raw pixels of 2,000 MNIST
vs 2,000 MNIST-M digits (the scikit-image variant), a hinge-loss linear SVM (dual coordinate descent, C chosen the
same way) gave 1.64 and this classifier 1.59.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Ridge strengths tried, as multiples of the mean eigenvalue of the training Gram matrix (scale-free).
DEFAULT_ALPHAS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class PADResult:
    """Everything :func:`proxy_a_distance_details` measured.

    Attributes:
        distance: d_A clipped to [0, 2] (what :func:`proxy_a_distance` returns).
        raw_distance: 2 (1 - 2 eps) before clipping; below 0 when the classifier did worse than chance.
        test_error: eps, the error on the held-out half.
        alpha: the chosen ridge strength (relative, one of ``alphas``).
        val_errors: validation error of every ridge strength tried.
        n_train: rows in the training half; n_test: rows in the held-out half.
    """

    distance: float
    raw_distance: float
    test_error: float
    alpha: float
    val_errors: dict[float, float]
    n_train: int
    n_test: int


def _ridge_weights(X: np.ndarray, y: np.ndarray, alphas_rel: Sequence[float]) -> np.ndarray:
    """Solve min_w ||X w - y||^2 + alpha ||w||^2 for several alphas.

    Args:
        X: (N, D) standardised features; y: (N,) centred targets.
        alphas_rel: K strengths, in units of the mean eigenvalue of X^T X (trace / min(N, D)): scale-free.
    Returns:
        W: (D, K), one weight vector per strength.
    """
    N, D = X.shape
    # Work with the smaller Gram matrix: primal (X^T X + a I) w = X^T y when D <= N, else the dual
    # w = X^T (X X^T + a I)^-1 y. One linear solve per strength (an LU factorisation of min(N, D)^2 entries) is
    # several times cheaper than one eigendecomposition for the whole path.
    primal = D <= N
    G = X.T @ X if primal else X @ X.T
    rhs = X.T @ y if primal else y
    unit = max(float(np.trace(G)) / len(G), 1e-12)
    diagonal = G.diagonal().copy()
    W = np.empty((D, len(alphas_rel)))
    for k, a in enumerate(alphas_rel):
        # G + a I, written over G's diagonal from the saved one (no second Gram-sized matrix; exact every time)
        np.fill_diagonal(G, diagonal + a * unit)
        sol = np.linalg.solve(G, rhs)
        W[:, k] = sol if primal else X.T @ sol
    return W


def _fit_scores(X_fit: np.ndarray, d_fit: np.ndarray, X_eval: np.ndarray, alphas_rel: Sequence[float]) -> np.ndarray:
    """Fit ridge classifiers on (X_fit, d_fit); return their scores on X_eval, shape (N_eval, K): > 0 means target."""
    # Standardised in float64, in place: one float64 copy of each block and no temporaries of its size (the fit
    # on 2,000 x 2,352 features is where the example's memory peaks).
    Z_fit = X_fit.astype(np.float64)
    mean = Z_fit.mean(axis=0)
    Z_fit -= mean
    std = np.sqrt(np.einsum("nd,nd->d", Z_fit, Z_fit) / len(Z_fit))  # std over rows, without a squared copy
    std[std == 0] = 1.0  # a constant feature (a dead unit, a black border pixel) carries no information
    Z_fit /= std
    y = 2.0 * d_fit - 1.0  # domain labels 0/1 as regression targets -1/+1
    intercept = y.mean()  # the intercept is not penalised: fit it by centring y
    W = _ridge_weights(Z_fit, y - intercept, alphas_rel)
    del Z_fit  # freed before Z_eval is made: the two never coexist
    Z_eval = X_eval.astype(np.float64)
    Z_eval -= mean
    Z_eval /= std
    return Z_eval @ W + intercept


def proxy_a_distance_details(features_source: np.ndarray, features_target: np.ndarray, seed: int = 0, *,
                             alphas: Sequence[float] = DEFAULT_ALPHAS, val_fraction: float = 0.25) -> PADResult:
    """Proxy A-distance with the numbers behind it; see :func:`proxy_a_distance`.

    Args:
        features_source: (N_s, D) host NumPy array, one feature vector per source sample.
        features_target: (N_t, D) host NumPy array, the same D.
        seed: seeds the subsampling, the shuffle and therefore the train/validation/test split.
        alphas: ridge strengths to try (multiples of the mean eigenvalue of the training Gram matrix).
        val_fraction: share of the training half held out to choose the ridge strength.
    Returns:
        A :class:`PADResult`.
    Raises:
        ValueError: on arrays that are not 2-D, with different D, or with fewer than 8 rows per domain.
    """
    # Kept in their own dtype (float32 features) throughout: _fit_scores makes the float64 copies it needs.
    Xs = np.asarray(features_source)
    Xt = np.asarray(features_target)
    if Xs.ndim != 2 or Xt.ndim != 2 or Xs.shape[1] != Xt.shape[1]:
        raise ValueError(f"proxy_a_distance: expected (N_s, D) and (N_t, D) arrays, got {Xs.shape} and {Xt.shape}")
    if min(len(Xs), len(Xt)) < 8:
        raise ValueError(f"proxy_a_distance: need at least 8 rows per domain, got {len(Xs)} and {len(Xt)}")
    if not (np.isfinite(Xs).all() and np.isfinite(Xt).all()):
        raise ValueError("proxy_a_distance: features contain NaN or infinity")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"proxy_a_distance: val_fraction must lie in (0, 1), got {val_fraction}")
    if Xs.shape[1] == 0 or len(alphas) == 0 or not all(a > 0 for a in alphas):
        raise ValueError(f"proxy_a_distance: needs at least one feature and at least one ridge strength > 0, got "
                         f"D = {Xs.shape[1]} and alphas {tuple(alphas)}")
    rng = np.random.default_rng(seed)
    # Equal counts, so that a classifier that guesses has error 0.5 and d_A = 0 means "indistinguishable".
    n = min(len(Xs), len(Xt))
    rows_s = rng.permutation(len(Xs))[:n]
    rows_t = rng.permutation(len(Xt))[:n]
    d = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    order = rng.permutation(2 * n)
    X = np.concatenate([Xs[rows_s], Xt[rows_t]])[order]
    d = d[order]

    half = n  # 2n rows: the first half trains, the second half measures eps
    X_train, d_train, X_test, d_test = X[:half], d[:half], X[half:], d[half:]
    n_val = max(1, int(round(val_fraction * half)))
    scores_val = _fit_scores(X_train[n_val:], d_train[n_val:], X_train[:n_val], alphas)
    y_val = 2.0 * d_train[:n_val] - 1.0
    val_errors = {float(a): float(np.mean((scores_val[:, k] > 0) != d_train[:n_val])) for k, a in enumerate(alphas)}
    val_mse = {float(a): float(np.mean((scores_val[:, k] - y_val) ** 2)) for k, a in enumerate(alphas)}
    # Ties in the error (all 0 when the domains separate easily) go to the strength whose scores fit the -1/+1
    # targets best: a very strong one shrinks every score towards the unpenalised intercept, which then decides
    # the held-out predictions by itself (a clearly separable pair came out at d_A = 1 instead of 2).
    best = min(val_errors, key=lambda a: (val_errors[a], val_mse[a]))
    pred_test = _fit_scores(X_train, d_train, X_test, [best])[:, 0] > 0
    eps = float(np.mean(pred_test != d_test))
    raw = 2.0 * (1.0 - 2.0 * eps)
    return PADResult(distance=min(2.0, max(0.0, raw)), raw_distance=raw, test_error=eps, alpha=best,
                     val_errors=val_errors, n_train=half, n_test=len(d_test))


def proxy_a_distance(features_source: np.ndarray, features_target: np.ndarray, seed: int = 0, *,
                     alphas: Sequence[float] = DEFAULT_ALPHAS, val_fraction: float = 0.25) -> float:
    """Proxy A-distance d_A = 2 (1 - 2 eps) between two feature sets, in [0, 2].

    The larger set is subsampled to the size of the smaller one (seeded), the pooled rows are shuffled and split in
    half; a ridge linear classifier (standardised features, strength chosen on a validation split of the training
    half) is trained on the first half to tell source (0) from target (1), and eps is its error on the second half.

    When eps comes out above 0.5 (the classifier is worse than chance, which happens by noise when the domains are
    indistinguishable), 2 (1 - 2 eps) is slightly negative: this function clips it to 0. The unclipped value is in
    :func:`proxy_a_distance_details` (``raw_distance``).

    Args:
        features_source: (N_s, D) host NumPy array, e.g. flattened pixels or G_f(x) of source samples.
        features_target: (N_t, D) host NumPy array with the same D.
        seed: seeds subsampling and the split; the same seed gives the same value.
        alphas: ridge strengths to try, as multiples of the mean eigenvalue of the training Gram matrix.
        val_fraction: share of the training half used to choose the ridge strength.
    Returns:
        d_A as a Python float: 0 for indistinguishable domains, 2 for linearly separable ones.
    """
    return proxy_a_distance_details(features_source, features_target, seed, alphas=alphas,
                                    val_fraction=val_fraction).distance
