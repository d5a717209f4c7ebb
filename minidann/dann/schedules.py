"""The schedules of JMLR p. 21-22: the adaptation factor lambda_p and the learning rate mu_p.

p = (step - 1) / num_steps, steps counted from 1, is the progress of training, from 0 at the first step to
(num_steps - 1) / num_steps at the last (as tf-dann): not an iteration count, so the schedules have the same
shape whatever the number of steps.
"""

from __future__ import annotations

import math


def lambda_schedule(p: float, gamma: float = 10.0) -> float:
    """Adaptation factor lambda_p = 2 / (1 + exp(-gamma p)) - 1.

    It rises from 0 at p = 0 (the domain classifier is noise at the start, so its gradient is kept out of G_f)
    towards 1 (0.99991 at p = 1 with gamma = 10).

    Args:
        p: training progress in [0, 1].
        gamma: steepness (10 in the paper).
    """
    _check_progress(p)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def lr_schedule(p: float, mu0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Learning rate mu_p = mu0 / (1 + alpha p)^beta (0.01 at p = 0, 0.01 / 11^0.75 = 0.00166 at p = 1).

    Args:
        p: training progress in [0, 1].
        mu0, alpha, beta: 0.01, 10 and 0.75 in the paper.
    """
    _check_progress(p)
    return mu0 / (1.0 + alpha * p) ** beta


def _check_progress(p: float) -> None:
    if not 0.0 <= p <= 1.0:  # (NaN fails too) outside [0, 1] the formulas give complex numbers or overflow
        raise ValueError(f"training progress p must lie in [0, 1] (p = (step - 1) / num_steps), got {p}")
