"""``python -m quant.export RUN_DIR``: write a run's hardware artifact with golden vectors."""

import pathlib
import sys

from core.cli import make_parser
from core.errors import UserError, cli_main

from .data import load_dataset
from .runs import ARTIFACT, checkpoint_path, export_network, load_network


@cli_main
def main(argv=None):
    p = make_parser("python -m quant.export", __doc__.split(":", 1)[1].strip())
    p.add_argument("run_dir", help="run directory written by `python -m quant.train`")
    p.add_argument("--out", help=f"artifact path (default: RUN_DIR/{ARTIFACT})")
    p.add_argument("--golden", type=int, help="test images in the golden vectors (default: the run's --golden)")
    p.add_argument("--data-dir", help="override the run's dataset folder (for --data mnist or cifar10)")
    p.add_argument("--qonnx", metavar="PATH", help="also write the network as QONNX (for FINN, hls4ml, Brevitas) and "
                                                  "check every layer of it on qonnx's executor against the golden "
                                                  "vectors (needs the onnx extra)")
    args = p.parse_args(argv)
    qnet, state = load_network(args.run_dir)
    cfg = state["config"]
    if args.data_dir:
        cfg.data_dir = args.data_dir
    dataset = load_dataset(cfg.data, cfg.data_dir)
    golden = cfg.golden if args.golden is None else args.golden
    if golden < 1:
        raise UserError(f"--golden must be at least 1, not {golden}")
    out = pathlib.Path(args.out) if args.out else checkpoint_path(args.run_dir).parent / ARTIFACT
    network, _ = export_network(qnet, cfg, dataset, out, golden=golden)
    count = min(golden, dataset.test_x.shape[0])
    print(f"wrote {out}: {len(network.layers)} layers, {count} golden vectors", file=sys.stderr)
    if args.qonnx:
        return _qonnx(pathlib.Path(args.qonnx), out)
    return 0


def _qonnx(path, artifact_path):
    """Write the artifact's network as QONNX at ``path`` and check it on qonnx's executor."""
    from . import qonnx_io
    from core.artifact import load_artifact

    art = load_artifact(artifact_path)
    try:
        qonnx_io.save(path, art.network)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; choose another --qonnx path") from None
    images, values, bad, first = qonnx_io.check(path, art)
    if bad:
        print(f"FAILED: {path} on qonnx's executor: {bad} of {values} values differ from the golden vectors, first "
              f"in layer {first}", file=sys.stderr)
        return 1
    print(f"wrote {path}: QONNX, checked on qonnx's executor: {images} golden vectors, every layer's {values} values "
          f"equal (times 2**{art.network.output_exp} at the logits)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
