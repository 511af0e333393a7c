"""``python -m sim.layers``: the whole check from the command line, and its one-line refusals."""

import pytest

from sim.layers import main


def test_runs_every_layer_and_says_so(trained_runs, tmp_path, capsys):
    main([str(trained_runs.artifact), "--rows", "4", "--cols", "4", "--psum-depth", "32", "--rtl", str(tmp_path)])
    out = capsys.readouterr().out
    assert "ok: 3 layer runs" in out and "0 mismatches" in out
    assert (tmp_path / "engine.v").is_file() and (tmp_path / "hwconfig.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["missing.npz"], "missing.npz does not exist"),
    (["ART", "--samples", "0"], "--samples 0 is out of range"),
    (["ART", "--max-fan-in", "4"], "regenerate with --max-fan-in"),
])
def test_bad_requests_exit_2(argv, message, trained_runs, tmp_path, capsys):
    argv = [str(trained_runs.artifact) if a == "ART" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv + ["--rtl", str(tmp_path)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
