"""The activation buffer (:class:`hw.network.ActBuffer`) on Verilator: random bank-masked writes
and reads against a per-bank model, as the UP5K's SPRAM cells (yosys's models; banks padded
to nibbles, words to cells) and, on the same inputs, as a plain Amaranth memory."""

import json
import os

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from hw import yosys
from hw.network import ActBuffer, spram_layout
from sim import runner
from sim.tb import CASE_ENV

# (width, banks, depth) -> spram_layout's (padded bank bits, cells)
SHAPES = {
    (32, 2, 64): (16, 2),  # no padding
    (24, 2, 50): (12, 2),  # 12-bit banks, the second straddling the two cells; 8 bits of padding on top
    (12, 2, 40): (8, 1),   # 6-bit banks padded to 8
    (8, 1, 16): (8, 1),    # one bank, the cell's upper byte unused
    (36, 4, 30): (12, 3),  # 9-bit banks padded to 12
}


class ActBufferPair(wiring.Component):
    """An SPRAM ActBuffer (``r_data``) and a plain-memory one (``r_data_mem``) on the same inputs:
    one Verilator build runs both on the same stimulus."""

    def __init__(self, *, width, depth, banks):
        self.spram = ActBuffer(width=width, depth=depth, banks=banks, spram=True)
        self.mem = ActBuffer(width=width, depth=depth, banks=banks, spram=False)
        ports = {k: v for k, v in self.spram.signature.members.items() if k != "w_any"}
        super().__init__({**ports, "r_data_mem": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.spram, m.submodules.mem = self.spram, self.mem
        for buf in (self.spram, self.mem):
            m.d.comb += [buf.r_addr.eq(self.r_addr), buf.w_addr.eq(self.w_addr), buf.w_data.eq(self.w_data),
                         buf.w_en.eq(self.w_en), buf.w_any.eq(self.w_en.any())]
        m.d.comb += [self.r_data.eq(self.spram.r_data), self.r_data_mem.eq(self.mem.r_data)]
        return m


@pytest.mark.parametrize("shape", sorted(SHAPES), ids=lambda s: "w{}-b{}-d{}".format(*s))
def test_actbuffer_against_the_model(shape, tmp_path):
    width, banks, depth = shape
    assert spram_layout(width, banks) == SHAPES[shape]
    build = runner.build(
        lambda: ActBufferPair(width=width, depth=depth, banks=banks), name="act_buffer",
        sources=[yosys.ice40_cells_sim()], build_args=runner.ICE40_CELLS_ARGS["verilator"],
        config={"design": "act_buffer_pair", "width": width, "banks": banks, "depth": depth})
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"width": width, "banks": banks, "depth": depth, "seed": width * 1000 + depth,
                                "ops": 800}))
    runner.run(build, "sim.cocotb_actbuffer", extra_env={CASE_ENV: os.fspath(case)})
