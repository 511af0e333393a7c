"""QONNX export of an integer network, and its check on qonnx's own executor.

QONNX (the ONNX dialect of Brevitas, FINN and hls4ml) writes a quantised network as float
ONNX operators with ``Quant`` nodes: ``Quant(x, scale, zeropt, bitwidth)`` clips ``x / scale
+ zeropt`` to the integers of ``bitwidth`` bits, rounds and scales back.  The artifact's
integer contract (:mod:`core.arith`) maps onto it exactly, with every scale a power of two:

* the input: ``Quant(x, 2**-bits)``, unsigned, rounding half up (the input quantiser);
* a weight: its integer value (a sum of ``terms`` signed powers of two) times ``2**e0`` of
  its output channel, held as an initialiser behind ``Quant(w, 2**e0)``, signed, with the
  bit width of the largest integer;
* a conv2d or linear layer: ``Conv`` / ``Gemm`` on the quantised input and weights with the
  bias ``bias * 2**(e0 - in_exp)``, all exact in float32 (integers below ``2**24`` in the
  accumulator's unit, :func:`core.arith.float32_exact`);
* the residual add: ``Add`` of the accumulator and ``Quant(skip, 2**(e0 - in_exp))``, whose
  half-up rounding is the skip term's right shift where the skip is finer than the
  accumulator (:func:`core.arith.skip_term`);
* requantisation with ReLU: ``Relu`` then ``Quant(acc, 2**-out_exp)``, unsigned, ``out_bits``
  bits, rounding half up: the round shift and clamp of :func:`core.arith.requantize`;
* max-pool, average pool (``AveragePool``: a window's mean, the sum at the exponent the
  artifact gives it) and flatten as themselves;
* the logits: the last accumulator, ``logits * 2**-output_exp``.

So every tensor of the graph, times ``2**exp`` of its layer, is that layer's integer output,
and :func:`check` compares every one with the artifact's golden vectors on
``qonnx.core.onnx_exec``.  The graph takes one image (batch 1, as FINN does).

Needs the ``onnx`` extra (``pip install -e '.[onnx]'``: onnx and qonnx).
"""

import numpy as np

from core import arith
from core.errors import UserError
from core.fileio import write_atomic

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
    """The QONNX ``ModelProto`` of ``network`` (a :class:`core.artifact.Network`) and the
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


# --- import ---------------------------------------------------------------------------------------
#: Operators the import maps onto the integer contract (after qonnx's cleanup folds every
#: constant subgraph, the weights' Quant nodes with it, into float initialisers).
IMPORTED = ("Quant", "Conv", "Gemm", "MatMul", "Add", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
            "Flatten", "Reshape", "Identity")


def _pow2_exponent(scale, where):
    """``e`` with ``scale == 2**e`` exactly, or one line naming ``where``."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size != 1 or not s.item() > 0:
        raise UserError(f"{where}: scale {s.ravel()[:4].tolist()} is not one positive power of two; the shift "
                        "array needs per-tensor power-of-two activation scales (Brevitas: *FixedPoint quantisers)")
    m, e = np.frexp(s.item())
    if m != 0.5:
        raise UserError(f"{where}: scale {s.item()!r} is not a power of two; the shift array needs power-of-two "
                        "activation scales (Brevitas: *FixedPoint quantisers)")
    return int(e) - 1


class _Importer:
    """Walks a cleaned QONNX graph in order, building :class:`core.artifact.Layer` s."""

    def __init__(self, model, wbits, terms):
        self.m, self.wbits, self.terms = model, wbits, terms
        self.layers, self.report = [], {"weights": 0, "weights_changed": 0, "weight_max_error": 0.0,
                                        "biases_changed": 0, "bias_max_error": 0.0}
        self.tensor = {}  # onnx tensor -> (shape, bits, exp, artifact layer index or -1); bits None: an accumulator
        self.pending = {}  # onnx tensor -> a weighted layer awaiting its ReLU/Quant or its skip

    def init(self, name):
        v = self.m.get_initializer(name)
        return None if v is None else np.asarray(v, dtype=np.float64)

    def add(self, layer, out, bits, exp):
        self.layers.append(layer)
        self.tensor[out] = (tuple(layer.out_shape), bits, exp, len(self.layers) - 1)

    def quant(self, node, where):
        scale, zeropt, bitwidth = (self.init(n) for n in node.input[1:4])
        if scale is None or zeropt is None or bitwidth is None:
            raise UserError(f"{where}: its scale, zero point and bit width must be constants")
        if np.any(zeropt != 0):
            raise UserError(f"{where}: zero point {zeropt.ravel()[:4].tolist()} is not 0; the shift array has none")
        signed = next((a.i for a in node.attribute if a.name == "signed"), 1)
        if signed:
            raise UserError(f"{where}: a signed activation quantiser; the shift array's activations are unsigned "
                            "(quantise after a ReLU)")
        return int(bitwidth.item()), -_pow2_exponent(scale, where)


    def weighted(self, node, x, where):
        """A Conv/Gemm/MatMul on quantised tensor ``x``: its layer, pending its ReLU and scale."""
        import torch

        from core.artifact import Layer, conv_out_hw
        from .quantizers import pow2_codes

        shape, bits, exp, _ = self.tensor[x]
        if bits is None:
            raise UserError(f"{where}: its input is not quantised (put a quantiser before it)")
        w = self.init(node.input[1])
        if w is None:
            raise UserError(f"{where}: its weights must be constants")
        attrs = {a.name: _attr(a) for a in node.attribute}
        b = self.init(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        conv = node.op_type == "Conv"
        if conv:
            if attrs.get("group", 1) != 1 or any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise UserError(f"{where}: only group 1 and dilation 1 convolutions run on the shift array")
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:]:
                raise UserError(f"{where}: asymmetric padding {pads}; use the same padding on both sides")
            kernel, stride = tuple(w.shape[2:]), tuple(attrs.get("strides", [1, 1]))
            out_shape = (w.shape[0],) + conv_out_hw(shape[1], shape[2], kernel, stride, tuple(pads[:2]))
        else:
            if node.op_type == "MatMul" or not attrs.get("transB", 0):
                w = w.T  # (I, O) -> (O, I)
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                raise UserError(f"{where}: a Gemm with alpha, beta or transA; export a plain linear layer")
            out_shape = (w.shape[0],)
        codes = pow2_codes(torch.from_numpy(w), self.wbits, self.terms)
        e0 = codes.e0.numpy().astype(np.int64)
        approx = codes.value.numpy() * np.exp2(e0).reshape((-1,) + (1,) * (w.ndim - 1))
        err = np.abs(approx - w)
        r = self.report
        r["weights"] += w.size
        r["weights_changed"] += int(np.count_nonzero(err))
        r["weight_max_error"] = max(r["weight_max_error"], float(err.max() / max(np.abs(w).max(), 1e-30)))
        fan_in = int(np.prod(w.shape[1:]))
        bound = arith.product_bound(fan_in, bits, self.wbits, self.terms)
        unit = np.exp2(e0 - exp)
        b_int = np.zeros(w.shape[0], dtype=np.int64) if b is None else np.clip(np.rint(b / unit), -bound, bound)
        if b is not None:
            b_err = np.abs(b_int * unit - b)
            r["biases_changed"] += int(np.count_nonzero(b_err))
            r["bias_max_error"] = max(r["bias_max_error"], float(b_err.max()))
        name = f"{'conv' if conv else 'fc'}{len(self.layers)}"
        layer = Layer(kind="conv2d" if conv else "linear", name=name, in_shape=shape, out_shape=out_shape,
                      in_bits=bits, in_exp=exp, relu=False, wbits=self.wbits, terms=self.terms)
        if conv:
            layer.kernel, layer.stride, layer.padding = kernel, stride, tuple(pads[:2])
        layer.arrays = {"weight_sign": codes.sign.numpy().astype(np.int64),
                        "weight_shift": codes.shift.numpy().astype(np.int64),
                        "weight_zero": codes.zero.numpy().astype(np.uint8), "exp": e0,
                        "bias": b_int.astype(np.int64)}
        self.pending[node.output[0]] = layer

    def finish(self, layer, out, relu, bits=None, exp=None):
        """Close a weighted layer: requantised to ``bits`` at ``exp`` after ReLU, or the logits."""
        a = layer.arrays
        if relu:
            layer.relu, layer.out_bits, layer.out_exp = True, bits, exp
        else:
            layer.out_exp = int(np.max(layer.in_exp - a["exp"]))
        a["requant"] = (layer.in_exp - a["exp"] - layer.out_exp).astype(np.int64)
        if relu:
            arith.check_bits(abits=layer.out_bits)
        arith.check_accumulator(layer.name, layer.arith.acc_bits)
        self.add(layer, out, bits if relu else None, layer.out_exp)

    def node(self, node):
        op, where = node.op_type, f"{node.op_type} node {node.name or node.output[0]}"
        from core.artifact import Layer, conv_out_hw

        x = node.input[0]
        if op not in IMPORTED:
            raise UserError(f"{where}: no integer form for {op}; the import takes {', '.join(IMPORTED)}")
        if op == "Identity":
            if x in self.pending:
                self.pending[node.output[0]] = self.pending.pop(x)
            else:
                self.tensor[node.output[0]] = self.tensor[x]
        elif op == "Quant":
            bits, exp = self.quant(node, where)
            if x in self.pending:  # a layer's requantiser: ReLU before it, or the quantiser clamps at 0 anyway
                layer = self.pending.pop(x)
                self.finish(layer, node.output[0], True, bits, exp)
            elif x in self.tensor:  # a quantiser on a tensor that already has its integer form
                shape, b, e, i = self.tensor[x]
                if (b, e) != (bits, exp) and not (b is not None and e == exp and b <= bits):
                    raise UserError(f"{where}: requantises a {b}-bit tensor at exponent {e} to {bits} bits at "
                                    f"{exp}; only a layer's output is requantised on the shift array")
                self.tensor[node.output[0]] = (shape, b, e, i)
            else:
                raise UserError(f"{where}: quantises {x}, which is neither the input nor a layer's output")
        elif op in ("Conv", "Gemm", "MatMul"):
            self.weighted(node, x, where)
        elif op == "Relu":
            if x not in self.pending:
                raise UserError(f"{where}: a ReLU must follow a conv or linear layer (and a quantiser follow it)")
            self.pending[node.output[0]] = self.pending.pop(x)
        elif op == "Add":
            acc, other = (x, node.input[1]) if x in self.pending else (node.input[1], x)
            if acc not in self.pending or other not in self.tensor or self.tensor[other][1] is None:
                raise UserError(f"{where}: the shift array adds a quantised tensor into a conv or linear layer's "
                                "accumulator (a residual add); this Add is not one")
            layer = self.pending.pop(acc)
            shape, bits, exp, src = self.tensor[other]
            if shape != tuple(layer.out_shape):
                raise UserError(f"{where}: adds shape {shape} to {tuple(layer.out_shape)}")
            layer.skip, layer.skip_bits, layer.skip_exp = src, bits, exp
            layer.arrays["skip_shift"] = (layer.in_exp - layer.arrays["exp"] - exp).astype(np.int64)
            self.pending[node.output[0]] = layer
        else:
            if x not in self.tensor:
                raise UserError(f"{where}: its input {x} is not a quantised tensor")
            shape, bits, exp, _ = self.tensor[x]
            attrs = {a.name: _attr(a) for a in node.attribute}
            if op in ("Flatten", "Reshape"):
                layer = Layer(kind="flatten", name=f"flatten{len(self.layers)}", in_shape=shape,
                              out_shape=(int(np.prod(shape)),))
                self.add(layer, node.output[0], bits, exp)
                return
            kernel = tuple(shape[1:]) if op == "GlobalAveragePool" else tuple(attrs["kernel_shape"])
            stride = kernel if op == "GlobalAveragePool" else tuple(attrs.get("strides", [1, 1]))
            if any(attrs.get("pads", [0])) or attrs.get("ceil_mode", 0):
                raise UserError(f"{where}: pooling with padding or ceil mode has no integer form here")
            out_shape = (shape[0],) + conv_out_hw(shape[1], shape[2], kernel, stride, (0, 0))
            if op == "MaxPool":
                layer = Layer(kind="maxpool2d", name=f"pool{len(self.layers)}", in_shape=shape, out_shape=out_shape,
                              kernel=kernel, stride=stride, padding=(0, 0))
                self.add(layer, node.output[0], bits, exp)
                return
            area = kernel[0] * kernel[1]
            if area & (area - 1) or stride != kernel:
                raise UserError(f"{where}: an average pool needs a power-of-two window area and its stride equal to "
                                f"its kernel, not kernel {kernel} stride {stride}")
            k = area.bit_length() - 1
            layer = Layer(kind="avgpool2d", name=f"avgpool{len(self.layers)}", in_shape=shape, out_shape=out_shape,
                          kernel=kernel, stride=stride, padding=(0, 0), in_bits=bits, in_exp=exp, out_bits=bits + k,
                          out_exp=exp + k)
            arith.check_in_bits(bits + k)
            self.add(layer, node.output[0], bits + k, exp + k)


def _attr(a):
    from onnx import helper

    v = helper.get_attribute_value(a)
    return v.decode() if isinstance(v, bytes) else v


def from_model(model, *, wbits, terms=1):
    """The integer :class:`core.artifact.Network` of a QONNX ``ModelProto`` whose activation
    quantisers are unsigned with power-of-two scales (Brevitas' ``*FixedPoint`` quantisers),
    and a report of what had to be rounded: every weight to ``terms`` powers of two in a
    ``wbits``-bit window per output channel (:func:`quant.quantizers.pow2_codes`), every bias
    to the accumulator's unit.  Anything without an integer form is one line naming the node."""
    _modules()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from core.artifact import Network

    arith.check_bits(wbits=wbits, terms=terms)
    m = cleanup_model(ModelWrapper(model), preserve_qnt_ops=False)
    if len(m.graph.input) != 1 or len(m.graph.output) != 1:
        raise UserError("the QONNX model must have one input and one output")
    inp = m.graph.input[0].name
    shape = tuple(int(d) for d in m.get_tensor_shape(inp))
    if len(shape) not in (2, 4) or shape[0] != 1:
        raise UserError(f"input shape {shape}: export the model for one (N=1) image of shape (C, H, W) or (features,)")
    imp = _Importer(m, wbits, terms)
    first = m.find_consumer(inp)
    if first is None or first.op_type != "Quant":
        raise UserError("the model's input must go straight into a quantiser (Brevitas: a QuantIdentity first)")
    bits, exp = imp.quant(first, f"input quantiser {first.name}")
    if exp != bits:
        raise UserError(f"the input quantiser has scale 2**-{exp} at {bits} bits; the integer contract's input is "
                        f"x * 2**bits for x in [0, 1]: use scale 2**-{bits} (Brevitas: Uint8ActPerTensorFixedPoint"
                        f"MaxInit with max_val {2**bits - 1}/{2**bits})")
    arith.check_bits(abits=bits)
    imp.tensor[first.output[0]] = (shape[1:], bits, exp, -1)
    for node in m.graph.node:
        if node is first:
            continue
        imp.node(node)
    out = m.graph.output[0].name
    if out in imp.pending:
        imp.finish(imp.pending.pop(out), out, False)
    if imp.pending or not imp.layers or imp.tensor.get(out, (None,) * 4)[3] != len(imp.layers) - 1:
        raise UserError("the model must end in a conv or linear layer without ReLU or quantiser (the logits)")
    last = imp.layers[-1]
    return Network(input_shape=shape[1:], input_bits=bits, layers=imp.layers,
                   num_classes=int(np.prod(last.out_shape))), imp.report


def half_up(model):
    """A copy of QONNX ``model`` whose every ``Quant`` rounds half up, as the integer contract does
    (Brevitas exports ``ROUND``, half to even)."""
    import copy

    model = copy.deepcopy(model)
    for node in model.graph.node:
        for a in node.attribute:
            if node.op_type == "Quant" and a.name == "rounding_mode":
                a.s = ROUNDING.encode()
    return model


def run_model(model, inputs, input_bits):
    """The output of a QONNX ``ModelProto`` on qonnx's executor for integer input codes."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    w = ModelWrapper(model)
    name = w.graph.input[0].name
    out = []
    for codes in np.asarray(inputs, dtype=np.int64):
        x = (codes * 2.0**-input_bits).astype(np.float32)[None]
        out.append(next(iter(execute_onnx(w, {name: x}).values()))[0])
    return np.stack(out).astype(np.float64)
