"""The plots of the MNIST -> MNIST-M example: PCA is exact, and every figure is a valid PNG."""

from pathlib import Path

import numpy as np
import pytest

from minidann.viz import pca_2d, plot_embedding, plot_sample_grid, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("n, d", [(40, 300), (300, 40)])  # both branches: Gram matrix and covariance
def test_pca_2d_matches_the_svd(n, d):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)) * np.linspace(0.1, 3.0, d) + 5.0
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    z = pca_2d(x)
    assert z.shape == (n, 2)
    np.testing.assert_allclose(np.abs(z), np.abs(xc @ vt[:2].T), rtol=1e-8, atol=1e-8)
    assert z[:, 0].var() >= z[:, 1].var()
    np.testing.assert_array_equal(z, pca_2d(x))  # deterministic, signs fixed


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"step": s, "mode": m, "label_loss": 1.0 / s, "domain_loss": 0.69 if m == "dann" else None,
             "domain_acc": 0.5 if m == "dann" else None, "lambda": s / 10, "lr": 0.01 / s,
             "source_acc": 0.9 if s == 10 else None, "target_acc": 0.5 if s == 10 else None}
            for m in ("source", "dann") for s in (5, 10)]
    paths = [
        plot_training_curves(rows, tmp_path / "curves.png"),
        plot_sample_grid(rng.integers(0, 256, (4, 3, 28, 28), dtype=np.uint8),
                         rng.integers(0, 256, (4, 28, 28, 3), dtype=np.uint8), tmp_path / "samples.png"),
        plot_embedding({"source only": (rng.standard_normal((20, 50)), rng.standard_normal((20, 50)) + 3),
                        "DANN": (rng.standard_normal((20, 50)), rng.standard_normal((20, 50)))},
                       tmp_path / "sub" / "embedding.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


@pytest.mark.parametrize("name", ["curves.pdf", "curves", "."])
def test_plots_need_a_png_name(tmp_path, name):
    with pytest.raises(ValueError, match="written as PNG: give a file name ending in .png"):
        plot_training_curves([], tmp_path / name)
    assert not any(tmp_path.iterdir())


def test_an_interrupted_plot_keeps_the_old_png(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = plot_training_curves([], tmp_path / "curves.png")
    good = path.read_bytes()

    def interrupted(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plot_training_curves([], path)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_one_dimensional_features_and_empty_image_sets(tmp_path):
    z = pca_2d(np.arange(5.0)[:, None])
    np.testing.assert_allclose(np.abs(z[:, 0]), np.abs(np.arange(5.0) - 2))
    np.testing.assert_array_equal(z[:, 1], 0)
    assert plot_embedding({"a": (np.ones((5, 1)), np.zeros((5, 1)))}, tmp_path / "e.png").read_bytes()[:8] == PNG_MAGIC
    empty = np.zeros((0, 3, 28, 28), np.uint8)
    with pytest.raises(ValueError, match="needs at least one image per domain"):
        plot_sample_grid(empty, empty, tmp_path / "g.png")
