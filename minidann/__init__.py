"""minidann: domain-adversarial training (DANN) from scratch on NumPy and CuPy, for teaching."""

from . import functions
from .backend import GPUUnavailableError, get_array_module, gpu_available, to_device, to_numpy
from .core import Function, Parameter, Tensor, no_grad
from .dispatch import KERNELS, active_kernels, kernels, set_kernels
from .layers import Conv2d, Flatten, GradientReversal, Linear, MaxPool2d, Module, ReLU, Sequential
from .optim import SGD

__version__ = "0.1.0"

__all__ = [
    "SGD", "Conv2d", "Flatten", "Function", "GPUUnavailableError", "KERNELS", "GradientReversal", "Linear", "MaxPool2d",
    "Module", "Parameter", "ReLU", "Sequential", "Tensor", "functions", "get_array_module", "gpu_available",
    "active_kernels", "kernels", "no_grad", "set_kernels", "to_device", "to_numpy",
]
