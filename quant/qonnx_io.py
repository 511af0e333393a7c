"""QONNX export of an integer network, and its check on qonnx's own executor.

QONNX (the ONNX dialect of Brevitas, FINN and hls4ml) writes a quantised network as float
ONNX operators with ``Quant`` nodes: ``Quant(x, scale, zeropt, bitwidth)`` clips ``x / scale
+ zeropt`` to the integers of ``bitwidth`` bits, rounds and scales back.  The artifact's
integer contract (:mod:`quant.arith`) maps onto it exactly, with every scale a power of two:

* the input: ``Quant(x, 2**-bits)``, unsigned, rounding half up (the input quantiser);
* a weight: its integer value (a sum of ``terms`` signed powers of two) times ``2**e0`` of
  its output channel, held as an initialiser behind ``Quant(w, 2**e0)``, signed, with the
  bit width of the largest integer;
* a conv2d or linear layer: ``Conv`` / ``Gemm`` on the quantised input and weights with the
  bias ``bias * 2**(e0 - in_exp)``, all exact in float32 (integers below ``2**24`` in the
  accumulator's unit, :func:`quant.arith.float32_exact`);
* the residual add: ``Add`` of the accumulator and ``Quant(skip, 2**(e0 - in_exp))``, whose
  half-up rounding is the skip term's right shift where the skip is finer than the
  accumulator (:func:`quant.arith.skip_term`);
* requantisation with ReLU: ``Relu`` then ``Quant(acc, 2**-out_exp)``, unsigned, ``out_bits``
  bits, rounding half up: the round shift and clamp of :func:`quant.arith.requantize`;
* max-pool, average pool (``AveragePool``: a window's mean, the sum at the exponent the
  artifact gives it) and flatten as themselves;
* the logits: the last accumulator, ``logits * 2**-output_exp``.

So every tensor of the graph, times ``2**exp`` of its layer, is that layer's integer output,
and :func:`check` compares every one with the artifact's golden vectors on
``qonnx.core.onnx_exec``.  The graph takes one image (batch 1, as FINN does).

Needs the ``onnx`` extra (``pip install -e '.[onnx]'``: onnx and qonnx).
"""

import numpy as np

from . import arith
from .errors import UserError
from .fileio import write_atomic

#: The custom-op domain of QONNX's ``Quant``.
QONNX_DOMAIN = "qonnx.custom_op.general"
#: The ONNX opset of the standard operators used.
OPSET = 13
#: The rounding of every ``Quant``: our round-half-up (``floor(x + 0.5)`` for x >= 0).
ROUNDING = "HALF_UP"
INPUT = "x"
OUTPUT = "logits"


def _modules():
    """onnx and qonnx, or one line saying how to get them."""
    try:
        import onnx
        import qonnx  # noqa: F401
    except ImportError:
        raise UserError("QONNX needs the onnx extra (onnx and qonnx); install it with "
                        "`.venv/bin/pip install -e '.[onnx]'` (make test does)") from None
    return onnx


class _Graph:
    """Nodes and initialisers of the graph being written."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.inits = onnx, [], []

    def const(self, name, value):
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def quant(self, x, out, scale, bits, signed):
        """``Quant(x, scale)`` with ``bits`` bits, rounding half up."""
        inputs = [x, self.const(f"{out}.scale", scale), self.const(f"{out}.zeropt", 0.0),
                  self.const(f"{out}.bitwidth", float(bits))]
        self.nodes.append(self.onnx.helper.make_node("Quant", inputs, [out], name=out, domain=QONNX_DOMAIN,
                                                     signed=int(signed), narrow=0, rounding_mode=ROUNDING))
        return out


def _channel(values, ndim):
    """Per-output-channel values shaped to broadcast over a ``ndim``-dimensional tensor on axis 1."""
    return np.asarray(values, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def to_model(network):
    """The QONNX ``ModelProto`` of ``network`` (a :class:`quant.artifact.Network`) and the
    exponent of every layer's output tensor (its name is the layer's name; the last is
    :data:`OUTPUT`), as ``[(tensor, exp), ...]``."""
    onnx = _modules()
    from onnx import TensorProto, helper

    g = _Graph(onnx)
    bits = network.input_bits
    cur = g.quant(INPUT, "input_quant", 2.0**-bits, bits, signed=False)
    exp = network.input_exp
    names = {-1: (cur, exp)}  # layer index -> (tensor, exponent) of its output
    taps = []
    last = len(network.layers) - 1
    for i, layer in enumerate(network.layers):
        out = OUTPUT if i == last else layer.name
        if layer.kind == "flatten":
            cur = g.node("Flatten", [cur], out, axis=1)
        elif layer.kind == "maxpool2d":
            cur = g.node("MaxPool", [cur], out, kernel_shape=list(layer.kernel), strides=list(layer.stride))
        elif layer.kind == "avgpool2d":
            cur = g.node("AveragePool", [cur], out, kernel_shape=list(layer.kernel), strides=list(layer.stride))
            exp = layer.out_exp
        else:
            cur, exp = _weighted(g, layer, cur, names, out)
        names[i] = (cur, exp)
        taps.append((cur, exp))
    shape = [1] + list(network.input_shape)
    graph = helper.make_graph(g.nodes, "shiftnn", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, network.num_classes])],
                              g.inits)
    model = helper.make_model(graph, producer_name="shiftnn",
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    return _infer_shapes(model), taps


def _weighted(g, layer, x, names, out):
    """A conv2d/linear layer on tensor ``x``; returns its output tensor and exponent."""
    a = layer.arrays
    conv = layer.kind == "conv2d"
    e0 = a["exp"].astype(np.float64)
    w_int = layer.weight.astype(np.float64)  # (O, I[, kh, kw])
    w_bits = max(2, arith.signed_bits(int(np.abs(w_int).max())))
    w_scale = np.exp2(e0).reshape((-1,) + (1,) * (w_int.ndim - 1))
    w = g.quant(g.const(f"{layer.name}.weight", w_int * w_scale), f"{layer.name}.weight_quant", w_scale, w_bits,
                signed=True)
    unit = np.exp2(e0 - layer.in_exp)  # the accumulator's unit, per output channel
    bias = g.const(f"{layer.name}.bias", a["bias"] * unit)
    acc = f"{layer.name}.acc"
    if conv:
        ph, pw = layer.padding
        g.node("Conv", [x, w, bias], acc, kernel_shape=list(layer.kernel), strides=list(layer.stride),
               pads=[ph, pw, ph, pw])
    else:
        g.node("Gemm", [x, w, bias], acc, transB=1)
    ndim = 4 if conv else 2
    if layer.has_skip:
        skip, _ = names[layer.skip]
        skip_left = max(0, int(a["skip_shift"].max()))
        term = g.quant(skip, f"{layer.name}.skip_quant", _channel(unit, ndim),
                       (arith.act_max(layer.skip_bits) << skip_left).bit_length(), signed=False)
        acc = g.node("Add", [acc, term], f"{layer.name}.sum")
    if not layer.relu:
        return g.node("Identity", [acc], out), layer.out_exp
    relu = g.node("Relu", [acc], f"{layer.name}.relu")
    return g.quant(relu, out, 2.0**-layer.out_exp, layer.out_bits, signed=False), layer.out_exp


def _infer_shapes(model):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    return ModelWrapper(model).transform(InferShapes()).model


def save(path, network):
    """Write ``network`` as a QONNX file at ``path`` (atomically); returns the layer taps."""
    onnx = _modules()
    model, taps = to_model(network)
    onnx.checker.check_model(model)
    write_atomic(path, lambda tmp: onnx.save(model, tmp))
    return taps


def run(path, network, inputs):
    """Every layer's output on qonnx's executor for integer ``inputs`` ``(N, *input_shape)``, as
    integers (each tensor times ``2**exp``), one image at a time.  Raises ``RuntimeError`` if a
    tensor is not a whole number there."""
    onnx = _modules()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    model = ModelWrapper(onnx.load(path))
    _, taps = to_model(network)
    outs = [[] for _ in taps]
    for codes in np.asarray(inputs, dtype=np.int64):
        x = (codes * 2.0**-network.input_bits).astype(np.float32)[None]  # exactly the codes' values
        ctx = execute_onnx(model, {INPUT: x}, return_full_exec_context=True)
        for k, (name, exp) in enumerate(taps):
            v = ctx[name].astype(np.float64)[0] * 2.0**exp
            if not np.array_equal(v, np.rint(v)):
                raise RuntimeError(f"qonnx tensor {name} is not whole in units of 2**-{exp}")
            outs[k].append(np.rint(v).astype(np.int64))
    return [np.stack(o) for o in outs]


def check(path, artifact, samples=None):
    """Compare every layer's output on qonnx's executor with the artifact's golden vectors.

    Returns ``(images, values, mismatches, first)`` where ``first`` names the first layer that
    differs (``None`` when none does)."""
    gold = artifact.golden
    n = len(gold.inputs) if samples is None else min(samples, len(gold.inputs))
    got = run(path, artifact.network, gold.inputs[:n])
    values = mismatches = 0
    first = None
    for layer, g, want in zip(artifact.network.layers, got, gold.outputs):
        want = want[:n].reshape(g.shape)
        bad = int(np.count_nonzero(g != want))
        values += want.size
        mismatches += bad
        if bad and first is None:
            first = layer.name
    return n, values, mismatches, first
