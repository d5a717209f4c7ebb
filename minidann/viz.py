"""Plots of the MNIST -> MNIST-M experiment, saved as PNG with matplotlib's object API.

Every function builds its own :class:`matplotlib.figure.Figure` and writes it with the Agg canvas: no pyplot,
so no global figure state, no GUI backend and nothing to close.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .data._common import temp_path
from .io_errors import write_failed

__all__ = ["EMBEDDINGS", "embed_2d", "embed_panels", "pca_2d", "plot_embedding", "plot_embeddings",
           "plot_embeddings_by_class", "plot_sample_grid", "plot_training_curves", "save_png", "tsne_2d"]

#: The 2-D embeddings of features that the plots know: principal components, and t-SNE as in the paper's Fig. 5.
EMBEDDINGS = ("pca", "tsne")

_MODE_COLOURS = {"source": "tab:blue", "dann": "tab:red", "target": "tab:green"}


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (a .png name) whole: to a temporary file first, then renamed over the old one.

    Raises:
        WriteFailed: the file could not be written (disk full, read-only, permission); the message names the cause.
    """
    path = Path(path)
    if path.suffix.lower() != ".png" or path.is_dir():  # matplotlib would pick the format from the suffix
        raise ValueError(f"plots are written as PNG: give a file name ending in .png, got {path}")
    FigureCanvasAgg(fig)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)  # an interrupted or failed write leaves the old PNG (or none), never half of one
        try:
            fig.savefig(tmp, dpi=dpi, format="png")
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    except OSError as e:  # disk full, read-only, permission: the message says which and what to do
        raise write_failed(path, e) from e
    return path


def _series(rows: Sequence[Mapping], mode: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if r["mode"] == mode and r.get(key) not in (None, "")]
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pts, strict=True)
    return np.asarray(steps, float), np.asarray(values, float)


def plot_training_curves(rows: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Six panels over training steps, one line per mode: label loss, domain loss (with the ln 2 line), domain
    accuracy (with the 0.5 line), test accuracies, lambda_p and mu_p.

    A domain loss that settles near ln 2 and a domain accuracy near 0.5 late in DANN training are what success
    looks like: the domain classifier can no longer tell the features apart.

    Args:
        rows: metrics rows as written to metrics.csv (keys of :data:`minidann.train.METRIC_COLUMNS`).
        path: the PNG to write.
    """
    fig = Figure(figsize=(13, 7), layout="constrained")
    axes = fig.subplots(2, 3)
    modes = [m for m in _MODE_COLOURS if any(r["mode"] == m for r in rows)]
    panels = [
        (axes[0, 0], "label_loss", "label loss L_y (batch mean)"),
        (axes[0, 1], "domain_loss", "domain loss L_d"),
        (axes[0, 2], "domain_acc", "domain accuracy (training batches)"),
        (axes[1, 1], "lambda", "adaptation factor lambda_p"),
        (axes[1, 2], "lr", "learning rate mu_p"),
    ]
    for ax, key, title in panels:
        for mode in modes:
            x, y = _series(rows, mode, key)
            if len(x):
                ax.plot(x, y, color=_MODE_COLOURS[mode], label=mode, lw=1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0, 1].axhline(math.log(2), color="k", ls="--", lw=1, label="ln 2 (chance)")
    axes[0, 2].axhline(0.5, color="k", ls="--", lw=1, label="0.5 (chance)")
    axes[0, 2].set_ylim(0, 1.02)
    ax = axes[1, 0]
    for mode in modes:
        for key, style in (("source_acc", "-"), ("target_acc", "--")):
            x, y = _series(rows, mode, key)
            if len(x):
                domain = "MNIST" if key == "source_acc" else "MNIST-M"
                ax.plot(x, y, style, marker="o", ms=3, color=_MODE_COLOURS[mode], label=f"{mode}: {domain} test")
    ax.set_title("test accuracy (logged only, never used to choose)")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1.02)
    for ax in axes.flat:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_sample_grid(source_images: np.ndarray, target_images: np.ndarray, path: str | os.PathLike,
                     n: int = 10) -> Path:
    """Two rows of digits: source (MNIST as the network sees it) above target (MNIST-M).

    Args:
        source_images: (N, 3, 28, 28) or (N, 28, 28) uint8.
        target_images: (N, 3, 28, 28) or (N, 28, 28, 3) uint8.
        n: digits per row.
    """
    def hwc(img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            return np.repeat(img[:, :, None], 3, axis=2)
        return img.transpose(1, 2, 0) if img.shape[0] == 3 else img

    n = min(n, len(source_images), len(target_images))
    if n < 1:
        raise ValueError(f"plot_sample_grid: needs at least one image per domain and n >= 1, got "
                         f"{len(source_images)} and {len(target_images)} images, n = {n}")
    fig = Figure(figsize=(n * 0.9, 2.3), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for row, (images, name) in enumerate(((source_images, "MNIST"), (target_images, "MNIST-M"))):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(hwc(images[i]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(name)
    fig.suptitle("source (MNIST, binarised) and target (MNIST-M)")
    return save_png(fig, path)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project (N, D) points onto their first two principal components: (N, 2) (with D = 1, the second is 0).

    With fewer points than dimensions (1,000 features of 2,352 values), the (N, N) Gram matrix Xc Xc^T is the
    cheap route: its top eigenvectors u_i, scaled by sqrt(eigenvalue_i), are exactly the PCA scores Xc v_i
    (a full SVD of the (N, D) matrix takes seconds here). The sign of each component is fixed (largest |loading|
    positive) so the picture does not flip between runs.
    """
    xc = np.asarray(x, np.float64)
    if xc.ndim != 2 or xc.shape[1] < 1:
        raise ValueError(f"pca_2d: expected (N, D) points with D >= 1, got shape {xc.shape}")
    if xc.shape[1] == 1:  # one dimension: it is the first component, and there is no second
        xc = np.concatenate([xc, np.zeros_like(xc)], axis=1)
    xc = xc - xc.mean(axis=0)
    if xc.shape[0] > xc.shape[1]:  # more points than dimensions: the covariance is the smaller matrix
        w, v = np.linalg.eigh(xc.T @ xc)
        comps = v[:, ::-1][:, :2].T  # (2, D)
    else:
        w, u = np.linalg.eigh(xc @ xc.T)
        u = u[:, ::-1][:, :2]
        comps = (xc.T @ u / np.sqrt(np.maximum(w[::-1][:2], 1e-300))).T  # v_i = Xc^T u_i / s_i
    comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
    return xc @ comps.T


def plot_embedding(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike) -> Path:
    """The paper's Fig. 5 with PCA instead of t-SNE: features of source and target test images in 2-D, one
    panel per model (source-only beside DANN).

    Each panel has its own PCA, fitted to that model's pooled source + target features. Under source-only
    training the two domains sit apart; under DANN they overlap.

    Args:
        panels: title -> (source features (Ns, D), target features (Nt, D)).
        path: the PNG to write.
    """
    fig = Figure(figsize=(5.2 * max(1, len(panels)), 5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels)), squeeze=False)[0])
    for ax, (title, (fs, ft)) in zip(axes, panels.items(), strict=False):
        z = pca_2d(np.concatenate([fs, ft]))
        ax.scatter(*z[:len(fs)].T, s=6, alpha=0.6, color="tab:blue", label="source (MNIST test)")
        ax.scatter(*z[len(fs):].T, s=6, alpha=0.6, color="tab:red", label="target (MNIST-M test)")
        ax.set_title(title)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=8, markerscale=2)
    return save_png(fig, path)


def tsne_2d(x: np.ndarray, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000,
            threads: int | None = 1) -> np.ndarray:
    """t-SNE of (N, D) points to (N, 2), as the paper's Fig. 5 draws features (scikit-learn's ``TSNE``).

    Points of more than 50 dimensions are first projected onto their 50 principal components (the usual
    preliminary step: it keeps the neighbourhoods and cuts the cost of the distances). PCA initialisation and the
    seed make the picture repeatable; the perplexity is lowered to (N - 1) / 3 for small N, where TSNE needs it.

    ``threads`` caps the OpenMP and BLAS threads while it runs (None: scikit-learn's default, every core). One is
    the default because on a busy 2-core machine two threads took six times the CPU time of one (their
    synchronisation waits on cores that other processes hold): 141 s instead of 20 s for 1,000 points.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] < 1 or len(x) < 4:
        raise ValueError(f"tsne_2d: expected (N, D) points with N >= 4 and D >= 1, got shape {x.shape}")
    with threadpool_limits(limits=threads):
        if x.shape[1] > 50 and len(x) > 50:
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        tsne = TSNE(n_components=2, perplexity=min(float(perplexity), (len(x) - 1) / 3), init="pca",
                    learning_rate="auto", max_iter=max_iter, random_state=seed)
        return tsne.fit_transform(x)


def embed_2d(x: np.ndarray, method: str = "pca", seed: int = 0, max_iter: int = 1000) -> np.ndarray:
    """(N, D) points in 2-D, (N, 2), by ``method``: "pca" (:func:`pca_2d`) or "tsne" (:func:`tsne_2d`, which
    takes ``seed`` and ``max_iter``)."""
    if method == "pca":
        return pca_2d(x)
    if method == "tsne":
        return tsne_2d(x, seed=seed, max_iter=max_iter)
    raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {method!r}")


Panels = Mapping[str, tuple[np.ndarray, np.ndarray]]


def embed_panels(panels: Panels, methods: Sequence[str] = ("pca",), seed: int = 0, max_iter: int = 1000
                 ) -> dict[tuple[str, str], np.ndarray]:
    """Every panel's pooled source + target features in 2-D by every method: (title, method) -> (Ns + Nt, 2).

    Compute them once and hand them to :func:`plot_embeddings` and :func:`plot_embeddings_by_class`: t-SNE of
    1,000 features takes seconds.
    """
    for m in methods:
        if m not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {m!r}")
    return {(title, m): embed_2d(np.concatenate([fs, ft]), m, seed, max_iter)
            for title, (fs, ft) in panels.items() for m in methods}


_AXIS_NAMES = {"pca": ("PC 1", "PC 2"), "tsne": ("t-SNE 1", "t-SNE 2")}


def _grid(panels: Panels, methods: Sequence[str]):
    fig = Figure(figsize=(5.2 * max(1, len(panels)), 5 * max(1, len(methods))), layout="constrained")
    axes = fig.subplots(max(1, len(methods)), max(1, len(panels)), squeeze=False)
    return fig, axes


def plot_embeddings(panels: Panels, path: str | os.PathLike, methods: Sequence[str] = ("pca", "tsne"),
                    seed: int = 0, embeddings: Mapping[tuple[str, str], np.ndarray] | None = None) -> Path:
    """The paper's Fig. 5: features of source and target images in 2-D, coloured by domain; one column per model
    (source-only beside DANN), one row per method (PCA above t-SNE).

    Args:
        panels: title -> (source features (Ns, D), target features (Nt, D)).
        path: the PNG to write.
        methods: rows, from :data:`EMBEDDINGS`.
        seed: seeds t-SNE (ignored when ``embeddings`` are given).
        embeddings: from :func:`embed_panels`, to reuse them; computed here when missing.
    """
    emb = dict(embeddings) if embeddings is not None else embed_panels(panels, methods, seed)
    fig, axes = _grid(panels, methods)
    for row, m in enumerate(methods):
        for col, (title, (fs, _)) in enumerate(panels.items()):
            ax, z = axes[row, col], emb[(title, m)]
            ax.scatter(*z[:len(fs)].T, s=6, alpha=0.6, color="tab:blue", label="source (MNIST test)")
            ax.scatter(*z[len(fs):].T, s=6, alpha=0.6, color="tab:red", label="target (MNIST-M test)")
            ax.set_title(f"{title}: {m.upper() if m == 'pca' else 't-SNE'}")
            ax.set_xlabel(_AXIS_NAMES[m][0])
            ax.set_ylabel(_AXIS_NAMES[m][1])
            ax.legend(fontsize=8, markerscale=2)
    return save_png(fig, path)


def plot_embeddings_by_class(panels: Panels, labels: tuple[np.ndarray, np.ndarray], path: str | os.PathLike,
                             methods: Sequence[str] = ("tsne",), seed: int = 0,
                             embeddings: Mapping[tuple[str, str], np.ndarray] | None = None,
                             digits: bool = True) -> Path:
    """The embeddings of :func:`plot_embeddings` coloured by digit class: each point is its digit drawn in its
    class's colour (as tf-dann draws it), source digits in plain type and target digits in bold; with
    ``digits=False``, coloured markers (circles for source, triangles for target).

    Under DANN the ten clusters should hold both domains; under source-only training each class splits in two.

    Args:
        panels: title -> (source features (Ns, D), target features (Nt, D)).
        labels: (source labels (Ns,), target labels (Nt,)), int digit classes 0-9, the same for every panel.
        path, methods, seed, embeddings: as in :func:`plot_embeddings`.
        digits: draw digits (True) or markers (False).
    """
    ys, yt = (np.asarray(v) for v in labels)
    for title, (fs, ft) in panels.items():
        if (len(fs), len(ft)) != (len(ys), len(yt)):
            raise ValueError(f"plot_embeddings_by_class: panel {title!r} has {len(fs)} + {len(ft)} points but "
                             f"there are {len(ys)} + {len(yt)} labels; give one label per point")
    emb = dict(embeddings) if embeddings is not None else embed_panels(panels, methods, seed)
    colours = [f"C{int(k) % 10}" for k in np.concatenate([ys, yt])]
    fig, axes = _grid(panels, methods)
    for row, m in enumerate(methods):
        for col, (title, (fs, _)) in enumerate(panels.items()):
            ax, z = axes[row, col], emb[(title, m)]
            n = len(fs)
            if digits:
                for i, (u, v) in enumerate(z):
                    ax.text(u, v, str(int(ys[i] if i < n else yt[i - n])), color=colours[i], fontsize=7,
                            fontweight="normal" if i < n else "bold", ha="center", va="center")
                ax.update_datalim(z)
                ax.autoscale_view()
            else:
                ax.scatter(*z[:n].T, s=8, marker="o", c=colours[:n], alpha=0.7, label="source (MNIST test)")
                ax.scatter(*z[n:].T, s=10, marker="^", c=colours[n:], alpha=0.7, label="target (MNIST-M test)")
                ax.legend(fontsize=8, markerscale=2)
            ax.set_title(f"{title}: {m.upper() if m == 'pca' else 't-SNE'}, by digit"
                         + (" (plain: source, bold: target)" if digits else ""))
            ax.set_xlabel(_AXIS_NAMES[m][0])
            ax.set_ylabel(_AXIS_NAMES[m][1])
    return save_png(fig, path)
