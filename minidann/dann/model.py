"""The DANN network of the MNIST -> MNIST-M experiment (JMLR Fig. 4a; tf-dann) and its optimizer.

The network shares one feature vector f = G_f(x) between two heads::

    x (N, 3, 28, 28) -> G_f: conv 5x5 3->32 pad 2, ReLU, max-pool 2x2, conv 5x5 32->48 pad 2, ReLU, max-pool 2x2,
                             flatten                                             -> f (N, 2352 = 48 * 7 * 7)
                             (built as conv, max-pool, ReLU: the same function and gradients, see DANN)
    f[:n_src]        -> G_y: fc 100, ReLU, fc 100, ReLU, fc 10                  -> label logits  (n_src, 10)
    f                -> G_d: GRL(lambd), fc 100, ReLU, fc 2                      -> domain logits (N, 2)
"""

from __future__ import annotations

import numpy as np

from ..core import Tensor
from ..layers import Conv2d, Flatten, GradientReversal, Linear, MaxPool2d, Module, ReLU, Sequential
from ..optim import SGD

#: Length of f = G_f(x) for a 28x28 input: 48 maps of 7x7 (SAME padding keeps 28 -> 28 -> 14 -> 14 -> 7).
FEATURE_DIM = 48 * 7 * 7

#: tf-dann's initialisation: weights from a normal with std 0.1 truncated at 2 std, every bias 0.1.
INIT_STD = 0.1
INIT_BIAS = 0.1


class DANN(Module):
    """G_f, G_y and G_d of the MNIST -> MNIST-M network, initialised as tf-dann does.

    Weights are truncated-normal with std 0.1 and biases 0.1 (tf-dann's ``weight_variable`` and
    ``bias_variable``), drawn on the host from ``rng`` in a fixed order (conv1, conv2, G_y, G_d), so the same
    seed gives the same model on the CPU and on the GPU.

    The paper's blocks are conv, ReLU, max-pool; here the ReLU comes after the pool. That is the same function
    with the same gradients, at a quarter of the ReLU's work: ReLU never lowers an order (a <= b gives
    relu(a) <= relu(b)), so max(relu(a), relu(b), ...) = relu(max(a, b, ...)). Backward agrees too: where a
    window's maximum is positive both orders route the gradient to the same first winner; where it is <= 0 the
    ReLU's zero slope stops it in both. (``tests/test_dann.py`` checks both orders bit for bit.)

    Args:
        rng: the run's host generator.

    Attributes:
        feature_extractor: G_f, x (N, 3, 28, 28) -> f (N, 2352).
        label_predictor: G_y, f (N, 2352) -> label logits (N, 10).
        domain_classifier: G_d, GRL then f (N, 2352) -> domain logits (N, 2); domain 0 is the source.
    """

    def __init__(self, rng: np.random.Generator):
        super().__init__()
        init = {"rng": rng, "weight_std": INIT_STD, "bias_init": INIT_BIAS}
        self.feature_extractor = Sequential(
            Conv2d(3, 32, 5, stride=1, pad=2, **init), MaxPool2d(2, 2), ReLU(),   # (N, 32, 14, 14)
            Conv2d(32, 48, 5, stride=1, pad=2, **init), MaxPool2d(2, 2), ReLU(),  # (N, 48, 7, 7)
            Flatten(),                                                            # (N, 2352)
        )
        self.label_predictor = Sequential(
            Linear(FEATURE_DIM, 100, **init), ReLU(), Linear(100, 100, **init), ReLU(), Linear(100, 10, **init),
        )
        # The GRL is the first layer of G_d: it sits between the shared features and the domain classifier,
        # so only the gradient flowing from L_d into G_f is reversed and scaled.
        self.domain_classifier = Sequential(
            GradientReversal(0.0), Linear(FEATURE_DIM, 100, **init), ReLU(), Linear(100, 2, **init),
        )

    @property
    def grl(self) -> GradientReversal:
        """The gradient reversal layer; set ``model.grl.lambd`` to lambda_p before each DANN step."""
        return self.domain_classifier[0]

    @property
    def num_classes(self) -> int:
        """K, the number of classes G_y tells apart (10 digits): the width of its last layer."""
        return self.label_predictor[-1].b.shape[0]

    def features(self, x) -> Tensor:
        """f = G_f(x): x (N, 3, 28, 28) float32 -> (N, 2352)."""
        return self.feature_extractor(x if isinstance(x, Tensor) else Tensor(x))

    def forward(self, x) -> Tensor:
        """Label logits G_y(G_f(x)): x (N, 3, 28, 28) -> (N, 10)."""
        return self.label_predictor(self.features(x))


def build_model(rng: np.random.Generator, device: str = "cpu") -> DANN:
    """A fresh :class:`DANN` drawn from ``rng`` on the host, then moved to ``device`` ('cpu' or 'gpu')."""
    return DANN(rng).to(device)


def build_optimizer(model: Module, lr: float = 0.01, momentum: float = 0.9) -> SGD:
    """SGD with momentum 0.9 over every parameter (tf-dann's MomentumOptimizer; no weight decay)."""
    return SGD(model.parameters(), lr=lr, momentum=momentum)
