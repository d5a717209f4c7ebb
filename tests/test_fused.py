"""The fused GPU kernels of minidann.fast.fused, each against the computation it replaces.

Every op runs through :class:`minidann.fast.fused.Fused` on each device: on "cpu" its NumPy twin; on "gpu" its
CUDA kernel where a GPU exists, else the twin through the CuPy stand-in (which checks the arguments as CuPy
does and counts one launch). The expected values come from the reference ops or plain NumPy, in float64.
Where nvcc is installed, every CUDA body is also compiled, as CuPy would wrap it, for float32 and float64.
"""

import shutil
import subprocess

import numpy as np
import pytest
from conftest import DEVICES

from minidann import functions as F
from minidann.backend import to_device, to_numpy
from minidann.fast import fused


def _dev(a, device):
    return to_device(np.ascontiguousarray(a) if a.ndim else a, device)


# ---- SGD with momentum -------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_sgd_momentum_is_the_heavy_ball_update(device, dtype, wd):
    rng = np.random.default_rng(0)
    theta, velocity, grad = (rng.standard_normal(50).astype(dtype) for _ in range(3))
    lr, m = 0.03, 0.9
    want_v = m * velocity.astype(np.float64) + grad + wd * theta
    want_theta = theta - lr * want_v
    t, v = _dev(theta, device), _dev(velocity, device)
    out = fused.sgd_momentum(_dev(grad, device), *(np.dtype(dtype).type(s) for s in (lr, m, wd)), t, v)
    assert out[0] is t and out[1] is v  # written in place
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(to_numpy(v), want_v, rtol=tol, atol=tol)
    np.testing.assert_allclose(to_numpy(t), want_theta, rtol=tol, atol=tol)


# ---- ReLU's gradient ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_relu_grad_passes_gy_where_y_is_positive(device):
    rng = np.random.default_rng(0)
    y = np.maximum(rng.standard_normal((4, 3, 5)), 0)
    y[0, 0, :2] = 0.0
    gy = rng.standard_normal(y.shape)
    gx = fused.relu_grad(_dev(y, device), _dev(gy, device), _dev(np.empty_like(y), device))
    np.testing.assert_array_equal(to_numpy(gx), gy * (y > 0))


# ---- max-pool ------------------------------------------------------------------------------------------------

POOL_SHAPES = [((3, 4, 8, 6), 2), ((2, 3, 7, 5), 2), ((2, 2, 9, 6), 3)]  # (the second and third: uncovered edges)


def _pool_input(shape, kind, rng):
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(np.float64)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)
    if kind == "nan":
        x.flat[rng.choice(x.size, 5, replace=False)] = np.nan
    return x


def _reference_pool(x, k):
    """y, winner and gx for gy, by the reference op (its winner is the first argmax of each window)."""
    pool = F.pool.MaxPool2d(k, k)
    y = pool.forward(x)
    return pool, y, pool.winner


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["C", "channels-last"])
@pytest.mark.parametrize("kind", ["distinct", "ties", "nan"])
@pytest.mark.parametrize("shape,k", POOL_SHAPES, ids=str)
def test_max_pool_tiled_finds_the_first_maximum_of_every_window(device, layout, kind, shape, k):
    x = _pool_input(shape, kind, np.random.default_rng(0))
    _, want_y, want_winner = _reference_pool(x, k)
    N, C, H, W = shape
    OH, OW = H // k, W // k
    xd = _dev(x, device)
    if layout == "channels-last":  # a conv2d output: an (N, C, H, W) view of (N, H, W, C) memory
        xd = _dev(x.transpose(0, 2, 3, 1), device).transpose(0, 3, 1, 2)
    y, winner = (_dev(np.empty((N, C, OH, OW), dt), device) for dt in (np.float64, np.uint8))
    fused.max_pool_tiled(xd, H, W, OH, OW, k, k, y, winner)
    np.testing.assert_array_equal(to_numpy(winner), want_winner)
    np.testing.assert_array_equal(to_numpy(y), want_y)  # (NaN where a NaN won: assert_array_equal matches NaNs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("shape,k", POOL_SHAPES, ids=str)
def test_max_pool_tiled_grad_routes_gy_to_each_winner(device, channels_last, shape, k):
    rng = np.random.default_rng(1)
    x = _pool_input(shape, "ties", rng)
    pool, y, winner = _reference_pool(x, k)
    gy = rng.standard_normal(y.shape)
    want = pool.backward(gy)
    N, C, H, W = shape
    OH, OW = y.shape[2:]
    gx = _dev(np.full((N, H, W, C) if channels_last else shape, 7.0), device)  # 7: every element must be written
    fused.max_pool_tiled_grad(_dev(gy, device), _dev(winner.astype(np.uint8), device), C, H, W, OH, OW, k, k,
                              channels_last, gx)
    got = to_numpy(gx)
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2) if channels_last else got, want)


# ---- softmax cross-entropy -----------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("K", [2, 10])
def test_cross_entropy_rows_are_minus_log_softmax_of_the_label(device, K):
    rng = np.random.default_rng(0)
    N = 7
    z = rng.standard_normal((N, K)) * 30  # large logits: the row maximum keeps exp finite
    labels = rng.integers(0, K, N)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    lse, loss = (_dev(np.empty(N), device) for _ in range(2))
    fused.cross_entropy_rows(_dev(z, device), _dev(labels, device), K, lse, loss)
    np.testing.assert_allclose(to_numpy(loss), -log_p[np.arange(N), labels], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(lse), z[np.arange(N), labels] - log_p[np.arange(N), labels], rtol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_cross_entropy_rows_give_nan_for_a_label_out_of_range(device):
    z = np.zeros((4, 3))
    lse, loss = (_dev(np.empty(4), device) for _ in range(2))
    fused.cross_entropy_rows(_dev(z, device), _dev(np.array([0, 3, -1, 2]), device), 3, lse, loss)
    got = to_numpy(loss)
    assert np.isnan(got[[1, 2]]).all() and np.allclose(got[[0, 3]], np.log(3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("K", [2, 10])
def test_cross_entropy_grad_is_softmax_minus_onehot_over_n(device, K):
    rng = np.random.default_rng(2)
    N = 6
    z = rng.standard_normal((N, K))
    labels = rng.integers(0, K, N)
    loss = F.loss.SoftmaxCrossEntropy(labels)
    loss.forward(z)
    gy = np.float64(rng.standard_normal())
    want = loss.backward(gy)
    lse = np.log(np.exp(z).sum(1))
    gz = _dev(np.empty((N, K)), device)
    fused.cross_entropy_grad(_dev(z, device), _dev(labels, device), _dev(lse, device),
                             _dev(np.array([gy]), device), K, np.float64(1 / N), gz)
    np.testing.assert_allclose(to_numpy(gz), want, rtol=1e-12, atol=1e-15)


# ---- preprocessing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
def test_preprocess_pixels_is_the_hosts_preprocess_bit_for_bit(device):
    from minidann.dann import pixel_mean, preprocess

    pixels = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 7)).astype(np.uint8)
    pixels[0, :, 0, 0] = (0, 255, 128)
    mean = pixel_mean(pixels)
    x = _dev(np.empty(pixels.shape, np.float32), device)
    fused.preprocess_pixels(_dev(pixels, device), _dev(mean, device), 5 * 7, x)
    assert to_numpy(x).tobytes() == preprocess(pixels, mean).tobytes()


# ---- the calling convention --------------------------------------------------------------------------------

def test_a_fused_op_refuses_the_wrong_number_of_arguments():
    with pytest.raises(TypeError, match="takes 2 inputs and 1 outputs, got 2"):
        fused.relu_grad(np.ones(2), np.ones(2))


def test_the_standin_runs_a_fused_op_as_one_launch_and_checks_its_arguments(standin):
    import cupy_standin as cp

    y, gy, gx = (cp.asarray(np.ones(3, np.float32)) for _ in range(3))
    fused.relu_grad(y, gy, gx)
    assert standin.launches == {"minidann_relu_grad": 1}
    with pytest.raises(TypeError, match="argument gy is float64, but T is already float32"):
        fused.relu_grad(y, cp.asarray(np.ones(3)), gx)
    with pytest.raises(TypeError, match="both NumPy .* and CuPy"):  # (minidann's own check, before CuPy's)
        fused.relu_grad(y, np.ones(3, np.float32), gx)
    fused.sgd_momentum(gy, 0.1, 0.9, 0, y, gx)  # Python numbers take their parameters' type, as in CuPy
    assert y.dtype == np.float32
    unbound = fused.Fused("minidann_test_unbound", "T a", "float32 b", "b = a;", lambda a, b: None)
    try:
        with pytest.raises(TypeError, match="no array gives the type of"):
            unbound(np.float32(1), cp.asarray(np.ones(2, np.float32)))
    finally:
        del fused.FUSED[unbound.name]  # (not one of minidann's kernels)
    with pytest.raises(TypeError, match="winner must be uint8"):
        fused.max_pool_tiled(cp.asarray(np.ones((1, 1, 2, 2), np.float32)), 2, 2, 1, 1, 2, 2,
                             cp.asarray(np.ones((1, 1, 1, 1), np.float32)), cp.asarray(np.ones((1, 1, 1, 1))))


# ---- the CUDA bodies compile -------------------------------------------------------------------------------

_C_TYPES = {"int32": "int", "int64": "long long", "uint8": "unsigned char", "float32": "float", "float64": "double"}

_HARNESS_HEAD = """
// CuPy's view of a raw argument: indexed logically, with its size and shape.
template <typename T> struct RawArray {
    T* data_; ptrdiff_t size_; ptrdiff_t shape_[4];
    __device__ T& operator[](ptrdiff_t k) const { return data_[k]; }
    __device__ ptrdiff_t size() const { return size_; }
    __device__ const ptrdiff_t* shape() const { return shape_; }
};
struct Indexer { ptrdiff_t size_; __device__ ptrdiff_t size() const { return size_; } };
"""


def _kernel_source(op: fused.Fused, T: str, S: str) -> str:
    """The kernel as CuPy wraps an ElementwiseKernel: a raw argument as an array; any other input as a const
    value (a scalar, or the input's element i); an output as a reference to its element i; the body in a loop
    over i."""
    params, outputs = [], []
    for part in op.in_params.split(",") + op.out_params.split(","):
        words = part.split()
        typ, name = words[-2], words[-1]
        ctype = {"T": "T", "S": "S"}.get(typ) or _C_TYPES[typ]
        if words[0] == "raw":
            params.append(f"RawArray<{ctype}> {name}")
        elif len(params) < op.n_in:
            params.append(f"const {ctype} {name}")
        else:
            params.append(f"{ctype}* _raw_{name}")
            outputs.append(f"{ctype} &{name} = _raw_{name}[i];")
    return (f"namespace k_{op.name} {{\ntypedef {T} T;\ntypedef {S} S;\n"
            f"extern \"C\" __global__ void {op.name}_{T}({', '.join(params)}, Indexer _ind) {{\n"
            f"  for (ptrdiff_t i = blockIdx.x * blockDim.x + threadIdx.x; i < _ind.size(); "
            f"i += (ptrdiff_t)blockDim.x * gridDim.x) {{\n    " + "\n    ".join(outputs) +
            f"\n{op.operation}\n  }}\n}}\n}}\n")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed: the CUDA bodies are compiled "
                    "where it is (and run by the tests above where a GPU exists)")
@pytest.mark.parametrize("T", ["float", "double"])
def test_every_cuda_body_compiles(tmp_path, T):
    source = _HARNESS_HEAD + "".join(_kernel_source(op, T, "long long") for op in fused.FUSED.values())
    (tmp_path / "fused.cu").write_text(source)
    done = subprocess.run(["nvcc", "-c", "-arch=sm_80", "-Werror", "all-warnings", "fused.cu", "-o", "fused.o"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + "\n" + source
