"""``python -m hw.generate``: write the Verilog of a design and the config it was made from."""

import json
import pathlib

from core.artifact import load_artifact
from core.cli import add_config_arguments, make_parser
from core.errors import cli_main
from core.hwconfig import HwConfig, given_flags

from .design import CONFIG_FILE, TOPS, layer_table, write_design
from .plan import design_config


@cli_main
def main(argv=None):
    parser = make_parser("python -m hw.generate", __doc__.splitlines()[0],
                         epilog="example: python -m hw.generate --artifact runs/demo-pow2/artifact.npz --out build/rtl")
    parser.add_argument("--artifact", help="size the design for this artifact's layers (widths, fan-in, memories)")
    parser.add_argument("--top", default="engine", choices=sorted(TOPS), help="component to write (default: engine)")
    parser.add_argument("--out", default="build/rtl", help="output folder (default: build/rtl)")
    add_config_arguments(parser, HwConfig)
    args = parser.parse_args(argv)
    network = load_artifact(args.artifact).network if args.artifact else None
    cfg = design_config(network, flags=given_flags(args))
    path = write_design(cfg, args.out, top=args.top, artifact=args.artifact)
    print(f"wrote {path} ({args.top}, {cfg.rows}x{cfg.cols}, {cfg.acc_bits}-bit accumulators) and "
          f"{pathlib.Path(args.out) / CONFIG_FILE}")
    print(json.dumps(cfg.to_dict()))
    if args.artifact:
        print("\n".join(layer_table(network, cfg)))


if __name__ == "__main__":
    main()
