"""Two networks of one's own, for ``python -m quant.train --model examples.my_nets:NAME``.

A factory takes the image shape ``(C, H, W)`` and the number of classes and returns an
``nn.Sequential`` of ``torch.nn`` layers and :class:`quant.modules.Residual` blocks.
Training records the network as a spec (one entry per layer, in ``config.json`` and the
checkpoint), so export, ``--resume`` and ``--init-from`` rebuild it without this file.
"""

from torch import nn

from quant.modules import Residual


def _out(size, kernel, stride=1, padding=0):
    """Side of a conv or pool output: ``floor((size + 2 * padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def resnet_avg(image_shape, num_classes):
    """A residual CNN with average pooling.

    ``(B, C, H, W)`` -> conv 3x3 (same) -> ``(B, 16, H, W)`` -> 2x2 average pool -> conv 1x1
    -> ``(B, 16, H/2, W/2)`` -> residual block (two same-padded 3x3 convs, the skip added
    before the ReLU) -> 2x2 average pool -> ``(B, 16, H/4, W/4)`` -> flatten -> linear.
    On 3x16x16 that is 16x4x4 = 256 features, on 1x28x28 16x3x3 = 144.  Each average pool
    is folded into the layer after it on the network engine (the 1x1 conv becomes a 2x2 conv
    of stride 2); the 1x1 conv also makes the shortcut start from activation codes, which
    the engine's buffers hold, rather than from a pool's wider sums.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)`` of one image.
    num_classes : int
        Logits.

    Returns
    -------
    nn.Sequential
    """
    c, h, w = image_shape
    width = 16
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AvgPool2d(2),  # a window of 4: the sum is rescaled by a 2-bit shift
        nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        Residual(nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
        )),
        nn.ReLU(),  # requantises conv + skip, as in the ResNet basic block
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(width * (h // 4) * (w // 4), num_classes),
    )


def strided(image_shape, num_classes):
    """A CNN that downsamples by strided convolutions alone, then three linear layers.

    ``(B, C, H, W)`` -> conv 4x4 stride 2 -> conv 3x3 stride 2 -> conv 1x1 (no padding
    anywhere, no pooling) -> flatten -> linear 64 -> dropout -> linear 32 -> linear.
    On 3x16x16 the maps are 16x7x7, 32x3x3 and 32x3x3; on 1x28x28 16x13x13, 32x6x6 and 32x6x6.
    The kernels tile those sizes exactly, so no edge row or column is dropped.  Dropout acts in
    training only; the exported network has no such layer.

    Parameters
    ----------
    image_shape : tuple of int
        ``(C, H, W)`` of one image.
    num_classes : int
        Logits.

    Returns
    -------
    nn.Sequential
    """
    c, h, w = image_shape
    h1, w1 = _out(h, 4, 2), _out(w, 4, 2)
    h2, w2 = _out(h1, 3, 2), _out(w1, 3, 2)
    return nn.Sequential(
        nn.Conv2d(c, 16, 4, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 1), nn.ReLU(),  # a 1x1 conv: a linear layer at every position
        nn.Flatten(),
        nn.Linear(32 * h2 * w2, 64), nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, num_classes),
    )
