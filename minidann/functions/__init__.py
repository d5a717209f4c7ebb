"""Every op with a hand-written backward pass. Each is a Function class plus a lowercase function."""

from .activation import relu, sigmoid
from .basic import add, batch_slice, concat, flatten, linear, mean, mul, reshape, sum
from .conv import col2im, conv2d, im2col
from .grl import grad_reverse
from .loss import softmax_cross_entropy
from .pool import max_pool2d

__all__ = [
    "add", "batch_slice", "col2im", "concat", "conv2d", "flatten", "grad_reverse", "im2col", "linear",
    "max_pool2d", "mean", "mul", "relu", "reshape", "sigmoid", "softmax_cross_entropy", "sum",
]
