"""Gradient checking: every backward pass against central finite differences, in float64.

- :mod:`~minidann.gradcheck.checker`: :func:`check_backward` (check any op, layer or network), the
  :func:`numerical_grad` it is built on, and :func:`rel_error`.
- :mod:`~minidann.gradcheck.cases`: the seeded inputs that keep away from kinks and ties (:func:`away_from_zero`,
  :func:`shuffled_linspace`), the table of every op and layer, and the exact checks of the GRL and the DANN update.
- ``python -m minidann.gradcheck`` (:mod:`~minidann.gradcheck.__main__`) prints the table.
"""

from .cases import away_from_zero, shuffled_linspace
from .checker import check_backward, numerical_grad, rel_error

__all__ = ["away_from_zero", "check_backward", "numerical_grad", "rel_error", "shuffled_linspace"]
