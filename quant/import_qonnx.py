"""``python -m quant.import_qonnx MODEL.onnx``: a QONNX model (from Brevitas, FINN's tools, hls4ml) as a shiftnn artifact.

The model's activation quantisers must be unsigned with power-of-two scales (Brevitas'
``*FixedPoint`` quantisers, after a ReLU) and its input quantiser ``x * 2**bits``; its
weights become ``--terms`` powers of two in a ``--wbits`` window per output channel and its
biases whole numbers of the accumulator's unit, both rounded where they are not already
(the report says how many and by how much; 0 for weights that are powers of two).  The
golden vectors are the integer reference's outputs for ``--golden`` test images of
``--data`` (random input codes without it).  Then the artifact is compared with the QONNX
model itself on qonnx's executor, image by image: the contract rounds half up, while
Brevitas' activations round half to even, so logits may differ where a value falls on a tie.
"""

import pathlib
import sys

import numpy as np

from core import reference
from core.artifact import Artifact, Golden, save_artifact
from core.cli import make_parser
from core.errors import UserError, cli_main

from . import qonnx_io
from .data import DATASETS, load_dataset
from .quantizers import quantize_input

GENERATOR = "python -m quant.import_qonnx"


def golden_inputs(network, count, data=None, data_dir=None, seed=0):
    """``(codes, labels)`` of ``count`` images: a dataset's test split, quantised as the
    network's input, or random codes (labels ``-1``) without ``data``."""
    if data is None:
        rng = np.random.default_rng(seed)
        codes = rng.integers(0, 2**network.input_bits, (count,) + tuple(network.input_shape))
        return codes, np.full(count, -1, dtype=np.int64)
    ds = load_dataset(data, data_dir)
    x = ds.test_x[:count]
    if tuple(x.shape[1:]) != tuple(network.input_shape) and int(np.prod(x.shape[1:])) != int(
            np.prod(network.input_shape)):
        raise UserError(f"--data {data} has {tuple(x.shape[1:])} images, the model takes {tuple(network.input_shape)}")
    codes = quantize_input(x, network.input_bits).numpy().astype(np.int64).reshape((len(x),) + network.input_shape)
    return codes, ds.test_y[:count].numpy().astype(np.int64)


def load_model(path):
    onnx = qonnx_io._modules()
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"QONNX file {path} does not exist; export one (Brevitas: brevitas.export.export_qonnx)")
    try:
        return onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}); export it again") from None


@cli_main
def main(argv=None):
    p = make_parser(GENERATOR, __doc__.splitlines()[0].split(": ", 1)[1],
                    epilog="example: python -m quant.import_qonnx brevitas.onnx --wbits 4 --data mnist --data-dir DIR "
                           "--out runs/imported/artifact.npz")
    p.add_argument("model", help="the QONNX file")
    p.add_argument("--out", default="artifact.npz", help="the artifact to write (default: artifact.npz)")
    p.add_argument("--wbits", type=int, default=4, help="weight code bits of the shift array (default 4)")
    p.add_argument("--terms", type=int, default=1, help="powers of two per weight (default 1)")
    p.add_argument("--data", choices=DATASETS, help="golden vectors from this dataset's test split (default: random "
                                                    "input codes)")
    p.add_argument("--data-dir", help="the dataset's folder (mnist, cifar10)")
    p.add_argument("--golden", type=int, default=32, help="golden vectors (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input codes")
    args = p.parse_args(argv)
    if args.golden < 1:
        raise UserError(f"--golden must be at least 1, not {args.golden}")
    model = load_model(args.model)
    network, rep = qonnx_io.from_model(model, wbits=args.wbits, terms=args.terms)
    codes, labels = golden_inputs(network, args.golden, args.data, args.data_dir, args.seed)
    outs = reference.run(network, codes)
    ours = outs[-1] * 2.0**-network.output_exp
    theirs = qonnx_io.run_model(model, codes, network.input_bits)
    same_logits = int(np.all(theirs == ours, axis=1).sum())
    same_class = int((theirs.argmax(axis=1) == outs[-1].argmax(axis=1)).sum())
    rounded = qonnx_io.run_model(qonnx_io.half_up(model), codes, network.input_bits)
    same_half_up = int(np.all(rounded == ours, axis=1).sum())
    meta = {"generator": GENERATOR, "source": str(args.model), "import": rep, "images": len(codes),
            "qonnx_equal_logits": same_logits, "qonnx_equal_predictions": same_class,
            "qonnx_half_up_equal_logits": same_half_up}
    save_artifact(args.out, Artifact(network, Golden(codes, outs, labels), meta))
    print(f"wrote {args.out}: {len(network.layers)} layers, {len(codes)} golden vectors", file=sys.stderr)
    print(f"weights rounded to powers of two: {rep['weights_changed']} of {rep['weights']} (largest error "
          f"{rep['weight_max_error']:.1%} of its channel's largest weight); biases rounded: {rep['biases_changed']} "
          f"(largest error {rep['bias_max_error']:.3g})")
    print(f"against the QONNX model on qonnx's executor: logits equal on {same_logits} of {len(codes)} images, "
          f"predictions on {same_class}; with its quantisers rounding half up, as the shift array does: logits "
          f"equal on {same_half_up} of {len(codes)}" + ("" if same_half_up == len(codes) else
                                                        " (the rest differ by the rounded weights and biases)"))
    if (labels >= 0).all():
        print(f"accuracy of the artifact on these images: {(outs[-1].argmax(axis=1) == labels).mean():.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
