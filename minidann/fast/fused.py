"""Fused GPU kernels of the fast layer, each beside its NumPy twin.

On a GPU, a DANN step at batch 64 is bound by kernel launches, not arithmetic: every array op is one launch
of 5 to 20 microseconds, however little it computes. Each :class:`Fused` op here does in one launch what takes
several array ops: a CuPy ``ElementwiseKernel`` (CUDA C, compiled by CuPy on first use) for CuPy arrays, and for
NumPy arrays its *twin*, a NumPy function that computes the same outputs from the same arguments (up to float
rounding where the GPU's compiler fuses a multiply and an add into one instruction, as in the momentum update).

The contract of every op: ``op(*inputs, *outputs)`` with arguments in the order of ``in_params`` then
``out_params``; the outputs are arrays the caller made (C-contiguous, of the listed dtypes) and are written in
place; the op returns them. In the CUDA body, ``i`` is the index of the element of the outputs being computed
(C order over their shape); a ``raw`` argument is indexed by hand, logically (``x[k]`` is the k-th element in C
order, whatever the array's memory layout). ``T`` is the dtype of the arrays so marked (float32 in training,
float64 in a gradient check); ``S`` the labels' integer dtype.

tests/test_fused.py proves every op equal to the reference computation: through the kernel where a GPU exists,
through the twin elsewhere (the CuPy stand-in of the tests runs the twin as one launch); it also compiles every
CUDA body with nvcc where nvcc is installed.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module


class Fused:
    """One elementwise kernel: its CUDA source for CuPy and its NumPy twin.

    Args:
        name: the kernel's name (also the CUDA function's).
        in_params, out_params: CuPy's parameter lists, e.g. ``"raw T x, int32 K"`` and ``"T y, uint8 winner"``.
        operation: the CUDA C body, run once per output element ``i``.
        twin: ``twin(*inputs, *outputs)``, NumPy arrays and scalars, fills the outputs.
    """

    def __init__(self, name: str, in_params: str, out_params: str, operation: str, twin):
        self.name, self.in_params, self.out_params, self.operation, self.twin = \
            name, in_params, out_params, operation, twin
        self.n_in, self.n_out = len(in_params.split(",")), len(out_params.split(","))
        self._kernels = {}  # array module -> compiled kernel (CuPy, or the tests' stand-in)
        FUSED[name] = self

    def __call__(self, *args):
        if len(args) != self.n_in + self.n_out:
            raise TypeError(f"{self.name}: takes {self.n_in} inputs and {self.n_out} outputs, got {len(args)} "
                            "arguments")
        outputs = args[self.n_in:]
        xp = get_array_module(*args)
        if xp is np:
            self.twin(*args)
        else:
            kernel = self._kernels.get(xp)
            if kernel is None:
                kernel = self._kernels[xp] = xp.ElementwiseKernel(self.in_params, self.out_params, self.operation,
                                                                  self.name)
            kernel(*args)
        return outputs[0] if len(outputs) == 1 else outputs


#: Every fused op by kernel name (the tests walk it; the stand-in finds each twin here).
FUSED: dict[str, Fused] = {}


# ---- SGD with momentum over the flat buffers -------------------------------------------------------------------

def _sgd_momentum_twin(grad, lr, momentum, weight_decay, theta, velocity):
    g = grad + weight_decay * theta if weight_decay else grad
    velocity *= momentum
    velocity += g
    theta -= lr * velocity


#: v <- momentum * v + (g + weight_decay * theta);  theta <- theta - lr * v, for every element at once.
sgd_momentum = Fused(
    "minidann_sgd_momentum", "T grad, T lr, T momentum, T weight_decay", "T theta, T velocity",
    """
    velocity = momentum * velocity + (grad + weight_decay * theta);
    theta = theta - lr * velocity;
    """, _sgd_momentum_twin)


# ---- ReLU's gradient --------------------------------------------------------------------------------------------

def _relu_grad_twin(y, gy, gx):
    np.copyto(gx, np.where(y > 0, gy, 0))


#: gx = gy where y > 0, else 0 (y = relu(x): y > 0 exactly where x > 0).
relu_grad = Fused("minidann_relu_grad", "T y, T gy", "T gx", "gx = y > (T)0 ? gy : (T)0;", _relu_grad_twin)


# ---- max-pool over windows that tile the image (kernel == stride) ---------------------------------------------

def _max_pool_tiled_twin(x, H, W, OH, OW, KH, KW, y, winner):
    N, C = x.shape[:2]
    windows = x[:, :, : OH * KH, : OW * KW].reshape(N, C, OH, KH, OW, KW).transpose(0, 1, 2, 4, 3, 5)
    windows = windows.reshape(N, C, OH, OW, KH * KW)
    k = windows.argmax(axis=-1)  # the first maximum in row-major window order (and the first NaN, as the kernel)
    np.copyto(winner, k, casting="unsafe")  # (k < KH*KW <= 256)
    np.copyto(y, np.take_along_axis(windows, k[..., None], axis=-1)[..., 0])


#: y[n, c, oh, ow] = the maximum of the KH x KW window of x at (KH*oh, KW*ow); winner = its row-major index in the
#: window, the first on ties (a NaN wins, the first one, as with NumPy's argmax).
#: x (N, C, H, W) -> y, winner (N, C, OH, OW), OH = H // KH, OW = W // KW.
max_pool_tiled = Fused(
    "minidann_max_pool_tiled", "raw T x, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW",
    "T y, uint8 winner",
    """
    // i = ((n*C + c)*OH + oh)*OW + ow over y; x[n, c, h, w] is x[((n*C + c)*H + h)*W + w]
    const ptrdiff_t ow = i % OW, oh = (i / OW) % OH, nc = i / ((ptrdiff_t)OW * OH);
    const ptrdiff_t corner = (nc * H + oh * KH) * W + ow * KW;
    T best = x[corner];
    unsigned char k_best = 0;
    for (int kh = 0; kh < KH; ++kh) {
        for (int kw = 0; kw < KW; ++kw) {
            const T v = x[corner + kh * W + kw];
            if (v > best || (v != v && best == best)) {  // (v != v: v is NaN)
                best = v;
                k_best = (unsigned char)(kh * KW + kw);
            }
        }
    }
    y = best;
    winner = k_best;
    """, _max_pool_tiled_twin)


def _max_pool_tiled_grad_twin(gy, winner, C, H, W, OH, OW, KH, KW, channels_last, gx):
    gx = gx.transpose(0, 3, 1, 2) if channels_last else gx  # (N, C, H, W), a view of the output
    gx[...] = 0  # (rows and columns that no window covers stay 0)
    for k in range(KH * KW):
        i, j = divmod(k, KW)
        gx[:, :, i : i + KH * OH : KH, j : j + KW * OW : KW] = np.where(winner == k, gy, 0)


#: gx[n, c, h, w] = gy of the window that holds (h, w) if (h, w) won it, else 0 (and 0 where no window covers).
#: gy, winner (N, C, OH, OW) -> gx, written (N, C, H, W), or (N, H, W, C) with channels_last = 1 (the memory
#: order a convolution's output and gradient have: the convolution below then needs no copy of it).
max_pool_tiled_grad = Fused(
    "minidann_max_pool_tiled_grad", "raw T gy, raw uint8 winner, int32 C, int32 H, int32 W, int32 OH, int32 OW, "
    "int32 KH, int32 KW, int32 channels_last", "T gx",
    """
    // i = ((n*C + c)*H + h)*W + w over gx, or ((n*H + h)*W + w)*C + c with channels_last
    ptrdiff_t n, c, h, w;
    if (channels_last) {
        c = i % C; w = (i / C) % W; h = (i / ((ptrdiff_t)C * W)) % H; n = i / ((ptrdiff_t)C * W * H);
    } else {
        w = i % W; h = (i / W) % H; c = (i / ((ptrdiff_t)W * H)) % C; n = i / ((ptrdiff_t)W * H * C);
    }
    const ptrdiff_t oh = h / KH, ow = w / KW;
    T g = 0;
    if (oh < OH && ow < OW) {
        const ptrdiff_t o = ((n * C + c) * OH + oh) * OW + ow;
        if (winner[o] == (h - oh * KH) * KW + (w - ow * KW)) {
            g = gy[o];
        }
    }
    gx = g;
    """, _max_pool_tiled_grad_twin)


# ---- softmax cross-entropy, one row per label ------------------------------------------------------------------

def _cross_entropy_rows_twin(z, labels, K, lse, loss):
    N = z.shape[0]
    m = z.max(axis=1)
    np.copyto(lse, m + np.log(np.exp(z - m[:, None]).sum(axis=1)))
    valid = (labels >= 0) & (labels < K)
    z_t = z[np.arange(N), np.where(valid, labels, 0)]
    np.copyto(loss, np.where(valid, lse - z_t, np.nan))


#: lse[n] = log sum_k exp z[n, k] (computed from the row maximum: exp never overflows), loss[n] = lse[n] - z[n, t_n],
#: which is -log softmax(z_n)[t_n]. A label outside [0, K) gives a NaN loss (the training loop's NaN guard stops
#: on it) instead of reading outside the row. z (N, K), labels (N,) -> lse, loss (N,).
cross_entropy_rows = Fused(
    "minidann_cross_entropy_rows", "raw T z, raw S labels, int32 K", "T lse, T loss",
    """
    const ptrdiff_t row = i * K;
    T m = z[row];
    for (int k = 1; k < K; ++k) {
        m = z[row + k] > m ? z[row + k] : m;
    }
    T s = 0;
    for (int k = 0; k < K; ++k) {
        s += exp(z[row + k] - m);
    }
    lse = m + log(s);
    const long long t = (long long)labels[i];
    const T zero = 0;
    loss = (0 <= t && t < K) ? lse - z[row + t] : zero / zero;  // (0 / 0: NaN)
    """, _cross_entropy_rows_twin)


def _cross_entropy_grad_twin(z, labels, lse, gy, K, inv_n, gz):
    onehot = labels[:, None] == np.arange(K)
    np.copyto(gz, (np.exp(z - lse[:, None]) - onehot) * (gy[0] * inv_n))


#: gz[n, k] = (softmax(z_n)[k] - [k == t_n]) * gy / N, with softmax(z_n)[k] = exp(z[n, k] - lse[n]).
#: z (N, K), labels (N,), lse (N,), gy (1,) the upstream scalar, inv_n = 1 / N -> gz (N, K).
cross_entropy_grad = Fused(
    "minidann_cross_entropy_grad", "T z, raw S labels, raw T lse, raw T gy, int32 K, T inv_n", "T gz",
    """
    const ptrdiff_t n = i / K, k = i % K;
    gz = (exp(z - lse[n]) - (k == (long long)labels[n] ? (T)1 : (T)0)) * (gy[0] * inv_n);
    """, _cross_entropy_grad_twin)


# ---- preprocessing a batch on the device ----------------------------------------------------------------------

def _preprocess_pixels_twin(pixels, mean, HW, x):
    np.copyto(x, pixels)  # (uint8 -> float: exact)
    x -= mean.reshape(1, 3, 1, 1)
    x /= x.dtype.type(255.0)


#: x = (pixels - mean[c]) / 255 in x's dtype, the arithmetic of :func:`minidann.dann.preprocess` on the host (so
#: the images are the same bit for bit): pixels (N, 3, H, W) uint8, mean (3,), HW = H * W -> x (N, 3, H, W).
preprocess_pixels = Fused(
    "minidann_preprocess_pixels", "uint8 pixels, raw T mean, int32 HW", "T x",
    "x = ((T)pixels - mean[(i / HW) % 3]) / (T)255;", _preprocess_pixels_twin)
