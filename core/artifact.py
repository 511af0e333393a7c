"""The hardware artifact: an integer network plus golden vectors, versioned, validated on load.

The artifact is one ``.npz`` file (numpy's zip of arrays, read with ``allow_pickle=False``):
a JSON ``manifest`` (stored as bytes) describing the layers, and the integer arrays it names.
The format is documented in ``docs/export-format.md``; bump :data:`SCHEMA_VERSION` whenever
a field's meaning changes.
"""

import dataclasses
import json
import pathlib
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import __version__, arith
from .errors import UserError
from .fileio import write_atomic

FORMAT = "shiftnn-artifact"
SCHEMA_VERSION = 2
#: Versions this reader takes (version 1 has no average pools and no skips).
READS = (1, 2)
KINDS = ("conv2d", "linear", "maxpool2d", "avgpool2d", "flatten")
#: Arrays each weighted layer stores; shapes are checked on load.
WEIGHT_ARRAYS = ("weight_sign", "weight_shift", "weight_zero", "exp", "bias", "requant")


@dataclass
class Layer:
    """One integer layer.

    ``conv2d``/``linear`` compute ``acc = bias + sum(weight * x)`` (plus
    :func:`core.arith.skip_term` of layer ``skip``'s output when ``skip`` is set: the
    residual add) and requantise per output channel (:func:`core.arith.requantize`);
    ``maxpool2d`` and ``flatten`` move codes; ``avgpool2d`` sums each window's codes (the
    mean at an exponent ``log2(area)`` higher).  Shapes are per sample: ``(C, H, W)`` or
    ``(N,)``.
    """

    kind: str
    name: str
    in_shape: tuple
    out_shape: tuple
    # pooling and convolution geometry
    kernel: tuple = None
    stride: tuple = None
    padding: tuple = None
    # weighted layers
    in_bits: int = None
    in_exp: int = None
    out_bits: int = None  # activation bits after ReLU; None for the logits layer
    out_exp: int = None
    relu: bool = None
    wbits: int = None
    terms: int = None
    # the residual add: index of the earlier layer whose output is added (-1: the input)
    skip: int = None
    skip_bits: int = None
    skip_exp: int = None
    arrays: dict = field(default_factory=dict, repr=False)

    @property
    def weighted(self):
        return self.kind in ("conv2d", "linear")

    @property
    def has_skip(self):
        return self.skip is not None

    @property
    def arith(self):
        """Derived numbers of this layer (accumulator width etc.)."""
        fan_in = int(np.prod(self.arrays["weight_sign"].shape[2:]))
        bound = arith.skip_bound(self.skip_bits, int(np.max(self.arrays["skip_shift"]))) if self.has_skip else 0
        return arith.LayerArith(fan_in=fan_in, in_bits=self.in_bits, wbits=self.wbits, terms=self.terms,
                                skip_bound=bound)

    @property
    def pool_log2(self):
        """``log2`` of an average pool's window area (its exponent and bits grow by it)."""
        return (self.kernel[0] * self.kernel[1]).bit_length() - 1

    @property
    def weight(self):
        """Integer weights ``(O, I[, kh, kw])`` in units of ``2**exp`` per output channel."""
        a = self.arrays
        return arith.weight_value(a["weight_sign"], a["weight_shift"], a["weight_zero"])

    @property
    def output_bits(self):
        """Bits of this layer's output values (unsigned codes, or signed logits)."""
        return arith.output_bits(self.arith.acc_bits, self.arrays["requant"], self.relu, self.out_bits)

    def meta(self):
        """JSON-able description (arrays are referred to by name)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "arrays" and v is not None}
        for k in ("in_shape", "out_shape", "kernel", "stride", "padding"):
            if k in d:
                d[k] = list(d[k])
        if self.weighted:
            d["acc_bits"] = self.arith.acc_bits
        return d


@dataclass
class Network:
    """An integer network: input quantisation followed by :class:`Layer` s."""

    input_shape: tuple
    input_bits: int
    layers: list
    num_classes: int

    @property
    def input_exp(self):
        return self.input_bits

    @property
    def output_exp(self):
        return self.layers[-1].out_exp


@dataclass
class Golden:
    """Golden vectors: integer inputs and every layer's integer output for them."""

    inputs: np.ndarray  # (N, *input_shape) unsigned codes
    outputs: list  # per layer, (N, *out_shape)
    labels: np.ndarray  # (N,) dataset labels


@dataclass
class Artifact:
    network: Network
    golden: Golden
    meta: dict  # generator, config, accuracies


def conv_out_hw(h, w, kernel, stride, padding):
    """Output height and width of a convolution or pooling window."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1, (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def save_artifact(path, artifact):
    """Write ``artifact`` to ``path`` atomically (a temporary file renamed into place)."""
    net, gold = artifact.network, artifact.golden
    arrays = {}
    layers = []
    for i, layer in enumerate(net.layers):
        d = layer.meta()
        if layer.weighted:
            d["arrays"] = {}
            for k in WEIGHT_ARRAYS + (("skip_shift",) if layer.has_skip else ()):
                key = f"layers.{i}.{k}"
                arrays[key] = np.asarray(layer.arrays[k], dtype=np.int64 if k != "weight_zero" else np.uint8)
                d["arrays"][k] = key
        layers.append(d)
    arrays["golden.inputs"] = gold.inputs.astype(np.int64)
    arrays["golden.labels"] = gold.labels.astype(np.int64)
    for i, out in enumerate(gold.outputs):
        arrays[f"golden.layers.{i}"] = out.astype(np.int64)
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "generator": f"shiftnn {__version__}",
        "input": {"shape": list(net.input_shape), "bits": net.input_bits, "exp": net.input_exp},
        "num_classes": net.num_classes,
        "output_exp": net.output_exp,
        "layers": layers,
        "golden": {"count": int(gold.inputs.shape[0])},
        "meta": artifact.meta,
    }
    arrays["manifest"] = np.frombuffer(json.dumps(manifest, indent=1).encode(), dtype=np.uint8)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    write_atomic(path, write)


class _Check:
    """Collects the artifact's name for one-line errors."""

    def __init__(self, path):
        self.path = path

    def fail(self, what):
        raise UserError(f"artifact {self.path}: {what}; re-export it with `python -m quant.export RUN_DIR`")

    def that(self, ok, what):
        if not ok:
            self.fail(what)

    def hardware(self, where, check, *args, **kwargs):
        """Run an :mod:`core.arith` range check, naming the artifact and layer if it refuses."""
        try:
            check(*args, **kwargs)
        except UserError as exc:
            self.fail(f"{where}: {exc}")


def _int_array(check, npz, key, shape, where):
    if key not in npz:
        check.fail(f"{where} is missing array {key!r}")
    a = npz[key]
    check.that(a.dtype.kind in "iub", f"{where} array {key!r} has dtype {a.dtype}, expected integers")
    check.that(tuple(a.shape) == tuple(shape), f"{where} array {key!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    return a.astype(np.int64)


def load_artifact(path):
    """Read and validate an artifact; any inconsistency is a one-line :class:`UserError`."""
    check = _Check(path)
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"artifact {path} does not exist; export one with `python -m quant.export RUN_DIR`")
    try:
        npz = np.load(path, allow_pickle=False)
        names = set(npz.files)
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as exc:
        check.fail(f"is not a readable artifact ({type(exc).__name__})")
    with npz:
        check.that("manifest" in names, "has no manifest")
        try:
            man = json.loads(npz["manifest"].tobytes().decode())
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error, OSError, EOFError):
            check.fail("has a corrupt manifest")
        check.that(isinstance(man, dict) and man.get("format") == FORMAT, f"is not a {FORMAT} file")
        version = man.get("schema_version")
        if version not in READS:
            raise UserError(
                f"artifact {path} has schema version {version!r}, this tool reads versions "
                f"{', '.join(map(str, READS))}; "
                f"re-export it with `python -m quant.export RUN_DIR`"
            )
        try:
            return _parse(check, npz, names, man)
        except (KeyError, TypeError, ValueError, zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            check.fail(f"is inconsistent ({type(exc).__name__}: {exc})")


def _parse(check, npz, names, man):
    inp = man["input"]
    shape = tuple(int(v) for v in inp["shape"])
    bits = int(inp["bits"])
    check.hardware("input", arith.check_bits, abits=bits)
    check.that(int(inp["exp"]) == bits, "input exponent must equal its bits")
    layers = []
    cur_shape, cur_bits, cur_exp = shape, bits, bits
    # (shape, bits, exp) of every tensor a skip may read: the input (-1) and each layer's output
    tensors = {-1: (shape, bits, bits)}
    for i, d in enumerate(man["layers"]):
        where = f"layer {i} ({d.get('name', '?')})"
        kind = d["kind"]
        check.that(kind in KINDS, f"{where} has unknown kind {kind!r}")
        check.that(cur_bits is not None, f"{where} follows the logits layer")
        in_shape = tuple(d["in_shape"])
        check.that(in_shape == cur_shape, f"{where} takes shape {in_shape}, but the previous layer gives {cur_shape}")
        layer = Layer(kind=kind, name=d["name"], in_shape=in_shape, out_shape=tuple(d["out_shape"]))
        if kind == "flatten":
            check.that(layer.out_shape == (int(np.prod(in_shape)),), f"{where} flattens {in_shape} to {layer.out_shape}")
        elif kind in ("maxpool2d", "avgpool2d"):
            layer.kernel, layer.stride, layer.padding = tuple(d["kernel"]), tuple(d["stride"]), (0, 0)
            check.that(len(in_shape) == 3, f"{where} needs a (C, H, W) input, got {in_shape}")
            want = (in_shape[0],) + conv_out_hw(in_shape[1], in_shape[2], layer.kernel, layer.stride, (0, 0))
            check.that(layer.out_shape == want, f"{where} output shape {layer.out_shape}, expected {want}")
            if kind == "avgpool2d":
                area = layer.kernel[0] * layer.kernel[1]
                check.that(area & (area - 1) == 0, f"{where} averages {area} values, not a power of two")
                check.that(layer.stride == layer.kernel, f"{where} needs its stride equal to its kernel")
                for k in ("in_bits", "in_exp", "out_bits", "out_exp"):
                    setattr(layer, k, d[k])
                check.that((layer.in_bits, layer.in_exp) == (cur_bits, cur_exp),
                           f"{where} expects {layer.in_bits}-bit inputs at exponent {layer.in_exp}, "
                           f"the previous layer gives {cur_bits} bits at exponent {cur_exp}")
                check.that((layer.out_bits, layer.out_exp) == (cur_bits + layer.pool_log2, cur_exp + layer.pool_log2),
                           f"{where} must give {cur_bits + layer.pool_log2}-bit sums at exponent "
                           f"{cur_exp + layer.pool_log2}")
                check.hardware(where, arith.check_in_bits, layer.out_bits)
                cur_bits, cur_exp = layer.out_bits, layer.out_exp
        else:
            for k in ("in_bits", "in_exp", "out_exp", "relu", "wbits", "terms"):
                setattr(layer, k, d[k])
            layer.out_bits = d.get("out_bits")
            check.hardware(where, arith.check_bits, wbits=layer.wbits, terms=layer.terms)
            check.that(layer.in_bits == cur_bits and layer.in_exp == cur_exp,
                       f"{where} expects {layer.in_bits}-bit inputs at exponent {layer.in_exp}, "
                       f"the previous layer gives {cur_bits} bits at exponent {cur_exp}")
            out_ch = layer.out_shape[0]
            if kind == "conv2d":
                layer.kernel, layer.stride, layer.padding = tuple(d["kernel"]), tuple(d["stride"]), tuple(d["padding"])
                check.that(len(in_shape) == 3, f"{where} needs a (C, H, W) input, got {in_shape}")
                want = (out_ch,) + conv_out_hw(in_shape[1], in_shape[2], layer.kernel, layer.stride, layer.padding)
                check.that(layer.out_shape == want, f"{where} output shape {layer.out_shape}, expected {want}")
                wshape = (layer.terms, out_ch, in_shape[0]) + layer.kernel
            else:
                check.that(len(in_shape) == 1 and len(layer.out_shape) == 1, f"{where} needs flat shapes")
                wshape = (layer.terms, out_ch, in_shape[0])
            names_ = d["arrays"]
            if d.get("skip") is not None:
                layer.skip, layer.skip_bits, layer.skip_exp = int(d["skip"]), int(d["skip_bits"]), int(d["skip_exp"])
                check.that(layer.skip in tensors and layer.skip < i, f"{where} adds the output of layer {layer.skip}, "
                           "which is not an earlier layer")
                src_shape, src_bits, src_exp = tensors[layer.skip]
                check.that(src_shape == layer.out_shape, f"{where} adds a skip of shape {src_shape} to its output "
                           f"of shape {layer.out_shape}")
                check.that((src_bits, src_exp) == (layer.skip_bits, layer.skip_exp),
                           f"{where} expects a {layer.skip_bits}-bit skip at exponent {layer.skip_exp}, layer "
                           f"{layer.skip} gives {src_bits} bits at exponent {src_exp}")
                check.that(bool(d["relu"]), f"{where} adds a skip but has no ReLU")
            for k in WEIGHT_ARRAYS + (("skip_shift",) if layer.has_skip else ()):
                shp = wshape if k.startswith("weight") else (out_ch,)
                layer.arrays[k] = _int_array(check, npz, names_[k], shp, where)
            a = layer.arrays
            if layer.has_skip:
                check.hardware(where, arith.check_bits, abits=layer.skip_bits)
                check.that(np.array_equal(a["skip_shift"], layer.in_exp - a["exp"] - layer.skip_exp),
                           f"{where} skip shifts disagree with in_exp - exp - skip_exp")
            levels = arith.shift_levels(layer.wbits)
            check.that(np.all((a["weight_sign"] == 0) | (a["weight_sign"] == 1)), f"{where} has a sign code other than 0/1")
            check.that(np.all((a["weight_zero"] == 0) | (a["weight_zero"] == 1)), f"{where} has a zero flag other than 0/1")
            check.that(np.all((a["weight_shift"] >= 0) & (a["weight_shift"] < levels)),
                       f"{where} has a shift outside 0..{levels - 1} for {layer.wbits}-bit codes")
            num = layer.arith
            check.hardware(where, arith.check_accumulator, layer.name, num.acc_bits)
            check.that(np.all(np.abs(a["bias"]) <= num.product_bound), f"{where} has a bias beyond its accumulator bound")
            check.that(np.array_equal(a["requant"], layer.in_exp - a["exp"] - layer.out_exp),
                       f"{where} requant shifts disagree with in_exp - exp - out_exp")
            if layer.relu:
                check.hardware(where, arith.check_bits, abits=layer.out_bits)
            else:
                check.that(np.all(a["requant"] <= 0), f"{where} is a logits layer but has a right shift")
            check.that(d.get("acc_bits", num.acc_bits) == num.acc_bits,
                       f"{where} records acc_bits {d.get('acc_bits')}, the layer needs {num.acc_bits}")
            cur_bits, cur_exp = (layer.out_bits, layer.out_exp) if layer.relu else (None, layer.out_exp)
        layers.append(layer)
        cur_shape = layer.out_shape
        tensors[i] = (cur_shape, cur_bits, cur_exp)
    check.that(len(layers) > 0 and layers[-1].weighted and not layers[-1].relu,
               "must end in a logits layer (linear or conv without ReLU)")
    net = Network(input_shape=shape, input_bits=bits, layers=layers, num_classes=int(man["num_classes"]))
    check.that(layers[-1].out_shape == (net.num_classes,), f"logits shape {layers[-1].out_shape} is not ({net.num_classes},)")
    check.that(man["output_exp"] == net.output_exp, "output_exp disagrees with the last layer")
    count = int(man["golden"]["count"])
    inputs = _int_array(check, npz, "golden.inputs", (count,) + shape, "golden vectors")
    check.that(np.all((inputs >= 0) & (inputs <= arith.act_max(bits))), "golden inputs exceed the input bits")
    labels = _int_array(check, npz, "golden.labels", (count,), "golden vectors")
    outputs = [_int_array(check, npz, f"golden.layers.{i}", (count,) + l.out_shape, "golden vectors")
               for i, l in enumerate(layers)]
    return Artifact(network=net, golden=Golden(inputs=inputs, outputs=outputs, labels=labels), meta=man.get("meta", {}))
