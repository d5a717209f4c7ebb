"""Proxy A-distance (JMLR 2016, section 3.2): how well a linear classifier tells source features from target features.

Recipe (Ben-David et al. 2007, as Ganin et al. use it):

1. Pool the two feature sets, label source rows 0 and target rows 1, shuffle with a seeded generator.
2. Train linear SVMs (scikit-learn's ``LinearSVC``), one per value of C, on one half; measure each one's error on
   the other half and keep the lowest, ``eps``.
3. ``d_A = 2 (1 - 2 eps)``: 0 when no SVM does better than chance (the domains look the same to a linear probe),
   2 when one separates them perfectly.

Taking the lowest held-out error over the grid is the paper's recipe: C is chosen on the half that measures eps, so
d_A is a slightly optimistic (high) estimate of how separable the domains are, the same bias for every feature set
compared. Features are standardised with the training half's mean and standard deviation, so that one grid of C
fits raw pixels and network features alike. The SVMs are solved in the primal (liblinear's Newton method, squared
hinge loss), which converges in seconds on 2,000 x 2,352 features where the dual needs many thousands of passes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Values of C tried (on standardised features). C = 0.1 took over 15 s of CPU time to fit 2,000 x 2,352 noisy
#: features (its Newton method needs hundreds of iterations) and never had the lowest error on the example's.
DEFAULT_CS: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)


@dataclass(frozen=True)
class PADResult:
    """Everything :func:`proxy_a_distance_details` measured.

    Attributes:
        distance: d_A clipped to [0, 2] (what :func:`proxy_a_distance` returns).
        raw_distance: 2 (1 - 2 eps) before clipping; below 0 when the best SVM did worse than chance.
        test_error: eps, the lowest error on the held-out half.
        C: the value of C whose SVM had that error (the smallest such C on a tie).
        errors: held-out error of the SVM of every C tried.
        n_train: rows in the training half; n_test: rows in the held-out half.
    """

    distance: float
    raw_distance: float
    test_error: float
    C: float
    errors: dict[float, float]
    n_train: int
    n_test: int

    @property
    def alpha(self) -> float:
        """The chosen regularisation, the same as :attr:`C`."""
        return self.C


def _standardised(X_fit: np.ndarray, X_eval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both blocks in float64, centred and scaled by the fitting block's mean and standard deviation."""
    Z_fit = X_fit.astype(np.float64)  # a copy: the caller's features stay untouched
    mean = Z_fit.mean(axis=0)
    Z_fit -= mean
    std = np.sqrt(np.einsum("nd,nd->d", Z_fit, Z_fit) / len(Z_fit))  # std over rows, without a squared copy
    std[std == 0] = 1.0  # a constant feature (a dead unit, a black border pixel) carries no information
    Z_fit /= std
    Z_eval = X_eval.astype(np.float64)
    Z_eval -= mean
    Z_eval /= std
    return Z_fit, Z_eval


def _svm_errors(Z_fit: np.ndarray, d_fit: np.ndarray, Z_eval: np.ndarray, d_eval: np.ndarray,
                Cs: Sequence[float], seed: int) -> dict[float, float]:
    """Held-out error of one linear SVM per C, trained on (Z_fit, d_fit)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    errors = {}
    for C in Cs:
        if len(np.unique(d_fit)) < 2:  # one class in the training half (tiny sets): it predicts that class
            pred = np.full(len(d_eval), d_fit[0])
        else:
            with warnings.catch_warnings():
                # an SVM stopped at max_iter is still a linear classifier; its error counts like any other
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf = LinearSVC(C=float(C), dual=False, max_iter=1000, random_state=seed).fit(Z_fit, d_fit)
            pred = clf.predict(Z_eval)
        errors[float(C)] = float(np.mean(pred != d_eval))
    return errors


def proxy_a_distance_details(features_source: np.ndarray, features_target: np.ndarray, seed: int = 0, *,
                             Cs: Sequence[float] = DEFAULT_CS) -> PADResult:
    """Proxy A-distance with the numbers behind it; see :func:`proxy_a_distance`.

    Args:
        features_source: (N_s, D) host NumPy array, one feature vector per source sample.
        features_target: (N_t, D) host NumPy array, the same D.
        seed: seeds the subsampling, the shuffle and therefore the split into halves.
        Cs: values of C to try, each > 0 (on standardised features).
    Returns:
        A :class:`PADResult`.
    Raises:
        ValueError: on arrays that are not 2-D, with different D, with no feature, with fewer than 8 rows per
            domain, holding NaN or infinity, or on an empty grid of C or a C <= 0.
    """
    Xs = np.asarray(features_source)
    Xt = np.asarray(features_target)
    if Xs.ndim != 2 or Xt.ndim != 2 or Xs.shape[1] != Xt.shape[1]:
        raise ValueError(f"proxy_a_distance: expected (N_s, D) and (N_t, D) arrays, got {Xs.shape} and {Xt.shape}")
    if min(len(Xs), len(Xt)) < 8:
        raise ValueError(f"proxy_a_distance: need at least 8 rows per domain, got {len(Xs)} and {len(Xt)}")
    if not (np.isfinite(Xs).all() and np.isfinite(Xt).all()):
        raise ValueError("proxy_a_distance: features contain NaN or infinity")
    Cs = tuple(Cs)
    if Xs.shape[1] == 0 or len(Cs) == 0 or not all(C > 0 for C in Cs):
        raise ValueError(f"proxy_a_distance: needs at least one feature and at least one value of C > 0, got "
                         f"D = {Xs.shape[1]} and Cs {Cs}")
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
    Z_train, Z_test = _standardised(X[:half], X[half:])
    del X
    errors = _svm_errors(Z_train, d[:half], Z_test, d[half:], Cs, seed)
    best = min(errors, key=lambda C: (errors[C], C))
    eps = errors[best]
    raw = 2.0 * (1.0 - 2.0 * eps)
    return PADResult(distance=min(2.0, max(0.0, raw)), raw_distance=raw, test_error=eps, C=best, errors=errors,
                     n_train=half, n_test=len(d) - half)


def proxy_a_distance(features_source: np.ndarray, features_target: np.ndarray, seed: int = 0, *,
                     Cs: Sequence[float] = DEFAULT_CS) -> float:
    """Proxy A-distance d_A = 2 (1 - 2 eps) between two feature sets, in [0, 2].

    The larger set is subsampled to the size of the smaller one (seeded), the pooled rows are shuffled and split in
    half; a linear SVM per value of C (standardised features) is trained on the first half to tell source (0) from
    target (1), and eps is the lowest of their errors on the second half.

    When eps comes out above 0.5 (every SVM is worse than chance, which happens by noise when the domains are
    indistinguishable), 2 (1 - 2 eps) is slightly negative: this function clips it to 0. The unclipped value is in
    :func:`proxy_a_distance_details` (``raw_distance``).

    Args:
        features_source: (N_s, D) host NumPy array, e.g. flattened pixels or G_f(x) of source samples.
        features_target: (N_t, D) host NumPy array with the same D.
        seed: seeds subsampling and the split; the same seed gives the same value.
        Cs: values of C to try, each > 0.
    Returns:
        d_A as a Python float: 0 for indistinguishable domains, 2 for linearly separable ones.
    """
    return proxy_a_distance_details(features_source, features_target, seed, Cs=Cs).distance
