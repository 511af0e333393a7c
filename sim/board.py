"""Simulate a generated board folder (templates.board) on Verilator with cocotb."""

import json
import os
import pathlib
import tempfile

from core.boards import pins
from templates.board import LIBRARY, SELFTEST

from . import runner
from .tb import CASE_ENV


def simulate_board(folder, board, cfg, plan, *, expect="passed", frames=(), expect_after=None, name="top"):
    """Build the folder's Verilog (``synth.ys``'s sources) and run :mod:`sim.cocotb_board`;
    raises :class:`AssertionError` unless the self-test lights the ``expect`` LED, and, with
    ``frames`` (loader frames as bit strings, most significant first), unless a second run
    after loading them and pressing reset lights ``expect_after``.

    The folder must have been written with ``mem_prefix`` set to its own path, since the
    simulator runs elsewhere.
    """
    folder = pathlib.Path(folder)
    sources = [folder / f for f in (*LIBRARY, f"{SELFTEST}.v", "top.v")]
    p = pins(board)
    build = runner.build(None, name=name, sources=sources,
                         config={"board": board.name, "folder": str(folder), "cfg": cfg.to_dict()})
    limit = 4 * (plan.cycles() + plan.out_words) + 10_000
    case = {"config": cfg.to_dict(), "button": p["button"], "leds": p["leds"], "expect": expect, "limit": limit,
            "load_clock": p["load_clock"], "load_data": p["load_data"], "frames": list(frames),
            "expect_after": expect_after}
    with tempfile.TemporaryDirectory(prefix="board-case-") as tmp:
        path = pathlib.Path(tmp) / "case.json"
        path.write_text(json.dumps(case))
        return runner.run(build, "sim.cocotb_board", extra_env={CASE_ENV: os.fspath(path)})
