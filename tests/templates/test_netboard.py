"""The network design's board folder: the top clocks the design from the board's PLL when
given one, the UART's bit time and nextpnr's target follow that clock, and the record says so."""

import re

import pytest

from core.artifact import load_artifact
from core.boards import BOARDS
from core.pll import pll_for
from hw.program import NetworkProgram
from hw.uart import clocks_per_bit
from templates.netboard import DEFAULT_BAUD, write_network_board


@pytest.fixture(scope="module")
def program(trained_runs):
    art = load_artifact(trained_runs.artifact)
    return NetworkProgram.for_board(art.network, BOARDS["icebreaker"])


@pytest.mark.parametrize("board, want, primitive", [("icebreaker", 30, "SB_PLL40_PAD"),
                                                     ("ulx3s-85f", 80, "EHXPLLL")])
def test_the_top_runs_from_the_pll(tmp_path, trained_runs, program, board, want, primitive):
    b = BOARDS[board]
    pll = pll_for(b.family, b.board_clock_mhz, want)
    files = write_network_board(tmp_path, b, program, artifact=trained_runs.artifact, pll=pll)
    top = (tmp_path / "top.v").read_text()
    assert f"{primitive} #(" in top and ".LOCK(pll_lock)" in top and "| ~pll_lock)" in top
    for name, value in pll.params:
        assert f".{name}({chr(34) + value + chr(34) if isinstance(value, str) else value})" in top
    script = (tmp_path / "build.sh").read_text()
    assert f"--freq {pll.out_mhz:.4g}" in script
    assert ("--router router2" in script) == (b.family == "ecp5")
    assert ("DCCA reset_global (.CLKI(rst_q), .CE(1'b1), .CLKO(rst));" in top) == (b.family == "ecp5")
    record = files["record"]
    assert record["clock_mhz"] == pll.out_mhz and record["pll"]["primitive"] == primitive
    assert record["clocks_per_bit"] == clocks_per_bit(pll.out_mhz * 1e6, DEFAULT_BAUD)
    # the UART divider in the design is the PLL clock's, not the oscillator's
    assert f"{record['clocks_per_bit']} clocks a bit" in top


def test_without_a_pll_the_oscillator_clocks_it(tmp_path, trained_runs, program):
    b = BOARDS["icebreaker"]
    files = write_network_board(tmp_path, b, program, artifact=trained_runs.artifact)
    top = (tmp_path / "top.v").read_text()
    assert "PLL" not in re.sub(r"//.*", "", top) and "wire pll_lock = 1'b1;" in top
    assert files["record"]["clock_mhz"] == b.board_clock_mhz and files["record"]["pll"] is None
    assert f"--freq {b.target_mhz:.4g}" in (tmp_path / "build.sh").read_text()
