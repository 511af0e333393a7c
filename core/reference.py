"""The integer-only reference model (numpy): runs any artifact, no floating point anywhere.

This is the golden model of every later check: the hardware testbenches and the HLS
kernels compare against :func:`run`.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import arith


def _windows(x, kernel, stride):
    """(N, C, H, W) -> (N, C, Ho, Wo, kh, kw) views of every window."""
    return sliding_window_view(x, kernel, axis=(2, 3))[:, :, :: stride[0], :: stride[1]]


def accumulate(layer, x, skip=None):
    """``bias + sum(weight * x)`` of a conv2d/linear layer, int64, shape ``(N, *out_shape)``,
    plus the skip term (:func:`core.arith.skip_term`) of ``skip`` (the output of layer
    ``layer.skip``) when the layer has one."""
    acc = _products(layer, x)
    if layer.has_skip:
        if skip is None:
            raise ValueError(f"layer {layer.name} adds a skip; pass the output of layer {layer.skip}")
        shift = layer.arrays["skip_shift"].reshape((-1,) + (1,) * (acc.ndim - 2))
        acc = acc + arith.skip_term(np.asarray(skip, dtype=np.int64), shift)
    return acc


def _products(layer, x):
    a = layer.arrays
    w = layer.weight  # (O, I[, kh, kw])
    if layer.kind == "linear":
        acc = x @ w.T  # (N, O)
        return acc + a["bias"]
    ph, pw = layer.padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = _windows(xp, layer.kernel, layer.stride)  # (N, C, Ho, Wo, kh, kw)
    n, _, ho, wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, -1)  # (N*Ho*Wo, C*kh*kw)
    acc = cols @ w.reshape(w.shape[0], -1).T  # (N*Ho*Wo, O)
    return acc.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2) + a["bias"][:, None, None]


def run_layer(layer, x, skip=None):
    """One integer layer on a batch ``x`` of shape ``(N, *layer.in_shape)`` (``skip``: the
    output of layer ``layer.skip`` for a layer that adds one)."""
    x = np.asarray(x, dtype=np.int64)
    if layer.kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if layer.kind == "maxpool2d":
        return _windows(x, layer.kernel, layer.stride).max(axis=(4, 5))
    if layer.kind == "avgpool2d":  # the window's sum: its mean at an exponent log2(area) higher
        return _windows(x, layer.kernel, layer.stride).sum(axis=(4, 5))
    acc = accumulate(layer, x, skip)
    shift = layer.arrays["requant"].reshape((-1,) + (1,) * (acc.ndim - 2))
    return arith.requantize(acc, shift, layer.relu, layer.out_bits)


def run(network, inputs, *, batch=256):
    """Every layer's integer output for integer ``inputs`` of shape ``(N, *input_shape)``."""
    inputs = np.asarray(inputs, dtype=np.int64)
    chunks = []
    for start in range(0, inputs.shape[0], batch):
        h = x = inputs[start : start + batch]
        outs = []
        for layer in network.layers:
            h = run_layer(layer, h, skip_input(layer, x, outs))
            outs.append(h)
        chunks.append(outs)
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(network.layers))]


def skip_input(layer, inputs, outs):
    """The tensor ``layer`` adds (``None`` without a skip): ``inputs`` for skip ``-1``, else
    the output of the earlier layer in ``outs``."""
    if not getattr(layer, "has_skip", False):
        return None
    return inputs if layer.skip < 0 else outs[layer.skip]


def predict(network, inputs):
    """Predicted classes (first maximum of the integer logits) and the logits."""
    logits = run(network, inputs)[-1]
    return logits.argmax(axis=1), logits
