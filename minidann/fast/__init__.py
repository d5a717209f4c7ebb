"""The fast layer: kernels that compute the same functions as :mod:`minidann.functions`, faster.

Chosen by one switch, :func:`minidann.kernels` (``"fast"``, the default for training, or ``"reference"``).
Every route here is tested equal to its reference op, forward and every gradient.

- :mod:`~minidann.fast.conv`, :mod:`~minidann.fast.pool`: other routes on both devices.
- :mod:`~minidann.fast.fused`: fused GPU kernels beside their NumPy twins, taken on a GPU by
  :mod:`~minidann.fast.pool`, :mod:`~minidann.fast.activation` (ReLU), :mod:`~minidann.fast.loss`
  (cross-entropy), :mod:`~minidann.optim` (the momentum update) and :mod:`~minidann.fast.batch_copy` (a batch's
  one copy to the GPU and its preprocessing there); :mod:`~minidann.fast.linear` writes weight gradients into
  the optimizer's buffer on a GPU. On the CPU these are the reference ops.
- :mod:`~minidann.fast.parallel`, :mod:`~minidann.fast.tuning`: the CPU step as two halves on two cores, and
  the memory and BLAS settings it runs under.
"""
