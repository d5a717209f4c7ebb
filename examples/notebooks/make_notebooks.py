"""Write the notebooks of this folder from the cells below, outputs stripped: ``python make_notebooks.py``.

Edit the cells here, not the .ipynb files: the test suite (tests/test_notebooks.py) checks that the committed
notebooks are exactly what this script writes, and runs each one with a Jupyter kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

INSTALL = '''\
# Installs minidann where it is missing (on Colab: clone the repository first, then run this cell inside it);
# where minidann is installed already, this does nothing.
import importlib.util
import subprocess
import sys
from pathlib import Path

if importlib.util.find_spec("minidann") is None:
    root = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "minidann" / "__init__.py").is_file()), None)
    if root is None:
        raise RuntimeError("minidann is not installed and this folder is not inside a copy of the repository: "
                           "clone it (git clone <repository URL>) and open the notebook from it")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(root)], check=True)
import minidann

print("minidann", minidann.__version__, "from", Path(minidann.__file__).parent)'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


GRL = [
    md('''
# The gradient reversal layer, line by line

A network with two hidden units, one input point from each domain, and every number of one training step:
the forward pass through $R_\\lambda$ (the identity), the backward pass (the gradient times $-\\lambda$), which part of
the network gets which gradient, and the paper's three updates (JMLR eq. 13-15, with footnote 6's weight 1 for
$\\theta_d$) checked against one plain SGD step on $L = L_y + L_d$.
'''),
    code(INSTALL),
    code('''
import numpy as np

import minidann as md
import minidann.functions as F

rng = np.random.default_rng(0)
x = np.array([[0.5, -1.0, 2.0],    # a source point (label 1)
              [1.5, 0.3, -0.7]])   # a target point (no label)
y_source = np.array([1])
domain = np.array([0, 1])          # 0: source, 1: target
lambd, mu = 0.6, 0.1

G_f = md.Linear(3, 2, rng=rng)                              # theta_f
G_y = md.Linear(2, 2, rng=rng)                              # theta_y
G_d = md.Sequential(md.GradientReversal(lambd), md.Linear(2, 2, rng=rng))  # R_lambda, then theta_d
groups = {"theta_f": G_f.parameters(), "theta_y": G_y.parameters(), "theta_d": G_d.parameters()}
for p in sum(groups.values(), []):
    p.data = p.data.astype(np.float64)  # float64, so that the checks below are exact to 1e-12
'''),
    md('## Forward: $R_\\lambda$ is the identity'),
    code('''
f = md.Tensor(F.sigmoid(G_f(md.Tensor(x))).data, requires_grad=True)  # the features, a leaf so we can see its grad
r = G_d[0](f)                                                          # R_lambda(f)
print("f          =", f.data.round(4).tolist())
print("R_lambda(f) =", r.data.round(4).tolist())
assert np.array_equal(r.data, f.data)
'''),
    md('## Backward: the gradient comes out times $-\\lambda$'),
    code('''
gy = np.array([[1.0, -2.0], [0.5, 3.0]])
r.backward(gy)
print("gradient arriving at R's output:", gy.tolist())
print("gradient leaving R (into f):    ", f.grad.tolist())
assert np.allclose(f.grad, -lambd * gy)
'''),
    md('''
## The sign table

One backward pass of $L = L_y + L_d$ through the network. Each parameter group gets the gradient of one part of
the loss; $\\theta_f$ gets two, and the one from $L_d$ arrives reversed. Below, each group's gradient from the whole
loss is compared with the gradients of $L_y$ alone and $L_d$ alone (computed without the GRL's sign, by setting
its coefficient to $-1$, which makes it the plain identity in both directions).
'''),
    code('''
def grads(loss_of, lambd_in_grl):
    G_d[0].lambd = lambd_in_grl
    for p in sum(groups.values(), []):
        p.grad = None
    loss_of().backward()
    return {g: [np.zeros_like(p.data) if p.grad is None else p.grad.copy() for p in ps] for g, ps in groups.items()}


def L_y():
    h = F.sigmoid(G_f(md.Tensor(x)))
    return F.softmax_cross_entropy(G_y(h[0:1]), y_source)


def L_d():
    h = F.sigmoid(G_f(md.Tensor(x)))
    return F.softmax_cross_entropy(G_d(h), domain)


total = grads(lambda: L_y() + L_d(), lambd)   # what training computes
gy_only = grads(L_y, -1.0)                   # dL_y / dtheta
gd_only = grads(L_d, -1.0)                   # dL_d / dtheta, no reversal


def same(a, b):
    return all(np.allclose(u, v, atol=1e-12) for u, v in zip(a, b, strict=True))


print(f"{'group':8} {'gets':28} {'checked'}")
theta_f_expected = [u - lambd * v for u, v in zip(gy_only["theta_f"], gd_only["theta_f"], strict=True)]
rows = [("theta_f", "dL_y - lambda dL_d", theta_f_expected),
        ("theta_y", "dL_y", gy_only["theta_y"]),
        ("theta_d", "dL_d (weight 1, footnote 6)", gd_only["theta_d"])]
for g, what, expected in rows:
    ok = same(total[g], expected)
    print(f"{g:8} {what:28} {ok}")
    assert ok
'''),
    md('''
## The three updates against one SGD step

$$\\theta_f \\leftarrow \\theta_f - \\mu\\Big(\\frac{\\partial L_y}{\\partial \\theta_f}
- \\lambda \\frac{\\partial L_d}{\\partial \\theta_f}\\Big),
\\qquad \\theta_y \\leftarrow \\theta_y - \\mu \\frac{\\partial L_y}{\\partial \\theta_y},
\\qquad \\theta_d \\leftarrow \\theta_d - \\mu \\frac{\\partial L_d}{\\partial \\theta_d}.$$

The right-hand sides are computed from the separate gradients above; the left from `minidann.SGD` after one
backward pass of $L_y + L_d$ through the GRL. The gradients of $L_y$ and $L_d$ are also checked against central
finite differences of each loss (no GRL involved there: it is only in the backward pass).
'''),
    code('''
before = {g: [p.data.copy() for p in ps] for g, ps in groups.items()}
expected = {
    "theta_f": [w - mu * (a - lambd * b) for w, a, b in zip(before["theta_f"], gy_only["theta_f"],
                                                                 gd_only["theta_f"], strict=True)],
    "theta_y": [w - mu * a for w, a in zip(before["theta_y"], gy_only["theta_y"], strict=True)],
    "theta_d": [w - mu * b for w, b in zip(before["theta_d"], gd_only["theta_d"], strict=True)],
}
G_d[0].lambd = lambd
opt = md.SGD(sum(groups.values(), []), lr=mu)
opt.zero_grad()
(L_y() + L_d()).backward()
opt.step()
for g, ps in groups.items():
    err = max(float(np.abs(p.data - e).max()) for p, e in zip(ps, expected[g], strict=True))
    print(f"{g}: largest difference between the SGD step and the paper's update {err:.1e}")
    assert err < 1e-12

# finite differences of L_y and L_d with respect to the first weight of theta_f, back at the old weights
for g, ps in groups.items():
    for p, w in zip(ps, before[g], strict=True):
        p.data = w.copy()
W = G_f.W
for name, loss, analytic in (("L_y", L_y, gy_only["theta_f"][0]), ("L_d", L_d, gd_only["theta_f"][0])):
    eps, numeric = 1e-6, np.zeros_like(W.data)
    for idx in np.ndindex(W.shape):
        old = W.data[idx]
        W.data[idx] = old + eps
        up = loss().item()
        W.data[idx] = old - eps
        down = loss().item()
        W.data[idx] = old
        numeric[idx] = (up - down) / (2 * eps)
    print(f"d{name}/dW_f: backward vs finite differences, largest difference {np.abs(analytic - numeric).max():.1e}")
    assert np.allclose(analytic, numeric, atol=1e-8)
'''),
]

CONV = [
    md('''
# Backpropagation through conv2d

The reference convolution of minidann is three steps: **im2col** unfolds every window of the input into a row,
**one matrix product** with the kernel applies the filter to every window at once, and its backward pass folds
the rows' gradients back onto the image with **col2im**, which adds where windows overlap. This notebook draws
im2col, checks that col2im is its adjoint, runs the gradient check of the reference `conv2d`, and catches a planted
bug in a convolution written here from the same parts.
'''),
    code(INSTALL),
    code('''
import io

import numpy as np
from IPython.display import Image, display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import minidann
from minidann.functions import col2im, conv2d, im2col
from minidann.gradcheck import check_backward

rng = np.random.default_rng(0)


def show(fig):
    """Display a matplotlib Figure made without pyplot, as a PNG."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    display(Image(data=buf.getvalue()))
'''),
    md('''
## im2col, drawn

A 1-channel 5 x 5 image whose pixels are numbered 0 to 24, and 3 x 3 windows with stride 1: 9 windows, so 9 rows
of 9 pixels. Row `(oh, ow)` holds the window whose top-left corner is pixel `(oh, ow)`; neighbouring windows share
pixels, which is why the same numbers appear in several rows.
'''),
    code('''
x = np.arange(25.0).reshape(1, 1, 5, 5)
KH = KW = 3
col = im2col(x, KH, KW)                       # (N, OH, OW, KH, KW, C)
N, OH, OW = col.shape[:3]
rows = col.reshape(N * OH * OW, -1)           # one row per window
print("col shape", col.shape, "-> rows", rows.shape)

fig = Figure(figsize=(9, 3.6), layout="constrained")
ax_img, ax_col = fig.subplots(1, 2, width_ratios=[1, 1.6])
ax_img.imshow(x[0, 0], cmap="viridis")
for (i, j), v in np.ndenumerate(x[0, 0]):
    ax_img.text(j, i, int(v), ha="center", va="center", color="w")
ax_img.add_patch(Rectangle((0.5, 0.5), 3, 3, fill=False, ec="r", lw=2))
ax_img.set_title("row (1, 1)'s window in red")
ax_col.imshow(rows, cmap="viridis", aspect="auto")
for (i, j), v in np.ndenumerate(rows):
    ax_col.text(j, i, int(v), ha="center", va="center", color="w", fontsize=8)
ax_col.set_yticks(range(len(rows)), [f"({i // OW}, {i % OW})" for i in range(len(rows))])
ax_col.set_xticks(range(KH * KW), [f"{k // KW},{k % KW}" for k in range(KH * KW)])
ax_col.set_xlabel("position in the window (kh, kw)")
ax_col.set_title("im2col: one row per window (oh, ow)")
show(fig)
assert (rows[OW + 1] == x[0, 0, 1:4, 1:4].reshape(-1)).all()  # row (1, 1) is the red window
'''),
    md('''
## col2im is the adjoint of im2col

For every image $x$ and every array of rows $c$: $\\langle \\mathrm{im2col}(x), c\\rangle =
\\langle x, \\mathrm{col2im}(c)\\rangle$. That identity is exactly what makes col2im the backward pass of im2col:
the gradient of $\\sum \\mathrm{im2col}(x) \\odot g$ with respect to $x$ is col2im$(g)$. Checked for several strides
and paddings:
'''),
    code('''
for (H, W, K, S, P) in [(5, 5, 3, 1, 0), (7, 6, 3, 2, 1), (6, 6, 2, 2, 0), (5, 7, 5, 1, 2)]:
    x = rng.standard_normal((2, 3, H, W))
    c = rng.standard_normal(im2col(x, K, K, S, S, P, P).shape)
    lhs = np.vdot(im2col(x, K, K, S, S, P, P), c)
    rhs = np.vdot(x, col2im(c, x.shape, S, S, P, P))
    print(f"H {H} W {W} kernel {K} stride {S} pad {P}:  <im2col(x), c> = {lhs:+.10f}   <x, col2im(c)> = {rhs:+.10f}")
    assert np.isclose(lhs, rhs, rtol=1e-12)
'''),
    md('''
## The gradient check of the reference conv2d

`check_backward` differentiates $\\sum \\mathrm{conv2d}(x, W, b) \\odot g_y$ for a random upstream gradient $g_y$,
in float64, and compares every element of the gradients of $x$, $W$ and $b$ with central finite differences.
`minidann.kernels("reference")` makes sure the layer of ops that runs is the textbook one.
'''),
    code('''
with minidann.kernels("reference"):
    for stride, pad in [(1, 0), (1, 1), (2, 1)]:
        x, W, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
        err = check_backward(lambda x, W, b, s=stride, p=pad: conv2d(x, W, b, stride=s, pad=p), [x, W, b])
        print(f"stride {stride} pad {pad}: worst relative error {err:.1e}")
'''),
    md('''
## A planted bug, caught

The same convolution written here from the public parts: im2col, one product with the kernel as a matrix
`W_mat[(kh, kw, c), oc] = W[oc, c, kh, kw]`, col2im in the backward pass. The correct one passes the check and
agrees with `conv2d`; the buggy one puts `gW`'s kernel rows and columns the wrong way round
(`transpose(3, 2, 1, 0)` instead of `(3, 2, 0, 1)`), a mistake that changes no shape, so nothing but a
gradient check notices it.
'''),
    code('''
class MyConv2d(minidann.Function):
    """x (N, C, H, W), W (OC, C, KH, KW), b (OC,) -> (N, OC, OH, OW); stride 1, no padding."""

    def __init__(self, buggy=False):
        self.buggy = buggy

    def forward(self, x, W, b):
        OC, C, KH, KW = W.shape
        self.x_shape, self.W_shape = x.shape, W.shape
        self.col = im2col(x, KH, KW)                                   # (N, OH, OW, KH, KW, C)
        N, OH, OW = self.col.shape[:3]
        self.W_mat = W.transpose(2, 3, 1, 0).reshape(KH * KW * C, OC)  # W_mat[(kh, kw, c), oc]
        y = self.col.reshape(N * OH * OW, -1) @ self.W_mat + b         # the one product
        return y.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2)

    def backward(self, gy):
        OC, C, KH, KW = self.W_shape
        gy_mat = gy.transpose(0, 2, 3, 1).reshape(-1, OC)               # (N OH OW, OC)
        gW_mat = self.col.reshape(len(gy_mat), -1).T @ gy_mat          # (KH KW C, OC)
        order = (3, 2, 1, 0) if self.buggy else (3, 2, 0, 1)
        gW = gW_mat.reshape(KH, KW, C, OC).transpose(*order)
        gx = col2im((gy_mat @ self.W_mat.T).reshape(self.col.shape), self.x_shape)
        return gx, gW, gy_mat.sum(axis=0)


x, W, b = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
with minidann.kernels("reference"):
    assert np.allclose(MyConv2d()(x, W, b).data, conv2d(x, W, b).data)
    print("correct:", f"{check_backward(lambda x, W, b: MyConv2d()(x, W, b), [x, W, b]):.1e}")
    try:
        check_backward(lambda x, W, b: MyConv2d(buggy=True)(x, W, b), [x, W, b])
        caught = False
    except AssertionError as e:
        caught = True
        print("buggy:  ", e)
assert caught, "the gradient check should have caught the transposed kernel gradient"
'''),
]

MOONS = [
    md('''
# Two moons: the paper's Fig. 2

The shallow DANN of JMLR section 5.1.1 beside the same network trained without the reversed gradient (the
baseline), on two moons (source, labelled) and the same moons rotated by 35 degrees (target, unlabelled). Four
panels per network: the label classifier's decision boundary, PCA of the hidden layer, the domain classifier's
boundary, and the hidden units' lines. The model, the training loop and the plot are those of
`examples/two_moons.py`, imported from the repository; fewer epochs than its default keep this under a minute.
'''),
    code(INSTALL),
    code('''
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
from IPython.display import Image, display

import minidann as md

# examples/ is beside the package in a copy of the repository (also after an editable install)
script = Path(md.__file__).resolve().parents[1] / "examples" / "two_moons.py"
spec = importlib.util.spec_from_file_location("two_moons", script)
tm = importlib.util.module_from_spec(spec)
sys.modules["two_moons"] = tm
spec.loader.exec_module(tm)
print("imported", script)
'''),
    code('''
EPOCHS, SEED, LAMBD = 100, 0, 6.0
data = tm.make_domains(seed=SEED)
models, results = {}, {}
for name, lambd in (("baseline", 0.0), ("DANN", LAMBD)):
    model = tm.ShallowDANN(15, lambd, rng=np.random.default_rng(SEED))  # the same initial weights for both
    history = tm.train(model, data, lambd=lambd, domain_lr_scale=LAMBD, epochs=EPOCHS, seed=SEED)
    with md.no_grad():
        hs = model.features(md.Tensor(data["Xs"])).data
        ht = model.features(md.Tensor(data["Xt"])).data
    results[name] = {**history[-1], "pad": tm.proxy_a_distance(hs, ht, seed=SEED)}
    models[name] = model

print(f"{'':10}{'source acc':>12}{'target acc':>12}{'domain acc':>12}{'hidden PAD':>12}")
for name, r in results.items():
    print(f"{name:10}{r['source_acc']:12.3f}{r['target_acc']:12.3f}{r['domain_acc']:12.3f}{r['pad']:12.2f}")
'''),
    code('''
out = Path(tempfile.mkdtemp()) / "two_moons.png"
tm.plot_panels(models, data, results, out)
display(Image(filename=str(out)))
'''),
    md('''
DANN's domain classifier ends near chance and the target points lie on the source moons in its hidden layer; the
baseline's hidden layer keeps the rotation, and its label boundary cuts through the rotated moons.
'''),
]

MNIST = [
    md('''
# MNIST -> MNIST-M in a few minutes

A short run with the stable API of `minidann.dann` on a slice of the embedded digits (shipped with the package,
offline): source-only training beside DANN, their curves, the samples, PCA and t-SNE of the features. Then the
folder of a finished run of `examples/mnist_to_mnistm.py` (a tiny one, made here): its results table and plots.
The numbers of so short a run say little about the paper's; see docs/reproducing.md for the full one.
'''),
    code(INSTALL),
    code('''
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from IPython.display import Image, display

import minidann as md
from minidann import viz
from minidann.dann import (
    build_model,
    build_optimizer,
    evaluate,
    extract_features,
    lambda_schedule,
    lr_schedule,
    pixel_mean,
    prepare_mnist,
    prepare_mnistm,
    preprocess,
    train_step,
)
from minidann.data import load_digits_pair
from minidann.proxy_a_distance import proxy_a_distance

work = Path(tempfile.mkdtemp())
pair = load_digits_pair(source="embedded", data_dir=work / "data", seed=0)
print(pair.description)
N_TRAIN, N_TEST = 2000, 200
src, tgt = prepare_mnist(pair.mnist_train.images[:N_TRAIN]), prepare_mnistm(pair.mnistm_train.images[:N_TRAIN])
ys = pair.mnist_train.labels[:N_TRAIN]
src_test, tgt_test = prepare_mnist(pair.mnist_test.images[:N_TEST]), prepare_mnistm(pair.mnistm_test.images[:N_TEST])
ys_test, yt_test = pair.mnist_test.labels[:N_TEST], pair.mnistm_test.labels[:N_TEST]
mean = pixel_mean(src, tgt)
'''),
    md('## Training: source only, then DANN'),
    code('''
STEPS, BATCH, EVAL_EVERY = 40, 32, 20
rows, models = [], {}
for mode in ("source", "dann"):
    rng = np.random.default_rng(0)
    model = build_model(rng)
    opt = build_optimizer(model)
    start = time.perf_counter()
    for step in range(1, STEPS + 1):
        p = (step - 1) / STEPS
        lambd, lr = lambda_schedule(p), lr_schedule(p)
        if mode == "dann":  # half source, half target; labels only for the source rows
            i, j = rng.integers(0, len(src), BATCH // 2), rng.integers(0, len(tgt), BATCH // 2)
            x, y = preprocess(np.concatenate([src[i], tgt[j]]), mean), ys[i]
        else:
            i = rng.integers(0, len(src), BATCH)
            x, y = preprocess(src[i], mean), ys[i]
        stats = train_step(model, opt, x, y, mode, lambd, lr).to_host()
        row = {"step": step, "mode": mode, **stats, "lambda": lambd if mode == "dann" else None, "lr": lr,
               "source_acc": None, "target_acc": None}
        if step % EVAL_EVERY == 0:
            acc = evaluate(model, src_test, ys_test, tgt_test, yt_test, mean)
            row.update(source_acc=acc["source_acc"], target_acc=acc["target_acc"])
        rows.append(row)
    models[mode] = model
    print(f"{mode}: {STEPS} steps in {time.perf_counter() - start:.1f} s, test accuracy MNIST "
          f"{row['source_acc']:.3f}, MNIST-M {row['target_acc']:.3f}")
'''),
    code('''
display(Image(filename=str(viz.plot_training_curves(rows, work / "curves.png"))))
display(Image(filename=str(viz.plot_sample_grid(src_test, tgt_test, work / "samples.png"))))
'''),
    md('''
## Features: proxy A-distance, PCA and t-SNE

The paper's Fig. 5 draws t-SNE of the features of source and target test images; PCA is the cheap, exact view.
The proxy A-distance says how well linear SVMs tell the two domains apart from these features (2: perfectly).
'''),
    code('''
panels = {title: (extract_features(models[m], src_test, mean), extract_features(models[m], tgt_test, mean))
          for title, m in (("source only", "source"), ("DANN", "dann"))}
for title, (fs, ft) in panels.items():
    print(f"{title}: proxy A-distance {proxy_a_distance(fs, ft):.2f}")
start = time.perf_counter()
emb = viz.embed_panels(panels, ("pca", "tsne"), max_iter=500)  # 500 iterations: enough for 400 points
print(f"embeddings in {time.perf_counter() - start:.1f} s")
display(Image(filename=str(viz.plot_embeddings(panels, work / "embedding.png", ("pca", "tsne"), embeddings=emb))))
display(Image(filename=str(viz.plot_embeddings_by_class(panels, (ys_test, yt_test), work / "classes.png",
                                                        ("tsne",), embeddings=emb))))
'''),
    md('''
## A finished run's folder

`examples/mnist_to_mnistm.py` writes `config.json`, `metrics.csv`, `results.json` and its plots into its output
folder. A tiny run is made here (a few seconds); point `run` at the folder of a real one instead.
'''),
    code('''
script = Path(md.__file__).resolve().parents[1] / "examples" / "mnist_to_mnistm.py"
run = work / "run"
subprocess.run([sys.executable, str(script), "--device", "cpu", "--data", "embedded", "--data-dir", str(work / "data"),
                "--out", str(run), "--steps", "16", "--batch-size", "8", "--limit-train", "200", "--limit-test", "60",
                "--eval-every", "8", "--modes", "source,dann", "--no-progress", "--seed", "0"],
               check=True, capture_output=True, text=True)
print(sorted(p.name for p in run.iterdir()))
'''),
    code('''
results = json.loads((run / "results.json").read_text())
print(f"{'mode':8}{'MNIST':>8}{'MNIST-M':>9}{'domain':>8}{'steps':>7}{'ms/step':>9}")
for mode, r in results["modes"].items():
    dom = r.get("domain_acc")
    print(f"{mode:8}{r['source_acc']:8.3f}{r['target_acc']:9.3f}{'-' if dom is None else f'{dom:.3f}':>8}"
          f"{r['steps']:7d}{r['ms_per_step']:9.1f}")
pad = results.get("proxy_a_distance") or {}
print("proxy A-distance:", {k: round(v, 2) for k, v in pad.items() if isinstance(v, float)})

def number(v):
    return None if v in ("", None) else float(v)

with open(run / "metrics.csv", newline="") as fh:
    logged = [{k: (v if k == "mode" else number(v)) for k, v in r.items()} for r in csv.DictReader(fh)]
for r in logged:
    r["step"] = int(r["step"])
display(Image(filename=str(viz.plot_training_curves(logged, work / "run_curves.png"))))
for name in ("samples.png", "embedding.png"):
    if (run / name).is_file():
        display(Image(filename=str(run / name)))
'''),
]

NOTEBOOKS = {"grl_line_by_line.ipynb": GRL, "conv_backprop.ipynb": CONV, "two_moons.ipynb": MOONS,
             "mnist_to_mnistm.ipynb": MNIST}


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: the same cells give the same file
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(NOTEBOOKS[name]))


def main() -> int:
    for name in NOTEBOOKS:
        (HERE / name).write_text(render(name))
        print("wrote", HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
