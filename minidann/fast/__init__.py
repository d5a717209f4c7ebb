"""The fast layer: kernels that compute the same functions as :mod:`minidann.functions`, faster.

Chosen by one switch, :func:`minidann.kernels` (``"fast"``, the default for training, or ``"reference"``).
Every route here is tested equal to its reference op, forward and every gradient.
"""
