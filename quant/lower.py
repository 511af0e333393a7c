"""Lower a trained :class:`quant.layers.QuantNet` to the integer :class:`core.artifact.Network`.

Also reads the fake-quantised PyTorch forward at the same points as integers, which is
where the golden vectors come from.
"""

import numpy as np
import torch
from torch import nn

from core import arith
from core.artifact import Golden, Layer, Network, conv_out_hw
from core.errors import UserError

from .layers import IntAvgPool2d, IntMaxPool2d, QuantConv2d, QuantInput, QuantLinear, QuantNet, QuantReLU
from .quantizers import quantize_input


_SHORT = {QuantConv2d: "conv", QuantLinear: "fc", IntMaxPool2d: "pool", IntAvgPool2d: "avgpool", nn.Flatten: "flatten"}


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def lower(qnet, input_shape, num_classes):
    """The integer network ``qnet`` computes in eval mode.

    Returns
    -------
    network : Network
    taps : list of (int, int)
        For each integer layer, the index in ``qnet.body`` whose output equals that layer's
        output times ``2**-exp``, and ``exp``.
    """
    if not isinstance(qnet, QuantNet):
        raise UserError(f"can only lower a QuantNet (from quantize_model), not {type(qnet).__name__}")
    body = list(qnet.body)
    if not body or not isinstance(body[0], QuantInput):
        raise UserError("a QuantNet must start with a QuantInput")
    shape, bits, exp = tuple(input_shape), body[0].bits, body[0].exp
    network_input_shape = tuple(input_shape)
    layers, taps = [], []
    produced = {0: -1}  # body index -> the integer layer whose output it is (-1: the input)
    info = {-1: (bits, exp)}  # integer layer -> (bits, exp) of its output
    i = 1
    while i < len(body):
        m = body[i]
        name = f"{_SHORT.get(type(m), type(m).__name__.lower())}{len(layers)}"
        if bits is None:
            raise UserError(f"layer {i} ({type(m).__name__}) follows the logits layer; the logits layer must be last")
        if isinstance(m, (QuantConv2d, QuantLinear)):
            relu = i + 1 < len(body) and isinstance(body[i + 1], QuantReLU)
            with torch.no_grad():
                codes, b_int = m.integer_params()
            e0 = codes.e0.numpy().astype(np.int64)
            wq = m.weight_quant
            levels = arith.shift_levels(wq.wbits)
            if codes.sign is None:
                sign, shift, zero = arith.csd_codes(codes.value.numpy().astype(np.int64), wq.terms, levels)
            else:
                sign, shift, zero = (t.numpy() for t in (codes.sign, codes.shift, codes.zero))
            if relu:
                act = body[i + 1]
                out_bits, out_exp, tap = act.bits, int(act.exp), i + 1
            else:
                out_bits, out_exp, tap = None, int(np.max(exp - e0)), i
            layer = Layer(kind="conv2d" if isinstance(m, QuantConv2d) else "linear", name=name,
                          in_shape=shape, out_shape=None, in_bits=bits, in_exp=exp, out_bits=out_bits,
                          out_exp=out_exp, relu=relu, wbits=wq.wbits, terms=wq.terms)
            if isinstance(m, QuantConv2d):
                if len(shape) != 3:
                    raise UserError(f"{name} needs a (C, H, W) input, got shape {shape}")
                layer.kernel, layer.stride, layer.padding = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
                layer.out_shape = (m.out_channels,) + conv_out_hw(shape[1], shape[2], layer.kernel, layer.stride,
                                                                  layer.padding)
            else:
                if len(shape) != 1:
                    raise UserError(f"{name} needs a flat input, got shape {shape}; add a Flatten")
                layer.out_shape = (m.out_features,)
            layer.arrays = {
                "weight_sign": sign.astype(np.int64), "weight_shift": shift.astype(np.int64),
                "weight_zero": zero.astype(np.uint8), "exp": e0, "bias": b_int.numpy().astype(np.int64),
                "requant": exp - e0 - out_exp,
            }
            if m.skip_source is not None:
                src = produced[m.skip_source]
                skip_bits, skip_exp = info[src]
                src_shape = tuple(network_input_shape if src < 0 else layers[src].out_shape)
                if src_shape != tuple(layer.out_shape):
                    raise UserError(f"layer {m.user_index} ({type(m).__name__}): the residual add needs both branches "
                                    f"of the same shape, not {tuple(layer.out_shape)} and {src_shape}")
                layer.skip, layer.skip_bits, layer.skip_exp = src, skip_bits, int(skip_exp)
                layer.arrays["skip_shift"] = (exp - e0 - int(skip_exp)).astype(np.int64)
            arith.check_accumulator(name, layer.arith.acc_bits)
            shape = layer.out_shape
            bits, exp = (out_bits, out_exp) if relu else (None, out_exp)
            i = tap
        elif isinstance(m, IntMaxPool2d):
            k, s = _pair(m.kernel_size), _pair(m.stride)
            layer = Layer(kind="maxpool2d", name=name, in_shape=shape, kernel=k, stride=s, padding=(0, 0),
                          out_shape=(shape[0],) + conv_out_hw(shape[1], shape[2], k, s, (0, 0)))
            shape, tap = layer.out_shape, i
        elif isinstance(m, IntAvgPool2d):
            if len(shape) != 3:
                raise UserError(f"layer {m.user_index} (average pool) needs a (C, H, W) input, got shape {shape}")
            k = m.window(shape)
            log2a = m._log2(k)
            if m.kernel_size is None:
                # a global pool learns its area in a forward pass, which a network fresh from its
                # checkpoint has not had; the next weighted layer's input exponent needs it
                m.log2_area = log2a
            layer = Layer(kind="avgpool2d", name=name, in_shape=shape, kernel=k, stride=k, padding=(0, 0),
                          out_shape=(shape[0],) + conv_out_hw(shape[1], shape[2], k, k, (0, 0)),
                          in_bits=bits, in_exp=exp, out_bits=bits + log2a, out_exp=exp + log2a)
            shape, tap = layer.out_shape, i
            bits, exp = bits + log2a, exp + log2a
        elif isinstance(m, nn.Flatten):
            layer = Layer(kind="flatten", name=name, in_shape=shape, out_shape=(int(np.prod(shape)),))
            shape, tap = layer.out_shape, i
        else:
            raise UserError(f"layer {i} ({type(m).__name__}) has no integer form")
        layers.append(layer)
        taps.append((tap, exp))
        for j in range(i, tap + 1):
            produced[j] = len(layers) - 1
        info[len(layers) - 1] = (bits, exp)
        i += 1
    if not layers or not layers[-1].weighted or layers[-1].relu:
        raise UserError("the network must end in a linear or conv layer without ReLU (the logits)")
    return Network(input_shape=tuple(input_shape), input_bits=body[0].bits, layers=layers,
                   num_classes=num_classes), taps


@torch.no_grad()
def fake_quant_outputs(qnet, taps, x):
    """Every integer layer's output as read off the fake-quantised PyTorch forward.

    Returns a list of float64 arrays holding ``output * 2**exp``; they are whole numbers
    exactly when PyTorch computed the integer arithmetic exactly.
    """
    was = qnet.training
    qnet.eval()
    outs = qnet.run(x, listed=True)
    qnet.train(was)
    return [outs[tap].double().numpy() * 2.0**exp for tap, exp in taps]


def golden_vectors(qnet, taps, network, x, labels):
    """Golden vectors from the PyTorch model: input codes and each layer's outputs, as integers.

    Raises
    ------
    RuntimeError
        If PyTorch's fake-quantised outputs are not whole numbers (the integer contract broke).
    """
    outs = fake_quant_outputs(qnet, taps, x)
    ints = []
    for layer, out in zip(network.layers, outs):
        r = np.rint(out)
        if not np.array_equal(r, out):
            raise RuntimeError(f"PyTorch output of {layer.name} is not integral: the fake-quantised forward broke")
        ints.append(r.astype(np.int64))
    inputs = quantize_input(x, network.input_bits).numpy().astype(np.int64)
    return Golden(inputs=inputs, outputs=ints, labels=np.asarray(labels, dtype=np.int64))
