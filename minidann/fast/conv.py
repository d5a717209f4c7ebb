"""Fast conv2d (placeholder while the routes move here from minidann.functions.conv)."""

from ..functions.conv import conv2d

__all__ = ["conv2d"]
