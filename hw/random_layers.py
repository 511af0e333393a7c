"""Random integer layers and inputs within a design's limits, for randomised hardware tests.

The layers are ordinary :class:`quant.artifact.Layer` objects, so the golden model that
checks them is the foundation's :mod:`quant.reference`, the same as for trained networks.
"""

import numpy as np

from quant import arith
from quant.artifact import Layer, conv_out_hw


def random_codes(rng, shape, wbits, terms, p_zero=0.2):
    """``(sign, shift, zero)`` term codes of shape ``(terms, *shape)``."""
    full = (terms,) + tuple(shape)
    sign = rng.integers(0, 2, full)
    shift = rng.integers(0, arith.shift_levels(wbits), full)
    zero = rng.random(full) < p_zero
    return np.where(zero, 0, sign), np.where(zero, 0, shift), zero


def random_layer(rng, *, kind, in_c, out_c, hw=(1, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                 abits=4, wbits=4, terms=1, relu=True, name="layer", extreme=False):
    """A conv2d or linear :class:`~quant.artifact.Layer` with random codes, bias and shifts.

    With ``extreme`` every weight term is the largest shift with one sign, the bias is at
    its bound with the same sign and the requantiser passes the accumulator through: with
    :func:`random_inputs` ``(extreme=True)`` the accumulator's worst case.
    """
    if kind == "linear":
        in_shape, out_shape, wshape = (in_c,), (out_c,), (out_c, in_c)
        geom = {}
    else:
        h, w = hw
        ho, wo = conv_out_hw(h, w, kernel, stride, padding)
        in_shape, out_shape, wshape = (in_c, h, w), (out_c, ho, wo), (out_c, in_c) + tuple(kernel)
        geom = {"kernel": tuple(kernel), "stride": tuple(stride), "padding": tuple(padding)}
    fan_in = int(np.prod(wshape[1:]))
    bound = arith.product_bound(fan_in, abits, wbits, terms)
    if extreme:
        negative = rng.integers(0, 2)
        full = (terms,) + wshape
        sign = np.full(full, negative)
        shift = np.full(full, arith.shift_levels(wbits) - 1)
        zero = np.zeros(full, dtype=bool)
        bias = np.full(out_c, -bound if negative else bound)
    else:
        sign, shift, zero = random_codes(rng, wshape, wbits, terms)
        bias = rng.integers(-bound // 8 - 1, bound // 8 + 1, out_c)
    acc_bits = arith.accumulator_bits(fan_in, abits, wbits, terms)
    if relu:
        requant = rng.integers(0, acc_bits - abits + 2, out_c)
    else:
        requant = -rng.integers(0, 3, out_c)
    if extreme:
        requant[:] = 0  # the accumulator itself reaches the output
    arrays = {
        "weight_sign": sign.astype(np.int64), "weight_shift": shift.astype(np.int64),
        "weight_zero": zero.astype(np.uint8), "exp": np.zeros(out_c, dtype=np.int64),
        "bias": bias.astype(np.int64), "requant": requant.astype(np.int64),
    }
    return Layer(kind=kind, name=name, in_shape=in_shape, out_shape=out_shape, in_bits=abits, in_exp=0,
                 out_bits=abits if relu else None, out_exp=0, relu=relu, wbits=wbits, terms=terms,
                 arrays=arrays, **geom)


def random_inputs(rng, layer, count=1, *, extreme=False):
    """``count`` input samples of ``layer`` (all at the maximum code with ``extreme``)."""
    amax = arith.act_max(layer.in_bits)
    shape = (count,) + tuple(layer.in_shape)
    if extreme:
        return np.full(shape, amax, dtype=np.int64)
    x = rng.integers(0, amax + 1, shape)
    x[rng.random(shape) < 0.05] = amax  # more codes at the maximum than uniform draws give
    return x
