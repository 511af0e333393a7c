"""The processing element on Verilator (cocotb): every weight code at the corners, and stalls."""

import pytest

from core.hwconfig import HwConfig
from sim.simulate import simulate

CONFIGS = {
    "w4-t1": HwConfig(rows=1, cols=1, abits=4, wbits=4, terms=1, max_fan_in=16),
    "w5-t2-pipelined": HwConfig(rows=1, cols=1, abits=8, wbits=5, terms=2, max_fan_in=64, pipeline=True),
    "ternary-a1": HwConfig(rows=1, cols=1, abits=1, wbits=2, terms=3, max_fan_in=4),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_pe(name):
    # every code up to 256 of them (all of them but for w5-t2's 1024); random activations and sums besides
    simulate(CONFIGS[name], "pe", "sim.cocotb_pe", None, {"seed": 7, "max_codes": 256})


@pytest.mark.slow
def test_pe_every_code_of_the_widest():
    simulate(CONFIGS["w5-t2-pipelined"], "pe", "sim.cocotb_pe", "every_code_at_the_corners",
             {"seed": 8, "max_codes": 1024})
