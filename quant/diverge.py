"""``python -m quant.diverge ARTIFACT``: the first layer, channel and position where two implementations differ.

Implementations: ``golden`` (the artifact's stored vectors, from PyTorch at export),
``reference`` (the numpy integer reference) and ``torch-int`` (PyTorch integer mode).
Later stages register more (the RTL simulation) through :data:`BACKENDS`.
"""

import sys
from dataclasses import dataclass

import numpy as np

from core import reference
from core.artifact import load_artifact
from core.cli import make_parser
from core.errors import UserError, cli_main

from . import torch_int

#: name -> callable(network, inputs) returning every layer's outputs
BACKENDS = {
    "reference": reference.run,
    "torch-int": torch_int.run,
}


@dataclass
class Divergence:
    layer: int
    name: str
    sample: int
    channel: int  # output channel (or feature for flat outputs)
    position: tuple  # (y, x) inside the channel, () for flat outputs
    a: int
    b: int

    def describe(self, a_name, b_name):
        where = f"channel {self.channel}" + (f" position (y={self.position[0]}, x={self.position[1]})" if self.position else "")
        return (f"first difference: layer {self.layer} ({self.name}), sample {self.sample}, {where}: "
                f"{a_name}={self.a} {b_name}={self.b}")


def first_divergence(layers, outs_a, outs_b):
    """The first (layer, sample, channel, position) where two per-layer output lists differ, or None."""
    for i, (layer, a, b) in enumerate(zip(layers, outs_a, outs_b)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise UserError(f"layer {i} ({layer.name}) outputs have shapes {a.shape} and {b.shape}")
        diff = np.argwhere(a != b)
        if diff.size:
            idx = tuple(int(v) for v in diff[0])
            return Divergence(layer=i, name=layer.name, sample=idx[0], channel=idx[1], position=idx[2:],
                              a=int(a[idx]), b=int(b[idx]))
    return None


def outputs_of(name, artifact, inputs, index):
    if name == "golden":
        return [o[index] for o in artifact.golden.outputs]
    return BACKENDS[name](artifact.network, inputs)


@cli_main
def main(argv=None):
    choices = ["golden", *BACKENDS]
    p = make_parser("python -m quant.diverge", __doc__.split(": ", 1)[1].split("\n")[0])
    p.add_argument("artifact", help="artifact written by quant.train / quant.export")
    p.add_argument("--a", default="golden", choices=choices, help="first implementation (default: golden)")
    p.add_argument("--b", default="reference", choices=choices, help="second implementation (default: reference)")
    p.add_argument("--index", type=int, help="golden input to compare (default: all of them)")
    p.add_argument("--input", metavar="NPY", help="a .npy of integer input codes, shape (C, H, W) or (N, C, H, W)")
    args = p.parse_args(argv)
    art = load_artifact(args.artifact)
    count = art.golden.inputs.shape[0]
    if args.input:
        if "golden" in (args.a, args.b):
            raise UserError("--input images have no golden vectors; compare two of: " + ", ".join(BACKENDS))
        try:
            inputs = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read --input {args.input}: {exc}") from None
        shape = tuple(art.network.input_shape)
        if inputs.shape == shape:
            inputs = inputs[None]
        if inputs.shape[1:] != shape or inputs.dtype.kind not in "iu":
            raise UserError(f"--input {args.input} holds {inputs.dtype} {inputs.shape}; expected integer codes of shape {shape}")
        index = slice(None)
    else:
        if args.index is not None and not 0 <= args.index < count:
            raise UserError(f"--index {args.index} is outside the artifact's {count} golden inputs (0..{count - 1})")
        index = slice(None) if args.index is None else slice(args.index, args.index + 1)
        inputs = art.golden.inputs[index]
    outs_a = outputs_of(args.a, art, inputs, index)
    outs_b = outputs_of(args.b, art, inputs, index)
    d = first_divergence(art.network.layers, outs_a, outs_b)
    n = inputs.shape[0]
    if d is None:
        print(f"{args.a} and {args.b} agree on every layer of {n} input(s)")
        return 0
    if args.index is not None:
        d.sample = args.index
    print(d.describe(args.a, args.b))
    sys.exit(1)


if __name__ == "__main__":
    main()
