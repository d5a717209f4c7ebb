"""The PyTorch twin: the paper's network and the same DANN step in PyTorch, from minidann's weights.

torch is imported inside the functions only: minidann never depends on it (``--compare-torch`` needs it).
"""

from __future__ import annotations

import os

from .step import synthetic_batch


def _torch_network(model, dev: str):
    """PyTorch's version of the paper's network with ``model``'s weights: (features, label head, domain head, GRL).

    ``dev`` is "cpu" or "cuda"; the GRL is a torch.autograd.Function taking (x, lambd).
    """
    import torch

    from minidann.backend import to_numpy

    class GradReverse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, lambd):
            ctx.lambd = lambd
            return x.view_as(x)

        @staticmethod
        def backward(ctx, gy):
            return -ctx.lambd * gy, None

    nn = torch.nn
    feat = nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 48, 5, padding=2),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    label = nn.Sequential(nn.Linear(2352, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    domain = nn.Sequential(nn.Linear(2352, 100), nn.ReLU(), nn.Linear(100, 2))
    torch_params = [p for m in (feat, label, domain) for p in m.parameters()]
    with torch.no_grad():  # same starting weights; minidann's Linear W is (in, out), torch's (out, in)
        for tp, mp in zip(torch_params, model.parameters(), strict=True):
            w = to_numpy(mp.data)
            tp.copy_(torch.from_numpy(w.T.copy() if w.ndim == 2 else w))
    for m in (feat, label, domain):
        m.to(dev)
    return feat, label, domain, GradReverse.apply


def set_torch_cuda_float32(torch, tf32: bool) -> str:
    """Choose the arithmetic of PyTorch's float32 CUDA convolutions and matmuls; return it in words.

    PyTorch's default lets cuDNN run float32 convolutions in TF32 (products of inputs rounded to 10 mantissa
    bits) on Ampere and later GPUs, while CuPy's matmul, and so every minidann product, computes in IEEE float32
    unless ``CUPY_TF32=1`` is set. ``tf32=False`` makes PyTorch compute in IEEE float32 too, the same arithmetic
    as minidann's; ``tf32=True`` leaves PyTorch's defaults. The setting is process-wide, like PyTorch's flags.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    new_api = conv is not None and hasattr(conv, "fp32_precision")  # PyTorch 2.9 and later
    if tf32:
        # (with the new API only its flags are read: reading a legacy one after setting a new one raises)
        conv_mode = conv.fp32_precision if new_api else ("tf32" if torch.backends.cudnn.allow_tf32 else "ieee")
        return f"left as PyTorch has it (convolutions: {conv_mode})"
    if new_api:
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return "ieee"


def cupy_float32() -> str:
    """The arithmetic of minidann's float32 products on a GPU: CuPy's matmul, IEEE unless CUPY_TF32=1."""
    return "tf32 (CUPY_TF32=1)" if os.environ.get("CUPY_TF32", "0") == "1" else "ieee"


def torch_train_step(device: str, batch: int, model, tf32: bool = False):
    """PyTorch's DANN step as a function of the host batch, from minidann ``model``'s weights; None without torch.

    The returned ``train_on(x_host, y_src)`` takes x_host (N, 3, 28, 28) float32 (source rows first) and y_src
    (N // 2,) int labels, as :func:`minidann.dann.train_step` does, copies them to PyTorch (``from_numpy``: no
    copy on the CPU) and runs forward, backward through the GRL (lambd 0.5) and SGD with momentum 0.9 (lr 0.01).
    On a GPU, PyTorch computes in IEEE float32 like minidann unless ``tf32`` (see :func:`set_torch_cuda_float32`).
    """
    try:
        import torch
    except ImportError:
        return None

    dev = "cuda" if device == "gpu" else "cpu"
    if dev == "cuda" and not torch.cuda.is_available():
        return None
    float32 = set_torch_cuda_float32(torch, tf32) if dev == "cuda" else None
    feat, label, domain, grad_reverse = _torch_network(model, dev)
    opt = torch.optim.SGD([p for m in (feat, label, domain) for p in m.parameters()], lr=0.01, momentum=0.9)
    d = torch.cat([torch.zeros(batch // 2), torch.ones(batch - batch // 2)]).long().to(dev)
    ce = torch.nn.functional.cross_entropy

    def train_on(x_host, y_src):
        x = x_host if isinstance(x_host, torch.Tensor) else torch.from_numpy(x_host).to(dev)
        y = y_src if isinstance(y_src, torch.Tensor) else torch.from_numpy(y_src.astype("int64", copy=False)).to(dev)
        opt.zero_grad()
        f = feat(x)
        loss = ce(label(f[: batch // 2]), y) + ce(domain(grad_reverse(f, 0.5)), d)
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    train_on.float32 = float32  # what the benchmark reports of PyTorch's GPU arithmetic
    return train_on


def torch_step(device: str, batch: int, model, seed: int = 0, tf32: bool = False):
    """minidann_step's step in PyTorch, on the same fixed batch (None without torch).

    Starts from minidann ``model``'s weights. On a GPU, PyTorch computes in IEEE float32 like minidann unless
    ``tf32`` (see :func:`set_torch_cuda_float32`).
    """
    train_on = torch_train_step(device, batch, model, tf32)
    if train_on is None:
        return None
    import torch

    x_host, y_src = synthetic_batch(batch, seed)
    dev = "cuda" if device == "gpu" else "cpu"
    x, y = torch.from_numpy(x_host).to(dev), torch.from_numpy(y_src).to(dev)  # on the device once, as minidann's

    def step():
        train_on(x, y)

    step.float32 = train_on.float32
    return step
