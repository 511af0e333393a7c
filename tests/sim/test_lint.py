"""Verilator ``--lint-only -Wall`` on the generated pe, array and engine: no warning outside sim.lint.ALLOWED."""

import pytest

from core.hwconfig import HwConfig
from hw.design import write_design
from sim import lint

SMALL = dict(act_depth=16, wgt_depth=16, par_depth=4, psum_depth=8, out_depth=16)
CONFIGS = {
    "2x3": HwConfig(rows=2, cols=3, max_fan_in=64, **SMALL),
    "3x2-pipelined-2-terms": HwConfig(rows=3, cols=2, abits=3, wbits=3, terms=2, max_fan_in=64, pipeline=True,
                                      **SMALL),
    "4x2-skip-bram-reg": HwConfig(rows=4, cols=2, max_fan_in=64, skip=True, max_skip_left=5, bram_reg=True, **SMALL),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("top", ["pe", "array", "engine"])
def test_generated_verilog_lints_clean(top, name, tmp_path):
    path = write_design(CONFIGS[name], tmp_path, top=top)
    assert lint.lint_all(path, top), "Verilator reported nothing at all: is -Wall reaching it?"
    problems = lint.lint(path, top)
    assert not problems, f"{top} ({name}): Verilator warnings outside sim.lint.ALLOWED:\n" + "\n".join(
        f"  {code}: {message}" for code, message in problems[:20])


BAD = """\
module bad(input clk, input en, input d, output reg q, output reg l);
  always @* if (en) l = d;
  always @(posedge clk) q = d;
endmodule
"""


def test_a_latch_and_a_blocking_register_are_reported(tmp_path, capsys):
    path = tmp_path / "bad.v"
    path.write_text(BAD)
    assert sorted(code for code, _ in lint.lint(path, "bad")) == ["BLKSEQ", "LATCH"]
    assert lint.main([str(path), "--top", "bad"]) == 1
    out = capsys.readouterr().out
    assert "LATCH: " in out and "bad.v:2:" in out


def test_cli_exits_0_when_clean(tmp_path, capsys):
    path = write_design(CONFIGS["2x3"], tmp_path, top="pe")
    assert lint.main([str(path), "--top", "pe"]) == 0
    assert "0 warning(s) that matter" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["missing.v", "--top", "pe"], "no Verilog file"),
    (["pe.v", "--top", "nothere"], "cannot lint"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    write_design(CONFIGS["2x3"], tmp_path, top="pe")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        lint.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
