"""Icarus Verilog as a second simulator: the array's cocotb tests on its RTL and its iCE40 netlist.

Skipped where ``iverilog``/``vvp`` are not on PATH (Debian: ``apt-get install iverilog``).
"""

import json
import shutil

import pytest

from core.errors import UserError
from core.hwconfig import HwConfig
from hw.design import TOPS
from sim import runner
from tests.hw.test_array import random_config
from tests.sim.test_gatelevel import CONFIGS, gate_level_build, run_array

needs_icarus = pytest.mark.skipif(
    shutil.which("iverilog") is None or shutil.which("vvp") is None,
    reason="NOT VERIFIED on Icarus Verilog: iverilog/vvp are not on PATH; install them (Debian: apt-get install "
           "iverilog; .ci/run does so as root) to run the array tests on a second simulator")


def rtl_build(cfg, **kwargs):
    return runner.build(lambda: TOPS["array"](cfg), name="array", config={"top": "array", **cfg.to_dict()},
                        simulator="icarus", **kwargs)


@needs_icarus
@pytest.mark.parametrize("seed", [1, 2])
def test_random_arrays_on_icarus(seed, tmp_path):
    cfg = random_config(seed)  # the shapes and widths tests/hw/test_array.py runs on Verilator
    build = rtl_build(cfg, waves=False)
    assert build.simulator == "icarus" and (build.build_dir / "sim.vvp").is_file()
    run_array(build, cfg, tmp_path, seed=seed)


@needs_icarus
def test_the_gate_level_array_on_icarus(tmp_path):
    cfg = CONFIGS["3x2-pipelined-2-terms"]
    run_array(gate_level_build(cfg, simulator="icarus"), cfg, tmp_path, seed=3)


@needs_icarus
def test_icarus_waves_write_a_trace_per_run(tmp_path):
    cfg = HwConfig(rows=2, cols=2, abits=3, wbits=3, terms=1, max_fan_in=2)
    build = rtl_build(cfg, waves=True, build_root=tmp_path / "builds")
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"seed": 0, "config": cfg.to_dict()}))
    trace = runner.run(build, "sim.cocotb_array", testcase="latency_is_documented",
                       extra_env={"SHIFTNN_CASE": str(case)})
    assert trace is not None and trace.name == "dump.fst" and trace.stat().st_size > 0
    assert trace.parent.parent == build.build_dir / "runs"


def test_without_icarus_the_build_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(UserError, match=r"iverilog and vvp not found on PATH; install Icarus Verilog"):
        rtl_build(HwConfig(rows=2, cols=2, max_fan_in=2), build_root=tmp_path, waves=False)
