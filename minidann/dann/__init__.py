"""DANN for MNIST -> MNIST-M, one concept per module.

- :mod:`.model`: the network G_f, G_y, G_d (JMLR Fig. 4a) and its SGD optimizer;
- :mod:`.schedules`: lambda_p and mu_p as functions of the training progress p;
- :mod:`.preprocessing`: tf-dann's preprocessing and the domain labels;
- :mod:`.step`: one training step, forward, backward and update;
- :mod:`.evaluation`: predictions, features and accuracies on whole test sets.
"""

from .evaluation import evaluate, extract_features, predict
from .model import DANN, FEATURE_DIM, INIT_BIAS, INIT_STD, build_model, build_optimizer
from .preprocessing import domain_labels, pixel_mean, prepare_mnist, prepare_mnistm, preprocess
from .schedules import lambda_schedule, lr_schedule
from .step import MODES, StepStats, batch_rows, forward_backward, halves_evenly, train_step

__all__ = [
    "DANN", "FEATURE_DIM", "INIT_BIAS", "INIT_STD", "MODES", "StepStats", "batch_rows", "build_model",
    "build_optimizer", "domain_labels", "evaluate", "extract_features", "forward_backward", "halves_evenly",
    "lambda_schedule", "lr_schedule", "pixel_mean", "predict", "preprocess", "prepare_mnist", "prepare_mnistm",
    "train_step",
]
