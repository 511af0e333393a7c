"""Random integer layers and inputs within a design's limits, for randomised hardware tests.

The layers are ordinary :class:`core.artifact.Layer` objects, so the golden model that
checks them is the foundation's :mod:`core.reference`, the same as for trained networks.
"""

import numpy as np

from core import arith
from core.artifact import Layer, conv_out_hw


def random_codes(rng, shape, wbits, terms, p_zero=0.2):
    """``(sign, shift, zero)`` term codes of shape ``(terms, *shape)``."""
    full = (terms,) + tuple(shape)
    sign = rng.integers(0, 2, full)
    shift = rng.integers(0, arith.shift_levels(wbits), full)
    zero = rng.random(full) < p_zero
    return np.where(zero, 0, sign), np.where(zero, 0, shift), zero


def random_layer(rng, *, kind, in_c, out_c, hw=(1, 1), kernel=(3, 3), stride=(1, 1), padding=(1, 1),
                 abits=4, wbits=4, terms=1, relu=True, name="layer", extreme=False):
    """A conv2d or linear :class:`~core.artifact.Layer` with random codes, bias and shifts.

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


def add_random_skip(rng, layer, shifts=(-3, 3)):
    """Make ``layer`` (with ReLU) add a skip from the network input (``-1``), of
    ``layer.in_bits`` bits, with per-channel shifts drawn from ``shifts`` (inclusive);
    returns the layer.  Its golden output then needs the skip tensor (:func:`random_skip`)."""
    layer.skip, layer.skip_bits, layer.skip_exp = -1, layer.in_bits, 0
    layer.arrays["skip_shift"] = rng.integers(shifts[0], shifts[1] + 1, layer.out_shape[0]).astype(np.int64)
    return layer


def random_skip(rng, layer, count=1, *, extreme=False):
    """``count`` random skip tensors (``layer.out_shape`` codes of ``layer.skip_bits`` bits;
    all at the maximum with ``extreme``)."""
    amax = arith.act_max(layer.skip_bits)
    if extreme:
        return np.full((count,) + tuple(layer.out_shape), amax, dtype=np.int64)
    x = rng.integers(0, amax + 1, (count,) + tuple(layer.out_shape))
    x[rng.random(x.shape) < 0.05] = amax
    return x


def random_inputs(rng, layer, count=1, *, extreme=False):
    """``count`` input samples of ``layer`` (all at the maximum code with ``extreme``)."""
    amax = arith.act_max(layer.in_bits)
    shape = (count,) + tuple(layer.in_shape)
    if extreme:
        return np.full(shape, amax, dtype=np.int64)
    x = rng.integers(0, amax + 1, shape)
    x[rng.random(shape) < 0.05] = amax  # more codes at the maximum than uniform draws give
    return x


def random_network(rng, layers, input_shape, *, abits=4, wbits=4, terms=1, num_classes=10):
    """A random integer :class:`~core.artifact.Network` of the layers described, with
    consistent exponents, for tests of every stage on graphs no training has to make.

    ``layers`` lists tuples: ``("conv", out_c, kernel, stride, padding)``,
    ``("skipconv", kernel, padding, source)`` (a conv2d keeping its input's channels and
    size that adds the output of layer ``source``; ``-1`` is the input),
    ``("maxpool", k)``, ``("avgpool", k)`` (``k`` ``None``: the whole map), ``("flatten",)``,
    ``("linear", out)``.  The last weighted layer is the logits (no ReLU; its ``out`` is
    ``num_classes``).
    """
    from core.artifact import Network

    shape, bits, exp = tuple(input_shape), abits, abits
    tensors = {-1: (shape, bits, exp)}
    last_weighted = max(i for i, d in enumerate(layers) if d[0] in ("conv", "skipconv", "linear"))
    out = []
    for i, d in enumerate(layers):
        kind = d[0]
        name = f"{kind}{i}"
        if kind in ("maxpool", "avgpool"):
            k = (shape[1], shape[2]) if d[1] is None else (d[1], d[1])
            oshape = (shape[0],) + conv_out_hw(shape[1], shape[2], k, k, (0, 0))
            lay = Layer(kind=f"{kind}2d", name=name, in_shape=shape, out_shape=oshape, kernel=k, stride=k,
                        padding=(0, 0))
            if kind == "avgpool":
                lay.in_bits, lay.in_exp = bits, exp
                bits, exp = bits + lay.pool_log2, exp + lay.pool_log2
                lay.out_bits, lay.out_exp = bits, exp
        elif kind == "flatten":
            oshape = (int(np.prod(shape)),)
            lay = Layer(kind="flatten", name=name, in_shape=shape, out_shape=oshape)
        else:
            relu = i != last_weighted
            if kind == "linear":
                out_c = d[1] if relu else num_classes
                lay = random_layer(rng, kind="linear", in_c=shape[0], out_c=out_c, abits=abits, wbits=wbits,
                                   terms=terms, relu=relu, name=name)
            else:
                out_c, k, s, p = (shape[0], d[1], 1, d[2]) if kind == "skipconv" else d[1:5]
                lay = random_layer(rng, kind="conv2d", in_c=shape[0], out_c=out_c, hw=shape[1:], kernel=(k, k),
                                   stride=(s, s), padding=(p, p), abits=abits, wbits=wbits, terms=terms, relu=relu,
                                   name=name)
            lay.in_shape, lay.in_bits, lay.in_exp = shape, bits, exp
            a = lay.arrays
            fan_in = int(np.prod(a["weight_sign"].shape[2:]))
            a["bias"] = np.clip(a["bias"], -arith.product_bound(fan_in, bits, wbits, terms) // 8,
                                arith.product_bound(fan_in, bits, wbits, terms) // 8)
            if relu:
                lay.out_exp = int(rng.integers(abits - 1, abits + 2))
                # shifts that keep the codes spread: about the bits an output's sum takes
                spread = arith.signed_bits(arith.product_bound(fan_in, bits, wbits, terms)) - abits
                a["requant"] = rng.integers(max(0, spread // 2 - 1), max(1, spread // 2 + 3), out_c)
            else:
                lay.out_exp = int(exp + 2)
                a["requant"] = -rng.integers(0, 3, out_c)
            a["exp"] = (exp - lay.out_exp - a["requant"]).astype(np.int64)
            if kind == "skipconv":
                src = d[3]
                lay.skip = src
                _, lay.skip_bits, lay.skip_exp = tensors[src]
                a["skip_shift"] = (exp - a["exp"] - lay.skip_exp).astype(np.int64)
            oshape = lay.out_shape
            bits, exp = (lay.out_bits, lay.out_exp) if relu else (None, lay.out_exp)
        out.append(lay)
        shape = oshape
        tensors[i] = (shape, bits, exp)
    return Network(input_shape=tuple(input_shape), input_bits=abits, layers=out, num_classes=num_classes)


#: Small graphs of every form the engines run, for :func:`random_network` (layers, input shape).
GRAPHS = {
    # a residual CNN with a global average pool on 3-channel images: a two-conv block (a third
    # buffer keeps its shortcut) and a one-conv block (its input written into two buffers)
    "residual-gap": ([("conv", 8, 3, 1, 1), ("maxpool", 2), ("conv", 8, 3, 1, 1), ("skipconv", 3, 1, 1),
                      ("skipconv", 1, 0, 3), ("avgpool", None), ("flatten",), ("linear", 10)], (3, 8, 8)),
    # a shortcut from the network input (not packed), a 2x2 average pool before a conv
    "input-skip-avgpool": ([("skipconv", 3, 1, -1), ("avgpool", 2), ("conv", 6, 3, 1, 1), ("flatten",),
                            ("linear", 10)], (4, 6, 6)),
    # stride-2 convolutions with no pool, then linear layers in a row
    "strided": ([("conv", 6, 3, 2, 0), ("conv", 8, 2, 2, 0), ("flatten",), ("linear", 12), ("linear", 7),
                 ("linear", 10)], (3, 11, 11)),
    # more input channels than the array has rows: the packer writes channel blocks
    "wide-input": ([("conv", 4, 3, 1, 1), ("maxpool", 2), ("flatten",), ("linear", 10)], (11, 4, 4)),
    # an MLP: the first layer a linear over the flattened image
    "mlp": ([("flatten",), ("linear", 9), ("linear", 10)], (3, 4, 4)),
}
