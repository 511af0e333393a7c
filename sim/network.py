"""``python -m sim.network ARTIFACT``: a whole test split through the cycle-accurate network engine.

The network core (:class:`hw.network.NetworkCore`, the board's design less the UART link)
is converted to Verilog and Verilated with a C++ harness (:mod:`sim.batch`) that loads each
image through the input packer, runs it and reads the logits, with no Python in the
per-cycle loop.  Every image's logits are compared with the integer reference's
(:mod:`core.reference`), every cycle count with :meth:`hw.program.NetworkProgram.cycles`, and
every step's (the cycles between the core's ``step_done`` pulses) with its
``plan.cycles() + hw.program.STEP_OVERHEAD``.
The report gives hardware accuracy, the images whose prediction or logits differ from the
reference (there must be none), cycles per image and per step, PE use and images per second at a clock
(``--mhz``, or the clock a board build runs at, its PLL's, from the ``report.json`` given with
``--fpga-report``).
"""

import json
import pathlib
import sys

from core.artifact import load_artifact
from core.boards import BOARDS, board as get_board
from core.cli import make_parser, parse_bool
from core.errors import UserError, cli_main
from core.fileio import write_json
from core.hwconfig import HwConfig
from hw.program import NetworkProgram
from quant.data import DATASETS

from .netsim import check, dataset_codes


def print_report(r):
    if "hardware_accuracy" in r:
        print(f"hardware accuracy {r['hardware_accuracy']:.2%} on {r['images']} images "
              f"(integer reference {r['reference_accuracy']:.2%})")
    print(f"predictions that differ from the integer reference: {r['prediction_differences']}; images with any "
          f"logit different: {r['logit_differences']}")
    print(f"cycles per image: {r['cycles_per_image']} (planned {r['planned_cycles']}); PE use over the conv layers: "
          f"{r['conv_pe_use']:.1%}")
    for i, s in enumerate(r["steps"]):
        low, high = s["measured_cycles"] or (None, None)
        mark = "ok" if low == high == s["planned_cycles"] else "DIFFERS"
        print(f"  step {i} {'+'.join(s['layers'])}: measured min {low} max {high}, planned {s['cycles']} + "
              f"{s['planned_cycles'] - s['cycles']} = {s['planned_cycles']} {mark}")
    if "images_per_s" in r:
        print(f"images per second at {r['mhz']:.2f} MHz: {r['images_per_s']:.0f}")
    print(f"simulated {r['simulated_cycles']:,} cycles in {r['wall_seconds']} s")


@cli_main
def main(argv=None):
    parser = make_parser("python -m sim.network", __doc__.splitlines()[0].split(": ", 1)[1],
                         epilog="example: python -m sim.network runs/mnist-w2/artifact.npz --data mnist "
                                "--data-dir ../shared/data/mnist-10k --rows 8 --cols 4")
    parser.add_argument("artifact", help="artifact.npz written by python -m quant.train")
    parser.add_argument("--data", choices=DATASETS, help="run this dataset's test split (default: the artifact's "
                                                         "golden vectors)")
    parser.add_argument("--data-dir", help="the dataset's folder for --data mnist or cifar10")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--board", default="icebreaker", choices=sorted(BOARDS),
                        help="the board whose design is simulated: its defaults (the iCEBreaker's 8x4 array, the "
                             "ULX3S's 8x8 with registered block RAM reads) under the flags (default: icebreaker)")
    parser.add_argument("--rows", type=int, help="array rows (default: the board's; with --fpga-report, the build's)")
    parser.add_argument("--cols", type=int, help="array columns (default: the board's; with --fpga-report, the "
                                                  "build's)")
    parser.add_argument("--skew-ram", type=parse_bool, metavar="BOOL",
                        help="the rows' skew in block RAM (same cycles; as the iCEBreaker's 16x4 MNIST build has it)")
    parser.add_argument("--wgt-lanes", type=int, help="array rows a weight word holds (default: the board's; with "
                        "--fpga-report, the build's)")
    parser.add_argument("--input-reg", type=parse_bool, metavar="BOOL",
                        help="one more register stage from the memories to the array (one cycle more a block; as "
                             "the ULX3S's 32x32 MNIST build has it)")
    parser.add_argument("--jobs", type=int, help="simulator processes (default: up to 2)")
    parser.add_argument("--mhz", type=float, help="clock for the images-per-second figure")
    parser.add_argument("--fpga-report", help="report.json of a board build: simulate the design it built (its "
                                              "config) at the clock it runs at (its PLL's)")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    art = load_artifact(args.artifact)
    mhz, built = args.mhz, None
    if args.fpga_report:
        path = pathlib.Path(args.fpga_report)
        if not path.is_file():
            raise UserError(f"no board report {path}; build one with python -m fpga.build or drop --fpga-report")
        try:
            report = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"board report {path} is not JSON; build again with python -m fpga.build") from None
        design = report.get("design") or {}
        fmax = report.get("fmax_mhz", {})
        # the clock the board runs at (its PLL's), else the placed Fmax of an older report
        mhz = design.get("clock_mhz") or (min(fmax.values()) if fmax else mhz)
        built = design.get("config")
    if built is not None:  # the design the board runs, as built
        cfg = HwConfig.from_dict(built)
        if (args.rows or cfg.rows, args.cols or cfg.cols) != (cfg.rows, cfg.cols):
            given = " ".join(f"--{k} {v}" for k, v in (("rows", args.rows), ("cols", args.cols)) if v)
            raise UserError(f"{given} differs from the {cfg.rows}x{cfg.cols} design of {args.fpga_report}; drop it to "
                            "simulate the built design")
        program = NetworkProgram(art.network, cfg)
    else:
        program = NetworkProgram.for_board(art.network, get_board(args.board),
                                           {"rows": args.rows, "cols": args.cols, "skew_ram": args.skew_ram,
                                            "wgt_lanes": args.wgt_lanes, "input_reg": args.input_reg})
    if args.data:
        inputs, labels = dataset_codes(art.network, args.data, args.data_dir, args.limit)
    else:
        inputs, labels = art.golden.inputs[: args.limit], art.golden.labels[: args.limit]
    print("\n".join(program.table()))
    report = check(program, inputs, labels, jobs=args.jobs, mhz=mhz)
    print_report(dict(report))
    if args.out:
        write_json(args.out, report)
    ok = report["prediction_differences"] == 0 and report["logit_differences"] == 0 and report["cycle_counts_as_planned"]
    print("ok: the engine matches the integer reference on every image" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())




if __name__ == "__main__":
    sys.exit(main())
