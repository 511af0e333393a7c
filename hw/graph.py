"""A network's weighted layers as the layer engine runs them: average pools folded into weights.

An average pool gives window *sums* (its mean at an exponent ``log2(area)`` higher, see
:mod:`core.arith`), so the weighted layer after it computes
``sum_w W[w] * sum_{x in window w} a[x] = sum_x W[window(x)] * a[x]``: the same
accumulator, bit for bit, as a layer that reads the pool's *input* with each weight
repeated over its window.  That layer is what the engine runs:

* a convolution after a ``k x k`` pool becomes a convolution with a ``k``-times larger
  kernel, stride and padding, each weight repeated over a ``k x k`` block;
* a linear layer after a pool and a flatten reads the flattened map of the pool's input,
  each weight repeated over its window (inputs that floor mode drops get zero weights);
  a global average pool is the case of one window.

No new hardware and no rounding: the fold only moves the division, which was a shift of
the exponent, into the layer's existing requantiser.  Its accumulator bound is no larger,
since ``A * (2**b - 1) <= 2**(b + log2 A) - 1``.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from core.errors import UserError

#: Per-term weight code arrays (a fold repeats them; the per-channel arrays stay as they are).
CODE_ARRAYS = ("weight_sign", "weight_shift", "weight_zero")


def fold_pool_conv(layer, window, map_shape):
    """The conv2d ``layer`` (reading the sums of ``window`` ``(ky, kx)`` pools, floor mode,
    over the ``map_shape`` ``(C, H, W)`` map) as a conv2d on that map.  The windows reach
    no further than the pooled map did, so floor mode's dropped edge is never read, unless
    the layer pads and the map is not a whole number of windows (refused by the caller)."""
    ky, kx = window
    if tuple(layer.in_shape) != (map_shape[0], map_shape[1] // ky, map_shape[2] // kx):
        raise ValueError(f"{layer.name}: input {layer.in_shape} is not the {window} pooled {map_shape} map")
    arrays = dict(layer.arrays)
    for key in CODE_ARRAYS:  # (terms, O, C, kh, kw) -> (terms, O, C, kh * ky, kw * kx)
        arrays[key] = np.repeat(np.repeat(layer.arrays[key], ky, axis=3), kx, axis=4)
    kh, kw = layer.kernel
    sy, sx = layer.stride
    py, px = layer.padding
    return dataclasses.replace(layer, in_shape=tuple(map_shape), kernel=(kh * ky, kw * kx),
                               stride=(sy * ky, sx * kx), padding=(py * ky, px * kx), arrays=arrays)


def fold_pool_linear(layer, window, map_shape):
    """The linear ``layer`` (reading the flattened sums of ``window`` pools over the
    ``map_shape`` ``(C, H, W)`` map, in floor mode) as a linear layer on that map flattened."""
    ky, kx = window
    c, h, w = map_shape
    hp, wp = h // ky, w // kx
    if layer.in_shape != (c * hp * wp,):
        raise ValueError(f"{layer.name}: input {layer.in_shape} is not the pooled map {(c, hp, wp)} flattened")
    arrays = dict(layer.arrays)
    for key in CODE_ARRAYS:
        a = layer.arrays[key]  # (terms, O, C * hp * wp)
        t, o = a.shape[:2]
        full = np.zeros((t, o, c, h, w), dtype=a.dtype) + (1 if key == "weight_zero" else 0)
        grid = a.reshape(t, o, c, hp, wp)
        full[:, :, :, :hp * ky, :wp * kx] = np.repeat(np.repeat(grid, ky, axis=3), kx, axis=4)
        arrays[key] = full.reshape(t, o, c * h * w)
    return dataclasses.replace(layer, in_shape=(c * h * w,), arrays=arrays)


@dataclass
class EngineLayer:
    """A weighted layer of the artifact as the engine runs it.

    ``layer`` is the artifact's layer with the average pools before it folded in (the
    artifact's own layer where there are none); it reads the output of artifact layer
    ``source`` (``-1``: the network input), which has ``source_shape`` (before any flatten
    in between).  ``index`` is the artifact layer's index.
    """

    index: int
    layer: object
    source: int
    source_shape: tuple


def engine_layers(network):
    """Every weighted layer of ``network`` as the engine runs it (:class:`EngineLayer`), in order.

    Raises :class:`UserError` (naming the layer) for an average pool that no weighted layer
    reads, one followed by a max-pool, or a padded convolution after a pool whose map is not
    a whole number of windows (the padding would read the map's dropped edge).
    """
    layers = network.layers
    out = []
    for i, layer in enumerate(layers):
        if not layer.weighted:
            continue
        # walk back over flattens and average pools to the tensor the layer really reads
        j, pools, flat = i - 1, [], False
        while j >= 0 and layers[j].kind in ("flatten", "avgpool2d"):
            if layers[j].kind == "flatten":
                flat = True
            else:
                if flat and pools:  # pool, flatten, pool cannot happen: a pool needs a map
                    break
                pools.append(layers[j])
            j -= 1
        shape = tuple(network.input_shape) if j < 0 else tuple(layers[j].out_shape)
        folded = layer
        if pools:  # the folded layer reads the first pool's input codes
            folded = dataclasses.replace(_fold(layer, pools[::-1], shape, flat), in_bits=pools[-1].in_bits,
                                         in_exp=pools[-1].in_exp)
        elif flat:
            shape = tuple(layers[i - 1].in_shape)
        out.append(EngineLayer(index=i, layer=folded, source=j, source_shape=shape))
    for i, layer in enumerate(layers):
        if layer.kind == "avgpool2d":
            nxt = next((lay for lay in layers[i + 1:] if lay.kind != "flatten"), None)
            if nxt is None or not (nxt.weighted or nxt.kind == "avgpool2d"):
                raise UserError(f"{layer.name}: an average pool must be followed by a conv2d or linear layer (it is "
                                f"folded into that layer's weights), not by {nxt.kind if nxt else 'nothing'}")
    return out


def _fold(layer, pools, shape, flat):
    """``layer`` after the average pools ``pools`` (first first) over a ``shape`` map."""
    ky = kx = 1
    for p in pools:  # pools of pools: the sums of (ky * k) x (kx * k) windows (floor mode composes)
        if tuple(p.stride) != tuple(p.kernel):
            raise UserError(f"{p.name}: an average pool needs its stride equal to its kernel, not {p.stride}")
        ky, kx = ky * p.kernel[0], kx * p.kernel[1]
    if flat:
        if layer.kind != "linear":
            raise UserError(f"{layer.name}: only a linear layer can follow a flatten")
        return fold_pool_linear(layer, (ky, kx), shape)
    if layer.kind != "conv2d":
        raise UserError(f"{layer.name}: a linear layer after an average pool needs a flatten between them")
    if any(layer.padding) and (shape[1] % ky or shape[2] % kx):
        raise UserError(f"{layer.name}: its padding would read the edge of the {shape[1]}x{shape[2]} map that the "
                        f"{ky}x{kx} average pool before it drops; give the pool a map of whole windows or the conv "
                        "padding 0")
    return fold_pool_conv(layer, (ky, kx), shape)
