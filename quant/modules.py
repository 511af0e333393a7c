"""Modules a user puts in a float model beyond ``torch.nn``'s own: the residual block.

A user's network is an ``nn.Sequential`` of ``torch.nn`` layers and :class:`Residual`
blocks; :func:`quant.layers.quantize_model` turns it into the integer-exact network.
"""

from torch import nn


class Residual(nn.Module):
    """``block(x) + x``: an identity shortcut around ``block``.

    For the add to stay a shift and an add in hardware, ``block`` ends in a ``Conv2d`` or
    ``Linear`` (optionally with its BatchNorm) and a ``ReLU`` follows the ``Residual``: the
    shortcut is then added, rescaled by a power of two, into that last layer's accumulator,
    and the ReLU's quantiser requantises the sum (the ResNet basic block,
    ``relu(bn(conv(h)) + x)``).  ``block`` keeps the shape of ``x``.

    Parameters
    ----------
    block : nn.Module
        The residual branch, usually an ``nn.Sequential``.
    """

    def __init__(self, block):
        super().__init__()
        if not isinstance(block, nn.Module):
            raise TypeError(f"block must be an nn.Module, not {block!r}")
        self.block = block

    def forward(self, x):
        return self.block(x) + x
