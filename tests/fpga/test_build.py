"""fpga.build end to end on a small design (yosys -> nextpnr-ice40 -> icepack), the report's
checks (DSP and multiplier cells, fit, Fmax), and the CLI's refusals."""

import json
import shutil

import pytest

from core.boards import BOARDS
from fpga.build import main
from fpga.flow import KEPT, auto_clock, build
from fpga.report import build_report, markdown

SMALL = dict(rows=2, cols=2, abits=4, wbits=4, terms=1, max_fan_in=64, act_depth=64, wgt_depth=64,
             par_depth=4, psum_depth=64, out_depth=64)


@pytest.fixture(scope="module")
def ice40_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fpga") / "icebreaker"
    report = build("icebreaker", out=folder, given=SMALL)
    return folder, report


def test_small_ice40_bitstream_and_report(ice40_build):
    folder, report = ice40_build
    assert report["passed"], report["failures"]
    assert (folder / "top.bin").stat().st_size > 100_000  # a UP5K image is ~104 kB
    rows = {r["resource"]: r for r in report["resources"]}
    assert 0 < rows["logic cells"]["used"] < rows["logic cells"]["available"] == 5280
    assert rows["DSP blocks"]["used"] == 0 and report["multiplier_cells"] == 0
    assert rows["block RAM (4 kbit)"]["used"] > 0  # the memories are block RAM, not logic
    assert min(report["fmax_mhz"].values()) > report["board_clock_mhz"]
    assert report["critical_path"]["ns"] > 0
    for log in ("yosys.log", "nextpnr.log", "build.out"):
        assert (folder / log).stat().st_size > 0
    assert json.loads((folder / "report.json").read_text())["passed"]
    assert "| logic cells |" in (folder / "report.md").read_text()


def test_build_script_reruns_without_python(ice40_build, tmp_path):
    import subprocess

    from fpga.flow import tool_env

    folder, _ = ice40_build
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "top.bin").unlink()
    subprocess.run(["sh", "build.sh"], cwd=copy, env=tool_env(), check=True, capture_output=True)
    assert (copy / "top.bin").read_bytes() == (folder / "top.bin").read_bytes()  # same seed, same image


def _fake_build(tmp_path, cells, util, fmax):
    (tmp_path / "yosys_stat.json").write_text(json.dumps({"design": {"num_cells_by_type": cells}}))
    (tmp_path / "nextpnr_report.json").write_text(json.dumps({
        "utilization": {k: {"used": u, "available": a} for k, (u, a) in util.items()},
        "fmax": {"clk": {"achieved": fmax, "constraint": 40.0}}, "critical_paths": []}))
    record = {"config": {"rows": 2, "cols": 2, "abits": 4, "wbits": 4, "terms": 1}, "derived": {"acc_bits": 12},
              "layer": "l", "sample": 0, "cycles": 10, "expected_checksum": 0}
    return build_report(tmp_path, BOARDS["icebreaker"], target_mhz=12.0, record=record)


def test_report_fails_on_dsp_multiplier_overflow_and_fmax(tmp_path):
    good = _fake_build(tmp_path, {"SB_LUT4": 10}, {"ICESTORM_LC": (10, 5280), "ICESTORM_DSP": (0, 8)}, 50.0)
    assert good["passed"] and good["meets_goal"]
    dsp = _fake_build(tmp_path, {"SB_MAC16": 1}, {"ICESTORM_LC": (10, 5280), "ICESTORM_DSP": (1, 8)}, 50.0)
    assert not dsp["passed"] and any("DSP" in f for f in dsp["failures"])
    assert any("multiplier" in f for f in dsp["failures"])
    full = _fake_build(tmp_path, {}, {"ICESTORM_LC": (6000, 5280)}, 50.0)
    assert any("logic cells: 6000 used, the device has 5280" == f for f in full["failures"])
    slow = _fake_build(tmp_path, {}, {"ICESTORM_LC": (10, 5280)}, 11.0)
    assert any("Fmax 11.00 MHz is below the 12 MHz target" == f for f in slow["failures"])
    assert "FAIL" in markdown(slow)


def test_cli_refusals(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--board", "icebreaker", "--artifact", str(tmp_path / "missing.npz"), "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.npz" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["--board", "de10-nano"])
    assert exc.value.code == 2


@pytest.mark.parametrize("misses, fmax, kept, n_builds", [
    ((), (40.0, 39.0, 36.0), 1, 2),  # the PLL build meets its clock, the next PLL would be no faster
    ((1,), (40.0, 39.0, 36.0), 2, 3),  # the first PLL build misses, a lower one meets it
    ((1, 2), (40.0, 39.0, 36.0), 0, 3),  # both miss: back to the oscillator's build
    ((), (40.0, 45.0, 44.0), 2, 3),  # placed faster than asked: a faster PLL, and it meets it
    ((2,), (40.0, 45.0, 44.0), 1, 3),  # ... and it misses: back to the first PLL build
])
def test_auto_clock_keeps_the_fastest_build_that_met_its_clock(ice40_build, tmp_path, misses, fmax, kept, n_builds):
    """--clock auto over stand-in builds (the small build's report, its Fmax replaced by
    ``fmax`` per try, or by its target less 1 MHz in the tries ``misses``): the folder ends
    with the files of the fastest build that met its clock."""
    board = BOARDS["icebreaker"]

    def network(pll):
        n = len(list(tmp_path.glob("try*")))
        target = pll.out_mhz if pll else board.board_clock_mhz
        placed = target - 1 if n in misses else fmax[n]
        (tmp_path / f"try{n}").write_text("")
        (tmp_path / "top.bit").write_text(f"build {n}")
        return dict(ice40_build[1], fmax_mhz={"clk": placed}, passed=placed >= target, target_mhz=target)

    report = auto_clock(board, tmp_path, network)
    builds = report["clock"]["builds"]
    assert len(builds) == n_builds and report["passed"] and report["clock"]["kept"] == kept
    assert (tmp_path / "top.bit").read_text() == f"build {kept}"
    assert not (tmp_path / KEPT).exists()
    assert json.loads((tmp_path / "report.json").read_text())["clock"]["kept"] == kept
