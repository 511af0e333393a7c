"""``python -m templates.hls ARTIFACT``: HLS C++ of an artifact's network, with a testbench on its golden vectors.

Writes, into ``--out``:

``shiftnn.h``
    the hand-written library (``templates/hls/shiftnn.h``, copied): shift-accumulate conv2d
    and linear (with or without a residual add), maxpool2d, avgpool2d (window sums), flatten
    and the requantiser;
``kernel.h``, ``kernel.cpp``
    one top function per layer (``void conv0(const conv0_in_t in[1][8][8], conv0_out_t out[16][8][8])``;
    a layer with a skip also takes ``const conv3_skip_t skip[...]``, the tensor it adds) and
    ``void network(const in_t x[...], logit_t y[...])`` running them, one buffer per layer output;
``weights.h``
    every weighted layer's term codes, biases, requantiser shifts (and skip shifts) as
    ``static const`` arrays;
``tb.cpp``, ``build.sh``
    a testbench that runs each layer on its golden input and the network on the golden inputs
    and compares every value exactly; ``build.sh`` compiles it with g++ and runs it;
``golden/*.txt``
    the first ``--samples`` golden vectors: ``input.txt`` and one file per layer output.

Everything that depends on the network (shapes, loop bounds, integer widths, weight codes, names)
is computed here; the templates only substitute and loop, and the library holds the behaviour.
"""

import pathlib
import re
from dataclasses import dataclass

import numpy as np

from core import arith
from core.artifact import load_artifact
from core.cli import make_parser
from core.codes import encode_terms
from core.errors import UserError, cli_main
from core.fileio import write_atomic

from .render import TEMPLATE_ROOT, artifact_id, banner, write_rendered

GENERATOR = "python -m templates.hls"
LIBRARY = "shiftnn.h"
GOLDEN_DIR = "golden"
INPUT_FILE = "input.txt"
DEFAULT_SAMPLES = 8
#: Generated sources are readable by the tools that take them (a temporary file starts as 0600).
FILE_MODE = 0o644
#: Widest integer the standard-type build can hold (``std::int64_t``).
MAX_BITS = 64
#: Values per line in weight initialisers and golden files' rows stay readable.
PER_LINE = 16

#: Names the generated code defines itself (functions, types, the testbench's namespace, the golden
#: input file) or that C++ reserves; a layer called one of these is renamed.
RESERVED = {
    "network", "main", "shiftnn", "in_t", "logit_t", "std", "tb", "input",
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case", "catch",
    "char", "char16_t", "char32_t", "class", "compl", "const", "const_cast", "constexpr", "continue",
    "decltype", "default", "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit", "export",
    "extern", "false", "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable",
    "namespace", "new", "noexcept", "not", "not_eq", "nullptr", "operator", "or", "or_eq", "private",
    "protected", "public", "register", "reinterpret_cast", "return", "short", "signed", "sizeof", "static",
    "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local", "throw", "true",
    "try", "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void", "volatile",
    "wchar_t", "while", "xor", "xor_eq",
}


@dataclass(frozen=True)
class IntType:
    """A fixed-width integer type of the generated code: ``shiftnn::sint<W>`` or ``shiftnn::uint<W>``."""

    signed: bool
    bits: int

    def __post_init__(self):
        if not 1 <= self.bits <= MAX_BITS:
            raise UserError(f"a {self.bits}-bit integer is needed, more than the {MAX_BITS} bits the C++ build "
                            f"holds; lower --wbits/--abits/--terms")

    @property
    def spelled(self):
        return f"shiftnn::{'sint' if self.signed else 'uint'}<{self.bits}>"

    @property
    def range(self):
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1


#: Global names the generator derives from a layer's C name.
DERIVED = ("{}_in_t", "{}_out_t", "{}_skip_t", "{}_layer", "{}_codes", "{}_bias", "{}_shift", "{}_skip_shift")


def c_names(layers):
    """A C identifier per layer, from its name.

    Other characters become ``_``; a name that starts with a digit or ``_``, is a C++ keyword,
    looks like a macro (no lower-case letter) or is one of the generated code's own names gets
    the prefix ``layer_``; a name that collides with another layer's (or with a name derived from
    one, such as ``conv0_layer``) gets a suffix.
    """
    taken = set(RESERVED)
    names = []
    for i, layer in enumerate(layers):
        name = re.sub(r"_+", "_", re.sub(r"[^0-9A-Za-z_]", "_", str(layer.name)))
        if not name or name == "_":
            name = f"layer{i}"
        if name[0].isdigit() or name[0] == "_" or name in RESERVED or name.upper() == name:
            name = f"layer_{name}"
        base, n = name, 0
        while name in taken or any(d.format(name) in taken for d in DERIVED):
            n += 1
            name = f"{base}_{i}" if n == 1 else f"{base}_{i}_{n}"
        taken.add(name)
        taken.update(d.format(name) for d in DERIVED)
        names.append(name)
    return names


def dims(shape):
    """``(16, 8, 8)`` -> ``"[16][8][8]"``."""
    return "".join(f"[{int(d)}]" for d in shape)


def initializer(values, fmt=str, indent="    "):
    """Lines of a nested C brace initialiser for an integer array (the outermost braces left to the template)."""
    values = np.asarray(values)
    lines = []

    def row(items, pad):
        items = [fmt(int(v)) for v in items]
        chunks = [", ".join(items[i:i + PER_LINE]) for i in range(0, len(items), PER_LINE)]
        return [pad + chunk + "," for chunk in chunks]

    def walk(a, depth):
        pad = indent * depth
        if a.ndim == 1:
            body = row(a.tolist(), pad + indent)
            if len(body) == 1:
                lines.append(pad + "{" + body[0].strip().rstrip(",") + "},")
            else:
                lines.extend([pad + "{"] + body + [pad + "},"])
        else:
            lines.append(pad + "{")
            for sub in a:
                walk(sub, depth + 1)
            lines.append(pad + "},")

    if values.ndim == 1:
        lines.extend(row(values.tolist(), indent))
    else:
        for sub in values:
            walk(sub, 1)
    return lines


def _hex(v):
    return f"0x{v:x}"


def _fits(t, values, what):
    lo, hi = t.range
    values = np.asarray(values)
    if values.size and (values.min() < lo or values.max() > hi):
        raise UserError(f"{what} has values in [{values.min()}, {values.max()}], outside the {t.spelled} "
                        f"chosen from its widths; re-export the artifact with `python -m quant.export RUN_DIR`")


def weighted_types(layer, in_type, skip_type=None):
    """The integer types of a conv2d/linear layer, from :mod:`core.arith`'s derived widths.

    ``skip_type`` is the type of the tensor a layer with a skip adds (``None`` without one).
    """
    num = layer.arith
    shift = layer.arrays["requant"]
    right = max(0, int(shift.max()))
    left = max(0, -int(shift.min()))
    acc = IntType(True, num.acc_bits)
    out = IntType(False, layer.out_bits) if layer.relu else IntType(True, layer.output_bits)
    # the requantiser holds acc + 2**(s-1) (and shifts it right by s < its width), acc << left,
    # and the clamp bound of a ReLU layer
    wide_bits = max(num.acc_bits, right) + 1
    wide_bits = max(wide_bits, num.acc_bits + left, (layer.out_bits + 1) if layer.relu else 0)
    types = {
        "in": in_type,
        "out": out,
        "acc": acc,
        "wide": IntType(True, wide_bits),
        "code": IntType(False, layer.terms * layer.wbits),
        "bias": acc,
        "shift": IntType(True, max(2, arith.signed_bits(int(np.abs(shift).max())))),
    }
    if layer.has_skip:
        skip_shift = layer.arrays["skip_shift"]
        # a skip term is skip << k (k >= 0, within acc_bits by the skip bound) or the rounding
        # right shift (skip + 2**(r-1)) >> r, held in skip_wide_t (r < its width)
        r = max(0, -int(skip_shift.min()))
        top = arith.act_max(layer.skip_bits) + ((1 << (r - 1)) if r > 0 else 0)
        types["skip"] = skip_type
        types["skip_wide"] = IntType(True, arith.signed_bits(top))
        types["skip_shift"] = IntType(True, max(2, arith.signed_bits(int(np.abs(skip_shift).max()))))
    return types


@dataclass(frozen=True)
class Tensor:
    """A tensor of the network as the generated code sees it: the network input or a layer's output."""

    ctype: IntType  # its element type
    file: str  # its golden file
    buffer: str  # its array in ``network()``
    label: str  # for summaries: "the network input", "the output of conv0"


def _shape_text(shape):
    return "x".join(map(str, shape))


def _window(layer):
    return f"kernel {layer.kernel[0]}x{layer.kernel[1]}, stride {layer.stride[0]}x{layer.stride[1]}"


def layer_context(layer, name, in_type, gold_in, gold_out, skip=None):
    """Plain data for the templates about one layer, and the type of its output.

    ``skip`` is the :class:`Tensor` a layer with a skip adds (``None`` without one).
    """
    ctx = {
        "name": name,
        "source_name": str(layer.name),
        "kind": layer.kind,
        "struct": f"{name}_layer",
        "in_type": f"{name}_in_t",
        "out_type": f"{name}_out_t",
        "in_dims": dims(layer.in_shape),
        "out_dims": dims(layer.out_shape),
        "in_file": gold_in,
        "out_file": gold_out,
        "weighted": layer.weighted,
        "arrays": [],
    }
    # the kernel's inputs: the layer's input, then (a residual add) the tensor it adds
    inputs = [{"var": "in", "type": ctx["in_type"], "dims": ctx["in_dims"], "file": gold_in}]
    tensor_types = [("in_t", ctx["in_type"], in_type)]  # (name in the layer struct, global name, type)
    shape_in, shape_out = layer.in_shape, layer.out_shape
    if layer.weighted:
        if layer.has_skip:
            if skip is None:
                raise ValueError(f"layer {layer.name} adds a skip; pass the tensor it adds")
            if skip.ctype != IntType(False, layer.skip_bits):
                raise UserError(f"layer {layer.name} adds {layer.skip_bits}-bit skip codes, but {skip.label} is "
                                f"{skip.ctype.spelled}; re-export the artifact with `python -m quant.export RUN_DIR`")
            inputs.append({"var": "skip", "type": f"{name}_skip_t", "dims": ctx["out_dims"], "file": skip.file})
            tensor_types.append(("skip_t", f"{name}_skip_t", skip.ctype))
        types = weighted_types(layer, in_type, skip.ctype if layer.has_skip else None)
        a = layer.arrays
        codes = encode_terms(a["weight_sign"], a["weight_shift"], a["weight_zero"], layer.wbits)
        wshape = codes.shape
        arrays = [
            ("codes", types["code"], codes, _hex, dims(wshape),
             f"{layer.terms} term(s) of {layer.wbits} bits per weight, term 0 in the low bits: sign on top, "
             f"then the shift; an all-ones shift field is a zero term"),
            ("bias", types["bias"], a["bias"], str, dims(a["bias"].shape), "bias, in accumulator units"),
            ("shift", types["shift"], a["requant"], str, dims(a["requant"].shape),
             "requantiser shift per output channel: right with rounding half up if > 0, left if < 0"),
        ]
        if layer.has_skip:
            arrays.append(("skip_shift", types["skip_shift"], a["skip_shift"], str, dims(a["skip_shift"].shape),
                           "skip shift per output channel: the added code shifted left if >= 0, right with "
                           "rounding half up if < 0"))
        for suffix, t, values, fmt, shape_text, comment in arrays:
            _fits(t, values, f"layer {layer.name} {suffix}")
            ctx["arrays"].append({"name": f"{name}_{suffix}", "ctype": t.spelled, "dims": shape_text,
                                  "comment": comment, "lines": initializer(values, fmt)})
        enums = []
        if layer.kind == "conv2d":
            enums += [("C", shape_in[0]), ("H", shape_in[1]), ("W", shape_in[2]),
                      ("O", shape_out[0]), ("HO", shape_out[1]), ("WO", shape_out[2]),
                      ("KH", layer.kernel[0]), ("KW", layer.kernel[1]),
                      ("SH", layer.stride[0]), ("SW", layer.stride[1]),
                      ("PH", layer.padding[0]), ("PW", layer.padding[1])]
            library = "conv2d"
            geometry = f"{_window(layer)}, padding {layer.padding[0]}x{layer.padding[1]}, "
        else:
            enums += [("N", shape_in[0]), ("O", shape_out[0])]
            library = "linear"
            geometry = ""
        enums += [("WBITS", layer.wbits), ("TERMS", layer.terms), ("RELU", int(bool(layer.relu))),
                  ("OUT_BITS", types["out"].bits)]
        typedefs = ["acc", "wide", "code", "bias", "shift"]
        args = [p["var"] for p in inputs] + ["out", f"{name}_codes", f"{name}_bias", f"{name}_shift"]
        residual = ""
        if layer.has_skip:
            library += "_skip"
            typedefs += ["skip_wide", "skip_shift"]
            args.append(f"{name}_skip_shift")
            k = layer.arrays["skip_shift"]
            residual = f"adds {skip.label} (skip shift {int(k.min())}..{int(k.max())}), "
        ctx["library"] = library
        ctx["typedefs"] = [(t + "_t", types[t].spelled) for t in typedefs]
        ctx["args"] = ", ".join(args)
        out_type = types["out"]
        ctx["summary"] = (f"{library} {_shape_text(shape_in)} -> {_shape_text(shape_out)}, "
                          f"{geometry}{layer.wbits}-bit codes x {layer.terms} term(s), fan-in {layer.arith.fan_in}, "
                          f"{residual}{layer.arith.acc_bits}-bit accumulator, "
                          + (f"ReLU to {layer.out_bits} bits" if layer.relu else f"{out_type.bits}-bit logits"))
        ctx["acc_bits"] = layer.arith.acc_bits
    else:
        out_type = in_type
        ctx["typedefs"] = []
        ctx["args"] = "in, out"
        if layer.kind in ("maxpool2d", "avgpool2d"):
            enums = [("C", shape_in[0]), ("H", shape_in[1]), ("W", shape_in[2]),
                     ("HO", shape_out[1]), ("WO", shape_out[2]),
                     ("KH", layer.kernel[0]), ("KW", layer.kernel[1]),
                     ("SH", layer.stride[0]), ("SW", layer.stride[1])]
            ctx["library"] = layer.kind
            ctx["summary"] = f"{layer.kind} {_shape_text(shape_in)} -> {_shape_text(shape_out)}, {_window(layer)}"
            if layer.kind == "avgpool2d":
                # window sums: the contract's output width, log2(area) bits above the input's
                out_type = IntType(False, layer.out_bits)
                if out_type.bits != in_type.bits + layer.pool_log2:
                    raise UserError(f"layer {layer.name} sums {in_type.bits}-bit codes over {1 << layer.pool_log2} "
                                    f"values into {layer.out_bits} bits, not {in_type.bits + layer.pool_log2}; "
                                    f"re-export the artifact with `python -m quant.export RUN_DIR`")
                whole = tuple(layer.kernel) == tuple(shape_in[1:])
                ctx["summary"] += (f"{' (global)' if whole else ''}, window sums: {in_type.bits} -> "
                                   f"{out_type.bits} bits, exponent {layer.in_exp} -> {layer.out_exp}")
        elif len(shape_in) == 3:
            enums = [("C", shape_in[0]), ("H", shape_in[1]), ("W", shape_in[2]), ("N", shape_out[0])]
            ctx["library"] = "flatten"
            ctx["summary"] = f"flatten {_shape_text(shape_in)} -> {shape_out[0]}"
        elif len(shape_in) == 1:
            enums = [("N", shape_out[0])]
            ctx["library"] = "copy"
            ctx["summary"] = f"flatten {shape_in[0]} -> {shape_out[0]} (a copy)"
        else:
            raise UserError(f"layer {layer.name}: flatten of a {len(shape_in)}-d input {shape_in} has no HLS "
                            f"kernel; only (C, H, W) and (N,) inputs are supported")
        ctx["acc_bits"] = None
    ctx["enums"] = ", ".join(f"{k} = {int(v)}" for k, v in enums)
    ctx["in_ctype"] = in_type.spelled
    ctx["out_ctype"] = out_type.spelled
    ctx["inputs"] = inputs
    # the layer's tensors get global typedefs (conv0_in_t, conv0_skip_t, conv0_out_t) that its
    # layer description names in_t, skip_t and out_t
    tensor_types.append(("out_t", ctx["out_type"], out_type))
    ctx["tensor_types"] = [(global_name, t.spelled) for _, global_name, t in tensor_types]
    ctx["typedefs"] = [(local, global_name) for local, global_name, _ in tensor_types] + ctx["typedefs"]
    ctx["params"] = ", ".join([f"const {p['type']} {p['var']}{p['dims']}" for p in inputs]
                              + [f"{ctx['out_type']} out{ctx['out_dims']}"])
    return ctx, out_type


def golden_text(what, values, generator, source, filename):
    """A golden vector file: banner, a comment, ``shape N d1 d2 ...``, then one sample a line."""
    values = np.asarray(values, dtype=np.int64)
    per_sample = ", ".join(map(str, values.shape[1:]))
    lines = [banner(filename, generator, source).rstrip("\n"),
             f"# {what}: {values.shape[0]} samples of shape ({per_sample}), one sample a line",
             "shape " + " ".join(str(d) for d in values.shape)]
    for sample in values.reshape(values.shape[0], -1):
        lines.append(" ".join(map(str, sample.tolist())))
    return "\n".join(lines) + "\n"


def plan(art, samples):
    """The template context of a whole artifact (layers, network steps, golden files)."""
    net, gold = art.network, art.golden
    names = c_names(net.layers)
    in_type = IntType(False, net.input_bits)
    files = [INPUT_FILE] + [f"{n}.txt" for n in names]
    last = len(net.layers) - 1
    # every tensor a layer reads, by index (-1: the network input), as the network and testbench see it
    tensors = {-1: Tensor(in_type, INPUT_FILE, "x", "the network input")}
    _fits(in_type, gold.inputs[:samples], "golden inputs")
    layers = []
    steps = []
    for i, (layer, name) in enumerate(zip(net.layers, names)):
        src = tensors[i - 1]
        skip = tensors[layer.skip] if layer.weighted and layer.has_skip else None
        ctx, cur = layer_context(layer, name, src.ctype, files[i], files[i + 1], skip)
        _fits(cur, gold.outputs[i][:samples], f"golden outputs of layer {layer.name}")
        layers.append(ctx)
        tensors[i] = Tensor(cur, files[i + 1], "y" if i == last else f"t{i}", f"the output of {name}")
        reads = [src.buffer] + ([skip.buffer] if skip is not None else [])
        steps.append({"func": name, "args": ", ".join(reads + [tensors[i].buffer])})
    # one buffer per layer output: a tensor a later layer adds stays alive until then
    buffers = [{"name": tensors[i].buffer, "type": ctx["out_type"], "dims": ctx["out_dims"]}
               for i, ctx in enumerate(layers[:-1])]
    network = {
        "in_ctype": in_type.spelled,
        "logit_ctype": tensors[last].ctype.spelled,
        "in_dims": dims(net.input_shape),
        "out_dims": layers[-1]["out_dims"],
        "in_file": INPUT_FILE,
        "out_file": files[-1],
        "buffers": buffers,
        "steps": steps,
        "num_classes": net.num_classes,
    }
    return {"layers": layers, "weighted": [ctx for ctx in layers if ctx["weighted"]], "network": network,
            "library": LIBRARY, "golden_dir": GOLDEN_DIR, "samples": samples}, names, files


@dataclass
class Generated:
    """What :func:`generate` wrote."""

    out_dir: pathlib.Path
    files: list  # every path written
    samples: int
    layers: list  # the per-layer template contexts


def generate(artifact, out_dir, *, samples=None):
    """Write the HLS C++, its testbench and golden vectors for the artifact at ``artifact`` into ``out_dir``.

    ``samples`` golden vectors go into ``golden/`` (default: the first :data:`DEFAULT_SAMPLES`,
    or all when the artifact has fewer).
    """
    art = load_artifact(artifact)
    count = int(art.golden.inputs.shape[0])
    if count < 1:
        raise UserError(f"artifact {artifact} has no golden vectors; re-export it with "
                        f"`python -m quant.export RUN_DIR --golden 8`")
    if samples is None:
        samples = min(DEFAULT_SAMPLES, count)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or not 1 <= samples <= count:
        raise UserError(f"--samples {samples!r} is out of range; choose 1 to {count} (the artifact's golden vectors)")
    context, names, files = plan(art, int(samples))
    source = artifact_id(artifact)
    out_dir = pathlib.Path(out_dir)
    written = []
    try:
        text = (TEMPLATE_ROOT / "hls" / LIBRARY).read_text()
        lib_banner = banner(LIBRARY, GENERATOR, f"templates/hls/{LIBRARY} (hand-written, copied unchanged)")
        written.append(_write_text(out_dir / LIBRARY, lib_banner + text))
        for template in ("kernel.h.j2", "kernel.cpp.j2", "weights.h.j2", "tb.cpp.j2"):
            written.append(write_rendered(out_dir / template.removesuffix(".j2"), f"hls/{template}", context,
                                          generator=GENERATOR, source=source, mode=FILE_MODE))
        written.append(write_rendered(out_dir / "build.sh", "hls/build.sh.j2", context,
                                      generator=GENERATOR, source=source, mode=0o755))
        gold = art.golden
        arrays = [("golden inputs", gold.inputs)] + [
            (f"golden output of layer {layer.name} ({layer.kind})", out)
            for layer, out in zip(art.network.layers, gold.outputs)]
        for (what, values), name in zip(arrays, files):
            path = out_dir / GOLDEN_DIR / name
            written.append(_write_text(path, golden_text(what, values[:samples], GENERATOR, source, name)))
    except OSError as exc:
        raise UserError(f"cannot write into {out_dir}: {exc.strerror or exc}; choose another --out") from None
    return Generated(out_dir=out_dir, files=written, samples=int(samples), layers=context["layers"])


def _write_text(path, text):
    def write(tmp):
        pathlib.Path(tmp).write_text(text)
        pathlib.Path(tmp).chmod(FILE_MODE)

    write_atomic(path, write)
    return path


@cli_main
def main(argv=None):
    parser = make_parser(GENERATOR, __doc__.splitlines()[0].split(": ", 1)[1],
                         epilog="example: python -m templates.hls runs/demo-pow2/artifact.npz --out build/hls "
                                "&& build/hls/build.sh")
    parser.add_argument("artifact", help="artifact.npz written by python -m quant.train or quant.export")
    parser.add_argument("--out", default="build/hls", help="output folder (default: build/hls)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"golden vectors for the testbench (default: {DEFAULT_SAMPLES}, or all if fewer)")
    args = parser.parse_args(argv)
    result = generate(args.artifact, args.out, samples=args.samples)
    head = f"{'layer':<12} {'kernel':<12} {'acc':>4} {'output type':<20} summary"
    print(head)
    print("-" * len(head))
    for ctx in result.layers:
        acc = "" if ctx["acc_bits"] is None else str(ctx["acc_bits"])
        print(f"{ctx['name']:<12} {ctx['library']:<12} {acc:>4} {ctx['out_ctype']:<20} {ctx['summary']}")
    print(f"wrote {len(result.files)} files into {result.out_dir} ({result.samples} golden samples); "
          f"build and check with {result.out_dir / 'build.sh'}")


if __name__ == "__main__":
    main()
