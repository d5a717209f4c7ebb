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


def _clouds(n=40, d=80, shift=6.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, d)) + shift


def test_tsne_keeps_two_clouds_apart_and_repeats_itself():
    import warnings

    from minidann.viz import tsne_2d

    a, b = _clouds()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a renamed TSNE parameter (n_iter -> max_iter) warns before it breaks
        z = tsne_2d(np.concatenate([a, b]), max_iter=500)
    assert z.shape == (80, 2)
    # every point's nearest neighbour in the picture comes from its own cloud
    dist = np.linalg.norm(z[:, None] - z[None], axis=2) + np.diag(np.full(80, np.inf))
    side = np.arange(80) >= 40
    assert (side[dist.argmin(axis=1)] == side).all()
    np.testing.assert_array_equal(z, tsne_2d(np.concatenate([a, b]), max_iter=500))  # seeded


def test_embed_2d_and_its_choices():
    from minidann.viz import EMBEDDINGS, embed_2d, embed_panels

    a, b = _clouds(n=10, d=5)
    np.testing.assert_array_equal(embed_2d(a, "pca"), pca_2d(a))
    assert EMBEDDINGS == ("pca", "tsne")
    with pytest.raises(ValueError, match="embedding must be one of"):
        embed_2d(a, "umap")
    with pytest.raises(ValueError, match="embedding must be one of"):
        embed_panels({"m": (a, b)}, ["pca", "lle"])
    with pytest.raises(ValueError, match="N >= 4"):
        embed_2d(a[:3], "tsne")


def test_the_t_sne_figures_write_pngs(tmp_path):
    from minidann.viz import embed_panels, plot_embeddings, plot_embeddings_by_class

    panels = {"source only": _clouds(n=30, d=60), "DANN": _clouds(n=30, d=60, shift=0.0)}
    emb = embed_panels(panels, ("pca",))
    assert sorted(emb) == [("DANN", "pca"), ("source only", "pca")] and all(z.shape == (60, 2) for z in emb.values())
    emb.update({(t, "tsne"): z[:, ::-1] for (t, _), z in list(emb.items())})  # stands in for t-SNE: drawing only
    labels = (np.arange(30) % 10, np.arange(30) % 10)
    paths = [plot_embeddings(panels, tmp_path / "e.png", ("pca", "tsne"), embeddings=emb),
             plot_embeddings_by_class(panels, labels, tmp_path / "c.png", ("pca", "tsne"), embeddings=emb),
             plot_embeddings_by_class(panels, labels, tmp_path / "m.png", ("pca",), digits=False)]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000
    with pytest.raises(ValueError, match="give one label per point"):
        plot_embeddings_by_class(panels, (labels[0][:5], labels[1]), tmp_path / "x.png", ("pca",))
