"""minidann: domain-adversarial training (DANN) from scratch on NumPy and CuPy, for teaching."""

from . import functions
from .backend import GPUUnavailableError, get_array_module, gpu_available, keep_freed_host_memory, to_device, to_numpy
from .core import Function, Parameter, Tensor, no_grad
from .layers import Conv2d, Flatten, GradientReversal, Linear, MaxPool2d, Module, ReLU, Sequential
from .optim import SGD

__version__ = "0.1.0"

# Training steps allocate and free the same arrays over and over: let malloc keep them (see the docstring).
keep_freed_host_memory()

__all__ = [
    "SGD", "Conv2d", "Flatten", "Function", "GPUUnavailableError", "GradientReversal", "Linear", "MaxPool2d",
    "Module", "Parameter", "ReLU", "Sequential", "Tensor", "functions", "get_array_module", "gpu_available",
    "no_grad", "to_device", "to_numpy",
]
