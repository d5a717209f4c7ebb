"""Fast max-pool (placeholder while the tiled route moves here from minidann.functions.pool)."""

from ..functions.pool import max_pool2d

__all__ = ["max_pool2d"]
